"""The `foundry` command end to end on tiny settings, and its exit codes for users' mistakes."""
from __future__ import annotations

import json

import pytest
import yaml

from model_foundry.cli.main import main
from tests.conftest import says


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_tokenizer_new_train_runs_plot_eval(tiny_corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "tokenizer", "train", "--type", "bpe", "--vocab-size", "300",
                       "--input", str(tiny_corpus), "--out", "tok")
    assert code == 0 and (tmp_path / "tok" / "tokenizer.json").is_file()

    code, out, _ = run(capsys, "new", "pretraining", "demo", "--arch", "gpt")
    assert code == 0
    config_path = tmp_path / "experiments" / "pretraining" / "demo" / "config.yaml"
    raw = yaml.safe_load(config_path.read_text())
    raw["data"]["train"]["path"] = str(tiny_corpus)
    raw["tokenizer"]["path"] = str(tmp_path / "tok")
    config_path.write_text(yaml.safe_dump(raw))
    code, out, err = run(capsys, "train", "-n", "demo", "-m", "pretraining", "--set", "training.max_steps=12",
                         "--set", "model.n_layer=1", "--set", "model.n_embd=32", "--set", "model.block_size=16",
                         "--set", "training.batch_size=4", "--set", "training.eval_interval=6",
                         "--set", "training.device=cpu")
    assert code == 0, err
    run_dir = tmp_path / "experiments" / "pretraining" / "demo"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["run"]["steps"] == 12
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["max_steps"] == 2000, \
        "the user's config.yaml is never rewritten"
    assert yaml.safe_load((run_dir / "resolved_config.yaml").read_text())["model"]["n_layer"] == 1
    assert "demo" in out and "val loss" in out

    code, out, _ = run(capsys, "runs")
    assert code == 0 and "pretraining/demo" in out and "causal_lm" in out
    code, out, _ = run(capsys, "plot", "demo", "--out", "curves.png")
    assert code == 0 and (tmp_path / "curves.png").stat().st_size > 1000
    code, out, _ = run(capsys, "eval", "demo", "--split", "val")
    metrics = json.loads(out)
    assert code == 0 and metrics["loss"] == pytest.approx(results["val"]["loss"], rel=1e-5)

    code, _, err = run(capsys, "new", "-p", "demo2", "-rp", "demo")
    assert code == 0
    cloned = yaml.safe_load((tmp_path / "experiments" / "pretraining" / "demo2" / "config.yaml").read_text())
    assert cloned["training"]["resume_from"] == str(run_dir / "checkpoints" / "last")


def test_user_mistakes_exit_2_with_one_paragraph(tiny_corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  batch_sise: 4\n")
    code, _, err = run(capsys, "train", str(bad))
    assert code == 2 and says(err, "batch_sise") and says(err, "batch_size") and "Traceback" not in err
    code, _, err = run(capsys, "train", "nonexistent")
    assert code == 2 and says(err, "No experiment named 'nonexistent'")
    code, _, err = run(capsys, "tokenizer", "train", "--type", "bpe", "--vocab-size", "100",
                       "--input", str(tmp_path / "missing.txt"), "--out", "tok")
    assert code == 2 and says(err, str(tmp_path / "missing.txt"))
    code, _, err = run(capsys, "runs", str(tmp_path / "empty"))
    assert code == 2 and says(err, "No finished runs")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--mode", "sideways"])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_pretrain_finetune_eval_predict(tmp_path, monkeypatch, capsys):
    """The finetuning path a user types: new finetuning --from, train --kind finetuning, eval, predict."""
    monkeypatch.chdir(tmp_path)
    good, bad = ["a good film", "great fun", "i loved it"], ["a bad film", "dull fun", "i hated it"]
    (tmp_path / "corpus.txt").write_text("\n".join((good + bad) * 40) + "\n")
    for split, copies in (("train", 20), ("dev", 3), ("test", 3)):
        rows = [f"{t}\t1" for t in good] + [f"{t}\t0" for t in bad]
        (tmp_path / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows * copies) + "\n")
    assert run(capsys, "new", "pretraining", "pre", "--arch", "bert")[0] == 0
    tiny = ["--set", "model.n_layer=1", "--set", "model.n_embd=32", "--set", "model.n_head=2", "--set", "model.block_size=16",
            "--set", "training.batch_size=8", "--set", "training.device=cpu", "--set", "tokenizer.type=char",
            "--set", "model.preset=null", "--set", "training.save_interval=null"]
    code, _, err = run(capsys, "train", "pre", "--set", f"data.train.path={tmp_path / 'corpus.txt'}",
                       "--set", "training.max_steps=10", "--set", "training.eval_interval=5", *tiny)
    assert code == 0, err

    code, out, _ = run(capsys, "new", "finetuning", "sentiment", "--from", "pre", "--task", "sequence_classification")
    assert code == 0
    config_path = tmp_path / "experiments" / "finetuning" / "sentiment" / "config.yaml"
    raw = yaml.safe_load(config_path.read_text())
    assert raw["transfer"]["init_from_checkpoint"].endswith("experiments/pretraining/pre")
    assert raw["model"]["architecture"] == "bert" and raw["tokenizer"]["path"].endswith("pre/tokenizer")
    raw["data"] = {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv", "text_column": "sentence"}
    config_path.write_text(yaml.safe_dump(raw))
    code, out, err = run(capsys, "train", "sentiment", "--kind", "finetuning", "--set", "training.epochs=null",
                         "--set", "training.max_steps=40", "--set", "training.learning_rate=3e-3",
                         "--set", "training.eval_interval=20", "--set", "training.device=cpu")
    assert code == 0, err
    assert "accuracy" in out

    code, out, _ = run(capsys, "eval", "sentiment", "--split", "test")
    metrics = json.loads(out)
    assert code == 0 and metrics["split"] == "test" and metrics["accuracy"] == 1.0
    assert metrics["confusion_matrix"]["labels"] == ["0", "1"]

    code, out, _ = run(capsys, "predict", "sentiment", "--input", "test.tsv", "--output", "preds.jsonl")
    assert code == 0
    predictions = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert len(predictions) == 18 and set(predictions[0]) == {"sentence", "label", "probabilities"}
    assert predictions[0]["sentence"] == "a good film" and predictions[0]["label"] == "1"
    assert sum(predictions[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    code, out, _ = run(capsys, "predict", "sentiment", "--input", "test.tsv", "--output", "preds.csv")
    header = (tmp_path / "preds.csv").read_text().splitlines()[0]
    assert code == 0 and header == "sentence,label,probabilities"
    code, out, _ = run(capsys, "predict", "sentiment", "--text", "i hated it")
    assert code == 0 and json.loads(out)["label"] == "0"

    code, _, err = run(capsys, "predict", "pre", "--text", "x")
    assert code == 2 and says(err, "finetuning runs")


def test_an_error_keeps_long_and_hyphenated_paths_whole(tmp_path, capsys):
    """The paragraph wraps at spaces only: a path a user copies from it is one unbroken string."""
    deep = tmp_path / ("a-very-long-directory-name-with-hyphens" * 3) / "no-such-config.yaml"
    assert main(["train", str(deep)]) == 2
    err = capsys.readouterr().err
    assert any(str(deep) in line for line in err.splitlines()), err
