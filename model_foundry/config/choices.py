"""The closed lists of choices, written once: the schema validates against them, the CLI offers
them, and the packages that implement them build their registries from them (a test checks that
each registry has exactly these names). Architectures and tasks are open registries instead (a
new one is one new file): `model_foundry.models` and `model_foundry.tasks` hold them.
"""
from __future__ import annotations

TOKENIZER_TYPES = ("char", "wordpiece", "bpe", "unigram")
ATTENTION_TYPES = ("causal", "bidirectional")
POSITIONAL_ENCODINGS = ("learned", "rotary", "sinusoidal")
NORM_POSITIONS = ("pre", "post")
NORMS = ("layernorm", "rmsnorm")
RECIPES = ("classic", "modern")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu", "relu2")
POOLERS = ("cls", "first", "last", "mean", "max", "attention", "gem")
HEADS = ("linear", "sequential")
CRITERIA = ("cross_entropy", "bce", "mse", "bitempered")


def default_pooler(attention_type: str) -> str:
    """`last` for a causal backbone (only its last position has read the whole input), else `cls`."""
    return "last" if attention_type == "causal" else "cls"
