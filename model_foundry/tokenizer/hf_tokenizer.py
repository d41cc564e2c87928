"""`HFTokenizer`: a Hugging Face (fast) tokenizer behind the `FoundryTokenizer` interface the tasks use.

A run on an `hf` backbone uses the model's own tokenizer, so the ids mean what the pretrained
embeddings learned. Roles missing from a tokenizer fall back to their twins: decoders have no
cls / sep, so `cls` is `bos` and `sep` is `eos`; encoders have no bos / eos, so the reverse.

Decoders without a pad token (GPT-2, Llama) pad with their eos token. No new token is added, so
the embedding matrix keeps its size and no untrained row appears; padding is told apart by the
attention mask, never by the id, so the last-token pooler still finds the last real token.

`encode_for_model` uses the tokenizer's own template (BERT's `[CLS] a [SEP]`, Llama's `<s> a`,
GPT-2's bare `a`) and appends eos when the template ends without a separator: the classifier of a
decoder then reads a fixed end-of-text token, and the tasks find where the first text ends.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from model_foundry.errors import UserError
from model_foundry.optional_dependencies import remote_code_kwargs, require_transformers

CONFIG_FILE = "tokenizer_config.json"


class HFTokenizer:
    """Encode and decode with a `transformers` fast tokenizer; ids of the special tokens by role."""

    kind = "hf"

    def __init__(self, hf_tokenizer):
        if not hf_tokenizer.is_fast:
            raise UserError(f"The tokenizer of {hf_tokenizer.name_or_path} has no fast (tokenizers) version; "
                            "Model Foundry needs one for character offsets.")
        if hf_tokenizer.pad_token is None:
            hf_tokenizer.pad_token = hf_tokenizer.eos_token or hf_tokenizer.sep_token
        self.hf = hf_tokenizer
        self.backend = hf_tokenizer.backend_tokenizer
        roles = {role: getattr(hf_tokenizer, f"{role}_token") for role in ("pad", "unk", "cls", "sep", "mask",
                                                                           "bos", "eos")}
        roles["cls"] = roles["cls"] or roles["bos"]
        roles["sep"] = roles["sep"] or roles["eos"]
        roles["bos"] = roles["bos"] or roles["cls"]
        roles["eos"] = roles["eos"] or roles["sep"]
        for role, token in roles.items():
            setattr(self, f"{role}_token", token)
            setattr(self, f"{role}_id", hf_tokenizer.convert_tokens_to_ids(token) if token is not None else None)
        if self.sep_id is None or self.pad_id is None:
            raise UserError(f"The tokenizer of {hf_tokenizer.name_or_path} has neither an eos nor a sep token, so "
                            "texts cannot be ended or padded; add one to it (tokenizer.add_special_tokens).")
        self.appends_eos = self.hf("a")["input_ids"][-1] != self.sep_id

    # ----- loading and saving -------------------------------------------------------------

    @classmethod
    def load(cls, name_or_path: str | Path, trust_remote_code: bool = False) -> HFTokenizer:
        """The tokenizer of a Hugging Face model directory (or hub name, when online)."""
        transformers = require_transformers()
        try:
            hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(name_or_path),
                                                                      **remote_code_kwargs(trust_remote_code))
        except (OSError, ValueError) as exc:
            raise UserError(f"Cannot load a Hugging Face tokenizer from {name_or_path}: {exc}") from None
        return cls(hf_tokenizer)

    def save(self, directory: str | Path) -> Path:
        """`save_pretrained` into `directory` (tokenizer.json, tokenizer_config.json, ...)."""
        directory = Path(directory)
        self.hf.save_pretrained(str(directory))
        return directory / "tokenizer.json"

    # ----- vocabulary ---------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer can produce, added tokens included."""
        return len(self.hf)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(self.hf.all_special_ids)

    @property
    def special_tokens_map(self) -> dict[str, str]:
        roles = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")
        return {f"{role}_token": getattr(self, f"{role}_token") for role in roles
                if getattr(self, f"{role}_token") is not None}

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

    # ----- encoding and decoding ----------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """The ids of `text` alone, no special tokens."""
        return self.hf.encode(text, add_special_tokens=False)

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """The ids of `text` (no special tokens) and each token's (start, end) character span."""
        encoded = self.hf(text, add_special_tokens=False, return_offsets_mapping=True)
        return encoded["input_ids"], [tuple(span) for span in encoded["offset_mapping"]]

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return self.hf(list(texts), add_special_tokens=False)["input_ids"]

    def encode_for_model(self, text: str, pair: str | None = None, max_length: int | None = None,
                         add_special_tokens: bool = True) -> list[int]:
        """Ids in the tokenizer's own template (+ eos for decoders), cut longest-first to `max_length`."""
        appended = [self.eos_id] if add_special_tokens and self.appends_eos else []
        limit = None if max_length is None else max_length - len(appended)
        if limit is not None and limit < 1 + (pair is not None) + self.hf.num_special_tokens_to_add(pair is not None):
            raise UserError(f"max_length {max_length} leaves no room for text after the special tokens; "
                            "raise tokenizer.max_length.")
        ids = self.hf(text, pair, add_special_tokens=add_special_tokens, truncation=limit is not None,
                      max_length=limit)["input_ids"]
        return ids + appended

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def __repr__(self) -> str:
        return f"HFTokenizer({self.hf.name_or_path!r}, vocab_size={self.vocab_size})"


def is_hf_tokenizer_dir(path: str | Path) -> bool:
    """Whether `path` is a directory saved by `transformers` (it has tokenizer_config.json)."""
    return (Path(path) / CONFIG_FILE).is_file()
