"""Train a tokenizer of any kind on text files or on a stream of texts.

Each kind is a Hugging Face `tokenizers` pipeline (normalizer -> pre-tokenizer -> model ->
decoder) plus the trainer that fills its vocabulary. Files and texts are streamed to the trainer
in pieces of at most TRAIN_PIECE_CHARS characters, a longer line or text cut where the kind's
pre-tokenizer gives the same words as for the whole (`long_lines`), so neither a large corpus nor
a long line is ever held in memory whole. (The trainer's own file reader takes whole lines: a
19 MB line cost gigabytes.)

What decoding gives back:
- char and bpe: exactly the input text (bpe for any text at all, char for text made of
  characters seen in training).
- unigram: the input text, except that a leading space is dropped (SentencePiece's word-start
  marker cannot tell it apart from the marker it adds itself) and unseen characters become `<unk>`.
- wordpiece: the words and punctuation, with whitespace normalised to single spaces (BERT-style).
With `lowercase`, each kind gives back `text.lower()` in the same way: only cased letters change,
accents and combining marks (Hindi vowel signs, Vietnamese tone marks) are kept.

Char and bpe training is deterministic. The wordpiece and unigram trainers of `tokenizers` break
ties in hash-map order (huggingface/tokenizers#1794), so retraining on the same text may change a
few rare pieces; that is why a run keeps the tokenizer.json it was trained with.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors,
                        trainers)

from model_foundry.tokenizer.long_lines import cut_text, read_line_pieces
from model_foundry.errors import UserError
from model_foundry.tokenizer.foundry_tokenizer import FoundryTokenizer
from model_foundry.tokenizer.kinds import SPECIALS_BY_KIND, SpecialTokens, check_kind
from model_foundry.tokenizer.utf8 import check_utf8

BYTE_ALPHABET_SIZE = 256
DEFAULT_MIN_FREQUENCY = 2
# The longest text the trainer is handed at once. Its pre-tokenisation of one text costs a few
# hundred bytes per character and the Python binding buffers a few hundred texts, so this bounds
# training memory whatever the line lengths; pieces far shorter only add per-call overhead.
TRAIN_PIECE_CHARS = 1 << 16
# Kinds whose trainer has no use for min_frequency, and why; a value other than the default is
# reported rather than silently dropped.
MIN_FREQUENCY_UNUSED = {
    "char": "it keeps every character it sees (only vocab_size caps it)",
    "unigram": "it prunes pieces by likelihood, not by count, and keeps every character it sees",
}

Builder = Callable[[int, int, bool, list[AddedToken]], tuple[Tokenizer, trainers.Trainer]]


def train_tokenizer(kind: str, vocab_size: int, files: list[Path | str] | Path | str | None = None,
                    texts: Iterable[str] | None = None, *, min_frequency: int = DEFAULT_MIN_FREQUENCY,
                    lowercase: bool = False, show_progress: bool = False) -> FoundryTokenizer:
    """Train a `kind` tokenizer of at most `vocab_size` tokens (special tokens included).

    Give exactly one of `files` (text files) or `texts` (any iterable, a generator is streamed).
    `min_frequency` is the fewest occurrences a wordpiece or bpe merge needs; single characters are
    always kept whatever it is. Char and unigram have no use for it and say so on stderr.
    """
    check_kind(kind)
    if (files is None) == (texts is None):
        raise UserError("train_tokenizer needs exactly one source of text: files=[...] or texts=...")
    paths = checked_paths(files) if files is not None else None
    check_vocab_size(kind, vocab_size)
    warn_if_min_frequency_unused(kind, min_frequency)
    specials = SPECIALS_BY_KIND[kind]
    backend, trainer = BUILDERS[kind](vocab_size, min_frequency, lowercase, special_added_tokens(specials))
    trainer.show_progress = show_progress
    with explained_training_errors(kind, vocab_size):
        stream = TextStream(file_pieces(paths, TRAIN_PIECE_CHARS) if paths is not None
                            else text_pieces(texts, TRAIN_PIECE_CHARS))
        backend.train_from_iterator(stream, trainer)
        if stream.empty and paths is None:
            raise UserError(f"The texts given to train the {kind} tokenizer are all empty; "
                            "there is nothing to learn a vocabulary from.")
    backend.post_processor = model_input_template(backend, specials)
    return FoundryTokenizer(backend, kind)


def checked_paths(files: list[Path | str] | Path | str) -> list[Path]:
    """The training files as paths, each an existing UTF-8 file, not all empty (a lone path is accepted too)."""
    paths = [Path(files)] if isinstance(files, (str, Path)) else [Path(f) for f in files]
    if not paths:
        raise UserError("No training files were given for the tokenizer; pass at least one text file.")
    for path in paths:
        if not path.exists():
            raise UserError(f"Tokenizer training file {path} does not exist; check the path "
                            "(relative paths start from the working directory).")
        if not path.is_file():
            raise UserError(f"Tokenizer training file {path} is not a regular file; give text files, "
                            "not directories.")
    if all(path.stat().st_size == 0 for path in paths):
        raise UserError(f"The tokenizer training files are all empty: {', '.join(map(str, paths))}.")
    for path in paths:
        check_utf8(path)
    return paths


def check_vocab_size(kind: str, vocab_size: int) -> None:
    """Refuse a vocabulary too small to hold the kind's fixed tokens plus something learned."""
    fixed = len(SPECIALS_BY_KIND[kind].in_id_order())
    needed, why = fixed + 1, f"{fixed} special tokens and at least one learned token"
    if kind == "bpe":
        needed = fixed + BYTE_ALPHABET_SIZE
        why = f"{fixed} special tokens and the {BYTE_ALPHABET_SIZE} byte tokens"
    if vocab_size < needed:
        raise UserError(f"tokenizer.vocab_size (--vocab-size) {vocab_size} is too small for a {kind} tokenizer: "
                        f"it needs at least {needed} ({why}).")


