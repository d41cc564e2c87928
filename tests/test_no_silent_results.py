"""Settings that would train or report something wrong without a word either work or say so."""
from __future__ import annotations

import csv

import pytest
import torch
import yaml

from model_foundry.cli.main import main
from model_foundry.models import BaseLanguageModel
from tests.conftest import says


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def write_config(tmp_path, config: dict):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.parametrize("arch, model, key", [
    ("bert", {}, "model.attention_type: bidirectional"),
    ("gpt", {"attention_type": "bidirectional"}, "model.attention_type: bidirectional"),
    ("lstm", {"bidirectional": True, "hidden_size": 32}, "model.bidirectional: true"),
    ("gru", {"bidirectional": True, "hidden_size": 32}, "model.bidirectional: true"),
])
def test_causal_lm_on_a_model_that_sees_both_directions_exits_2(make_config, tmp_path, capsys, arch, model, key):
    config = make_config(arch, model=model, task={"type": "causal_lm"})
    code, err = run_cli(capsys, "train", str(write_config(tmp_path, config)))
    assert code == 2, err
    assert says(err, "task.type causal_lm") and says(err, key) and "Traceback" not in err
    assert not (tmp_path / "experiments" / "pretraining" / f"tiny_{arch}" / "checkpoints").exists()


@pytest.mark.parametrize("arch, task", [("hybrid", "causal_lm"), ("hybrid", "masked_lm")])
def test_single_stack_objectives_on_the_hybrid_exit_2(make_config, tmp_path, capsys, arch, task):
    code, err = run_cli(capsys, "train", str(write_config(tmp_path, make_config(arch, task={"type": task}))))
    assert code == 2 and says(err, f"task.type {task}") and "hybrid" in err


@pytest.mark.slow
def test_a_causal_model_still_trains_causal_lm(make_config, tmp_path, capsys):
    """A unidirectional LSTM is not refused, and what it trains is a causal LM: its loss falls, and the
    saved model's prediction at a position does not change with the tokens after it (a model that
    read them would learn to copy its target and report a loss too good to be true)."""
    config = make_config("lstm", model={"bidirectional": False, "hidden_size": 32}, task={"type": "causal_lm"},
                         training={"max_steps": 20, "eval_interval": 20, "log_interval": 1})
    code, err = run_cli(capsys, "train", str(write_config(tmp_path, config)))
    assert code == 0, err
    run = tmp_path / "experiments" / "pretraining" / "tiny_lstm"
    with open(run / "metrics" / "train.csv", newline="") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert losses[-1] < losses[0] - 0.25, losses  # fp32: 3.49 -> 3.00
    model = BaseLanguageModel.from_pretrained(run / "checkpoints" / "last")
    ids = torch.randint(5, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))
    edited = ids.clone()
    edited[0, 8:] = (edited[0, 8:] + 1) % model.config.vocab_size
    with torch.no_grad():
        assert torch.equal(model(ids).logits[:, :8], model(edited).logits[:, :8])
        assert not torch.equal(model(ids).logits[:, 8:], model(edited).logits[:, 8:])  # the edit does reach it


def sentiment_config(make_config, tmp_path, **data) -> dict:
    rows = [("a good film", 1), ("great fun", 1), ("a bad film", 0), ("dull fun", 0)] * 10
    (tmp_path / "train.tsv").write_text("text\tlabel\n" + "\n".join(f"{t}\t{y}" for t, y in rows) + "\n")
    config = make_config("gpt", task={"type": "sequence_classification"},
                         data={"train": {"path": str(tmp_path / "train.tsv")}, **data},
                         training={"max_steps": 2, "eval_interval": 2})
    config["experiment"]["kind"] = "finetuning"
    return config


@pytest.mark.slow
def test_finetuning_holds_out_val_fraction_only_when_asked(make_config, tmp_path):
    import model_foundry

    without = model_foundry.train(sentiment_config(make_config, tmp_path, val_fraction=0.1) | {})
    assert "val" in without  # val_fraction written out: 4 of the 40 examples are held out
    config = sentiment_config(make_config, tmp_path)
    del config["data"]["val_fraction"]
    config["experiment"]["name"] = "no_val"
    assert "val" not in model_foundry.train(config)


@pytest.mark.slow
def test_model_dtype_on_our_architectures_says_it_does_nothing(make_config, tmp_path, capsys):
    import model_foundry

    model_foundry.train(make_config("gpt", model={"dtype": "bfloat16"}, training={"max_steps": 1}))
    assert "model.dtype has no effect on architecture 'gpt'" in capsys.readouterr().err


def test_a_task_model_says_which_task_its_head_is_for():
    from model_foundry.models import TaskHeadConfig, TaskModel, create_config

    _, settings = create_config("gpt", vocab_size=16, n_layer=1, n_head=1, n_embd=8, block_size=8)
    head = TaskHeadConfig(task="token_classification", num_outputs=3, labels=["A", "B", "C"])
    assert TaskModel("gpt", settings, head).default_task == "token_classification"


@pytest.mark.slow
def test_an_edited_tokenizer_type_takes_effect_in_a_run_directory_that_has_an_old_one(make_config, tmp_path):
    import model_foundry
    from model_foundry.tokenizer import FoundryTokenizer, train_tokenizer

    # What a run that failed after saving its char tokenizer (a data error, say) leaves behind.
    run_dir = tmp_path / "experiments" / "pretraining" / "tiny_bert"
    train_tokenizer("char", 64, texts=iter(["the cat sat on the mat"])).save(run_dir / "tokenizer")
    assert FoundryTokenizer.load(run_dir / "tokenizer").kind == "char"
    fixed = make_config("bert", tokenizer={"type": "bpe", "vocab_size": 300}, training={"max_steps": 1})
    model_foundry.train(fixed)
    assert FoundryTokenizer.load(run_dir / "tokenizer").kind == "bpe"
