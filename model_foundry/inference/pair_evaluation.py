"""`foundry score` and `foundry eval --minimal-pairs`: a run's scores for texts, and its accuracy on
minimal pairs (BLiMP's JSONL format: `sentence_good` and `sentence_bad` per row).

A directory of pairs means every `*.jsonl` in it; the word `builtin` means the English pairs that
ship with the package (`model_foundry/inference/minimal_pairs/`, written by
`benchmarks/minimal_pairs/make_pairs.py`). Overall accuracy is the mean over all pairs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model_foundry.data.sources import iter_jsonl_rows
from model_foundry.errors import UserError
from model_foundry.inference.loading import load_model, load_tokenizer
from model_foundry.inference.scoring import TextScore, judge_pairs, score_texts
from model_foundry.training.precision import resolve_device

BUILTIN = "builtin"
BUILTIN_DIRECTORY = Path(__file__).resolve().parent / "minimal_pairs"
QUICKSTART_SUBSET = BUILTIN_DIRECTORY / "quickstart" / "agreement.jsonl"  # what `foundry quickstart` judges


@dataclass
class PairFile:
    name: str
    pairs: list[tuple[str, str]]


def pair_files(paths: list[str], good_field: str = "sentence_good", bad_field: str = "sentence_bad") -> list[PairFile]:
    """The pair files that `paths` name (files, directories of `*.jsonl`, or `builtin`), each read whole."""
    files: list[Path] = []
    for spec in paths:
        path = BUILTIN_DIRECTORY if spec == BUILTIN else Path(spec)
        if path.is_dir():
            found = sorted(path.glob("*.jsonl"))
            if not found:
                raise UserError(f"--minimal-pairs {spec}: the directory holds no *.jsonl files.")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"--minimal-pairs {spec}: no such file or directory.")
    return [PairFile(path.stem, read_pairs(path, good_field, bad_field)) for path in files]


def read_pairs(path: Path, good_field: str, bad_field: str) -> list[tuple[str, str]]:
    """(good, bad) sentences of a JSONL file; a bad row is an error naming the file, the line and the field."""
    pairs = []
    for where, row in iter_jsonl_rows(path, good_field):
        missing = [key for key in (good_field, bad_field) if not isinstance(row.get(key), str)]
        if missing:
            raise UserError(f"{where}: no text field {missing[0]!r}. Each row needs {good_field!r} and "
                            f"{bad_field!r} (other names: --good-field / --bad-field).")
        pairs.append((row[good_field], row[bad_field]))
    if not pairs:
        raise UserError(f"{path} holds no minimal pairs.")
    return pairs


def minimal_pairs_report(run: str | Path, paths: list[str], objective: str | None = None,
                         good_field: str = "sentence_good", bad_field: str = "sentence_bad",
                         checkpoint: str = "best", batch_size: int = 64) -> dict:
    """`{"overall": accuracy over all pairs, "files": {name: accuracy}, "pairs": n, "model": run}`."""
    files = pair_files(paths, good_field, bad_field)
    model = load_model(run, checkpoint).to(resolve_device("auto"))
    tokenizer = load_tokenizer(run)
    all_pairs = [pair for file in files for pair in file.pairs]
    results = judge_pairs(model, tokenizer, all_pairs, objective, batch_size)
    accuracies, start = {}, 0
    for file in files:
        chunk = results[start:start + len(file.pairs)]
        accuracies[file.name] = sum(result.correct for result in chunk) / len(chunk)
        start += len(file.pairs)
    overall = sum(result.correct for result in results) / len(results)
    return {"overall": overall, "files": accuracies, "pairs": len(results), "model": str(run)}


def score_run(run: str | Path, texts: list[str], objective: str | None = None, checkpoint: str = "best",
              batch_size: int = 64) -> list[TextScore]:
    """The log-likelihood of each text under a trained run's language model."""
    model = load_model(run, checkpoint).to(resolve_device("auto"))
    return score_texts(model, load_tokenizer(run), texts, objective, batch_size)


def texts_of(path: Path) -> list[str]:
    """One text per non-empty line of a UTF-8 file."""
    if not path.is_file():
        raise UserError(f"--input {path}: no such file.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"--input {path} is not UTF-8 text (byte offset {exc.start}); convert it, e.g. with "
                        "iconv -t UTF-8.") from None
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise UserError(f"--input {path} has no text to score (one text per line).")
    return texts