def warn_if_min_frequency_unused(kind: str, min_frequency: int) -> None:
    """One stderr line when a min_frequency was set for a kind that cannot honour it, so the
    setting is not silently dropped (the default stays quiet: nobody asked for it)."""
    if kind in MIN_FREQUENCY_UNUSED and min_frequency != DEFAULT_MIN_FREQUENCY:
        print(f"warning: tokenizer.min_frequency ({min_frequency}) has no effect on a {kind} tokenizer: "
              f"{MIN_FREQUENCY_UNUSED[kind]}.", file=sys.stderr)


@contextmanager
def explained_training_errors(kind: str, vocab_size: int) -> Iterator[None]:
    """Turn the trainer's one user-caused failure (a unigram vocabulary smaller than the corpus's
    alphabet) into a UserError; anything else is a real bug and propagates unchanged."""
    try:
        yield
    except Exception as error:  # `tokenizers` raises plain Exception, so its message tells the cause
        if "not large enough" not in str(error):
            raise
        raise UserError(f"tokenizer.vocab_size {vocab_size} is too small for a {kind} tokenizer on this corpus: "
                        "it must hold every distinct character of the text plus the special tokens. "
                        "Raise tokenizer.vocab_size.") from error


def file_pieces(paths: list[Path], limit: int) -> Iterator[str]:
    """The lines of the files (newlines kept, as the trainer's own file reader gives them), a line
    longer than `limit` characters in pieces (`read_line_pieces`)."""
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            yield from read_line_pieces(handle, limit)


def text_pieces(texts: Iterable[str], limit: int) -> Iterator[str]:
    """Each text, one longer than `limit` characters in pieces (`cut_text`)."""
    for text in texts:
        yield from cut_text(text, limit)


class TextStream:
    """Hands texts to the trainer one at a time, noting whether any of them held a character."""

    def __init__(self, texts: Iterable[str]):
        self.texts = texts
        self.empty = True

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            if text:
                self.empty = False
            yield text


