"""`FoundryTokenizer`: a trained `tokenizers.Tokenizer` plus what the rest of the framework needs
to know about it (its kind, its special tokens and their ids), saved as a plain `tokenizer.json`.

Nothing of ours is added to the file: the kind follows from the model type it names and the
special tokens from the kind, so `transformers` reads the same file and we read back files
written by either.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import AddedToken, Encoding, Tokenizer

from model_foundry.errors import UserError
from model_foundry.tokenizer.kinds import KIND_BY_MODEL_TYPE, SPECIALS_BY_KIND, check_kind

FILE_NAME = "tokenizer.json"


class FoundryTokenizer:
    """Encode and decode text; ids of the special tokens by role (`pad_id`, `mask_id`, ...)."""

    def __init__(self, backend: Tokenizer, kind: str):
        self.backend = backend
        self.kind = check_kind(kind)
        self.specials = SPECIALS_BY_KIND[kind]
        self.pad_token, self.pad_id = self.specials.pad, backend.token_to_id(self.specials.pad)
        self.unk_token, self.unk_id = self.specials.unk, backend.token_to_id(self.specials.unk)
        self.cls_token, self.cls_id = self.specials.cls, backend.token_to_id(self.specials.cls)
        self.sep_token, self.sep_id = self.specials.sep, backend.token_to_id(self.specials.sep)
        self.mask_token, self.mask_id = self.specials.mask, backend.token_to_id(self.specials.mask)
        self.bos_token, self.bos_id = self.cls_token, self.cls_id
        self.eos_token, self.eos_id = self.sep_token, self.sep_id

    # ----- loading and saving -------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> FoundryTokenizer:
        """Load `path`: a directory holding tokenizer.json, or the file itself."""
        path = Path(path)
        file = path / FILE_NAME if path.is_dir() else path
        if not file.is_file():
            raise UserError(f"No tokenizer found at {file}; expected a {FILE_NAME} written by "
                            "`foundry tokenizer train` or by a training run (its tokenizer/ folder).")
        model_type = saved_model_type(file)
        try:
            backend = Tokenizer.from_file(str(file))
        except Exception as error:  # `tokenizers` reports every malformed file as a plain Exception
            raise UserError(f"{file} is not a valid tokenizer file: {error}") from error
        kind = KIND_BY_MODEL_TYPE[model_type]
        needed = SPECIALS_BY_KIND[kind].in_id_order()
        missing = [token for token in needed if backend.token_to_id(token) is None]
        if missing:
            raise UserError(f"{file} holds a {model_type} tokenizer without the special tokens "
                            f"{', '.join(missing)} that a {kind} tokenizer of Model Foundry needs; "
                            "retrain it with `foundry tokenizer train`.")
        return cls(backend, kind)

    def save(self, directory: str | Path) -> Path:
        """Write `directory/tokenizer.json` atomically (a reader never sees half a file)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / FILE_NAME
        temporary = directory / f".{FILE_NAME}.{os.getpid()}.tmp"
        try:
            temporary.write_text(self.backend.to_str(pretty=True), encoding="utf-8")
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        return target

    # ----- vocabulary ---------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer can produce, special and added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of all special tokens, those added after training included (never masked or predicted)."""
        return frozenset(i for i, token in self.backend.get_added_tokens_decoder().items() if token.special)

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """Role names as `transformers` spells them, e.g. `PreTrainedTokenizerFast(..., **map)`."""
        roles = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")
        return {f"{role}_token": getattr(self, f"{role}_token") for role in roles}

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

    def add_special_tokens(self, tokens: list[str]) -> int:
        """Add tokens that are never split and keep their ids through save/load; returns how many were new."""
        added = [AddedToken(token, special=True, normalized=False) for token in tokens]
        return self.backend.add_special_tokens(added)

    # ----- encoding and decoding ----------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """The ids of `text` alone, no special tokens (pretraining packs raw ids back to back)."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """The ids of `text` (no special tokens) and each token's (start, end) character span in it.

        Spans index the original text whatever the normalizer did. They may overlap: byte-level
        BPE pieces that split one character's bytes each report that character, and unigram's lone
        `▁` word-start token reports the character after it.
        """
        encoding = self.backend.encode(text, add_special_tokens=False)
        return encoding.ids, encoding.offsets

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        """`encode` for many texts at once, in parallel inside `tokenizers`. The `_fast` variant
        leaves out the character offsets, which halves the time on long texts; the ids are the same."""
        return [encoding.ids for encoding in self.backend.encode_batch_fast(list(texts), add_special_tokens=False)]

    def encode_for_model(self, text: str, pair: str | None = None, max_length: int | None = None,
                         add_special_tokens: bool = True) -> list[int]:
        """Ids for a classifier: `cls text sep`, or `cls text sep pair sep` for a pair.

        With `max_length`, the texts are cut (the longer one first, so a short pair survives
        whole) until the result fits; the special tokens are always kept.
        """
        first = self.backend.encode(text, add_special_tokens=False)
        second = self.backend.encode(pair, add_special_tokens=False) if pair is not None else None
        if max_length is not None:
            n_special = self.backend.num_special_tokens_to_add(pair is not None) if add_special_tokens else 0
            fit_to_length(first, second, max_length - n_special)
        return self.backend.post_process(first, second, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids` (any sequence of ints: a list, a tensor, an array)."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def __repr__(self) -> str:
        specials = " ".join(self.specials.in_id_order())
        return f"FoundryTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, specials='{specials}')"


def saved_model_type(file: Path) -> str:
    """The model type a tokenizer.json names, checked to be one of our four kinds."""
    try:
        model_type = json.loads(file.read_bytes())["model"]["type"]
    except (ValueError, KeyError, TypeError) as error:  # ValueError covers bad JSON and bad UTF-8
        raise UserError(f"{file} is not a valid tokenizer file (expected the JSON that "
                        f"`foundry tokenizer train` writes): {error}") from error
    if model_type not in KIND_BY_MODEL_TYPE:
        raise UserError(f"{file} holds a {model_type!r} tokenizer; Model Foundry reads "
                        f"{', '.join(KIND_BY_MODEL_TYPE)} tokenizers (its char, wordpiece, bpe and "
                        "unigram kinds).")
    return model_type


def fit_to_length(first: Encoding, second: Encoding | None, budget: int) -> None:
    """Truncate the encodings in place to `budget` tokens in all, taking from the longer first."""
    if budget < (1 if second is None else 2):
        raise UserError(f"max_length leaves room for {budget} text token(s) after the special tokens; "
                        "raise tokenizer.max_length so each text keeps at least one token.")
    if second is None:
        first.truncate(budget)
        return
    keep_first, keep_second = longest_first(len(first), len(second), budget)
    first.truncate(keep_first)
    second.truncate(keep_second)


def longest_first(len_first: int, len_second: int, budget: int) -> tuple[int, int]:
    """How many tokens of each text to keep: shorten the longer text down to the shorter, then
    both evenly (the second keeps the odd one)."""
    if len_first + len_second <= budget:
        return len_first, len_second
    shorter = min(len_first, len_second)
    if shorter <= budget // 2:
        return (shorter, budget - shorter) if len_first == shorter else (budget - shorter, shorter)
    return budget // 2, budget - budget // 2
