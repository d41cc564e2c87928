"""Checkpoints at amounts of text seen, for learning curves over the data a model has read:
`checkpoints/tokens_N` (`training.save_at_tokens`) and `checkpoints/words_N` (`training.save_at_words`).

Each is written once, at the first optimizer step at which the run's count reaches or passes N; a
step that passes several amounts writes each as its own checkpoint. `keep_last_n` never deletes
them (it rotates `step_N` alone). The counts are the trainer's counters, saved with every
checkpoint, so a resumed run goes on counting where it stopped and never writes again an amount it
had already reached.

- tokens: the real (non-padding) input tokens of every step's micro-batches over every process
  (`Counters.tokens`, the count behind tokens/s and results.json's `run.tokens`).
- words: `WORD_COUNTING`. Only packed windows of a text corpus know the words they stand for
  (`data.windows`); other training data (a .pt file of ids, finetuning examples, text units) is
  refused, with `save_at_tokens` as the way to go.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch.utils.data import Dataset

from model_foundry.config.schema import TrainingSection
from model_foundry.data.windows import TokenSpanWindows
from model_foundry.errors import UserError
from model_foundry.training.step_state import Counters

WORD_COUNTING = ("words seen = the training windows trained on x the corpus tokens each window stands for x "
                 "(the corpus's whitespace-separated words / its tokens, counted when its token cache was "
                 "built), rounded down")


class TextMilestones:
    """The amounts of `save_at_tokens` and `save_at_words` not reached yet, and how to count words."""

    def __init__(self, tokens: Sequence[int], words: Sequence[int], windows: TokenSpanWindows | None):
        self.tokens_ahead, self.words_ahead = list(tokens), list(words)
        self.counts_words = bool(words)  # save_at_words is set: the run reports its words and how it counts them
        self.windows = windows  # the training windows, where they know their words; else None

    @classmethod
    def of(cls, training: TrainingSection, train: Dataset) -> TextMilestones:
        """The run's milestones; `save_at_words` on training data whose words are not counted is refused."""
        windows = counted_windows(train)
        if training.save_at_words and windows is None:
            raise UserError(
                "training.save_at_words needs the words of the training text, and this run's training data has "
                "none to count: words are counted for pretraining corpora read as text (text, jsonl, csv, tsv, "
                "conllu or conll files, tokenized into the token cache) and cut into packed windows, while a .pt "
                "file holds token ids without their text, and finetuning examples and sentence-level text units "
                "are not windows of a counted corpus. Use training.save_at_tokens (real input tokens trained on) "
                "instead, or pretrain from the text itself.")
        return cls(training.save_at_tokens, training.save_at_words, windows)

    def words_seen(self, counters: Counters) -> int | None:
        """The words the run's training windows stand for so far; None where the data has no word count."""
        return None if self.windows is None else self.windows.words_in(counters.rows)

    def results(self, counters: Counters) -> dict:
        """What results.json's `run` says about words: with `save_at_words`, the words seen and how
        they are counted; else nothing."""
        if not self.counts_words:
            return {}
        return {"words": self.words_seen(counters), "word_counting": WORD_COUNTING}

    def announcement(self) -> str | None:
        """The line a run with `save_at_words` prints when it starts: how it counts words."""
        windows = self.windows
        if not self.counts_words or windows is None:  # (of() refuses save_at_words without counted windows)
            return None
        corpus_tokens = len(windows.tokens)
        return (f"training.save_at_words: {WORD_COUNTING}; here {windows.corpus_words:,} words / "
                f"{corpus_tokens:,} tokens = {windows.corpus_words / corpus_tokens:.4f} words per token, "
                f"{windows.stride} tokens a window.")

    def due(self, counters: Counters) -> list[str]:
        """The checkpoints whose amounts the counts have reached since the last call, in order (each
        is named once: reached amounts are dropped)."""
        names = [f"tokens_{n}" for n in take_reached(self.tokens_ahead, counters.tokens)]
        words = self.words_seen(counters)
        if words is not None:
            names += [f"words_{n}" for n in take_reached(self.words_ahead, words)]
        return names

    def skip_reached(self, counters: Counters) -> None:
        """Drop the amounts a resumed run had reached already: their checkpoints are written."""
        self.due(counters)


def counted_windows(train: Dataset) -> TokenSpanWindows | None:
    """The training data, where it is windows of a corpus whose words were counted; else None."""
    if isinstance(train, TokenSpanWindows) and train.corpus_words is not None:
        return train
    return None


def take_reached(ahead: list[int], count: int) -> list[int]:
    """Remove from `ahead` (increasing) and return the amounts that `count` reaches or passes."""
    reached = [n for n in ahead if n <= count]
    del ahead[:len(reached)]
    return reached