def special_added_tokens(specials: SpecialTokens) -> list[AddedToken]:
    """The special tokens in id order. `normalized=False` matches them in the raw text, so
    `[MASK]` stays whole even when a lowercasing normalizer runs."""
    return [AddedToken(token, special=True, normalized=False) for token in specials.in_id_order()]


def model_input_template(backend: Tokenizer, specials: SpecialTokens) -> processors.TemplateProcessing:
    """`cls A sep` for one text, `cls A sep B sep` for a pair. Stored in tokenizer.json, so
    `transformers` adds the same special tokens as `FoundryTokenizer.encode_for_model`."""
    cls, sep = specials.cls, specials.sep
    return processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))])


def set_normalizer(backend: Tokenizer, lowercase: bool, *steps: normalizers.Normalizer) -> None:
    """Install the kind's own normalizer `steps`, then `Lowercase()` when asked.

    `Lowercase()` changes cased letters only. Nothing here decomposes (NFD/NFKD) or strips accents,
    so combining marks survive: BERT's uncased normalizer would turn Hindi "मैं हिंदी में" into
    "म हिदी म" and "Đà Nẵng" into "đa nang".
    """
    chain = [*steps, normalizers.Lowercase()] if lowercase else list(steps)
    if chain:
        backend.normalizer = chain[0] if len(chain) == 1 else normalizers.Sequence(chain)


def build_char(vocab_size: int, min_frequency: int, lowercase: bool,
               specials: list[AddedToken]) -> tuple[Tokenizer, trainers.Trainer]:
    """One token per character, the most frequent kept when there are too many.

    The pre-tokenizer cuts the text into single characters (`[\\s\\S]` rather than `.`, which
    would skip newlines), the word-level trainer counts them, and the decoder concatenates, so
    spaces and newlines survive a round trip. Every character counts, however rare.
    """
    backend = Tokenizer(models.WordLevel(unk_token=specials[1].content))
    set_normalizer(backend, lowercase)
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=specials)
    return backend, trainer


def build_wordpiece(vocab_size: int, min_frequency: int, lowercase: bool,
                    specials: list[AddedToken]) -> tuple[Tokenizer, trainers.Trainer]:
    """BERT's tokenizer: split on whitespace and punctuation, word pieces continued with `##`.

    BERT's normalizer only spaces out CJK ideographs here (each becomes a word). Its text cleaning
    is off because it deletes format characters such as the zero-width non-joiner of Persian and
    Hindi, and its accent stripping is off (see `set_normalizer`).
    """
    backend = Tokenizer(models.WordPiece(unk_token=specials[1].content, continuing_subword_prefix="##"))
    set_normalizer(backend, lowercase, normalizers.BertNormalizer(
        clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=specials, continuing_subword_prefix="##")
    return backend, trainer


def build_bpe(vocab_size: int, min_frequency: int, lowercase: bool,
              specials: list[AddedToken]) -> tuple[Tokenizer, trainers.Trainer]:
    """GPT-2's byte-level BPE. All 256 byte tokens are in the vocabulary from the start, so any
    text encodes without `<unk>` and decodes back exactly; no prefix space is added, for the same reason."""
    backend = Tokenizer(models.BPE(unk_token=specials[1].content))
    set_normalizer(backend, lowercase)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    return backend, trainer


def build_unigram(vocab_size: int, min_frequency: int, lowercase: bool,
                  specials: list[AddedToken]) -> tuple[Tokenizer, trainers.Trainer]:
    """SentencePiece's unigram model: spaces become `▁` word-start marks, kept inside the pieces.
    No NFKC normalisation, so text made of seen characters decodes back as it was."""
    backend = Tokenizer(models.Unigram())
    set_normalizer(backend, lowercase)
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      unk_token=specials[1].content)
    return backend, trainer


BUILDERS: dict[str, Builder] = {
    "char": build_char,
    "wordpiece": build_wordpiece,
    "bpe": build_bpe,
    "unigram": build_unigram,
}
