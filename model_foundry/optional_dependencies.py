"""Optional third-party libraries, imported only when a feature needs them.

This module sits at the bottom of the package (it imports only `model_foundry.errors`), so the
tokenizer and model layers can both use it without importing each other.
"""
from __future__ import annotations

from types import ModuleType

from model_foundry.errors import UserError


def require_transformers() -> ModuleType:
    """The `transformers` module, or a UserError saying how to install it.

    Imported on first use, never at package import, so the core works without the `hf` extra.
    """
    try:
        import transformers
    except ImportError:
        raise UserError("Hugging Face models and tokenizers (model.architecture 'hf') need the Hugging Face "
                        "libraries: pip install 'model-foundry[hf]' (transformers and peft).") from None
    return transformers


def remote_code_kwargs(trust_remote_code: bool) -> dict[str, bool]:
    """`trust_remote_code=True` only when the config asks for it, so the library default (refuse) holds."""
    return {"trust_remote_code": True} if trust_remote_code else {}
