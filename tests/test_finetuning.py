"""Finetuning end to end: tasks, transfer controls, label handling, predictions."""
from __future__ import annotations

import csv
import json
import random

import pytest
import torch
from safetensors.torch import load_file

import model_foundry
from model_foundry.errors import UserError
from tests.conftest import tiny_config

POSITIVE = ["a good film", "great fun", "i loved it", "a fine and good story", "wonderful acting", "good"]
NEGATIVE = ["a bad film", "awful fun", "i hated it", "a dull and bad story", "terrible acting", "bad"]


def write_sentiment(path, rows: int, seed: int, scores: bool = False) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("sentence\tlabel\n")
        for _ in range(rows):
            positive = rng.random() < 0.5
            text = rng.choice(POSITIVE if positive else NEGATIVE)
            label = (rng.uniform(1.0, 4.0) if positive else rng.uniform(-4.0, -1.0)) if scores else int(positive)
            handle.write(f"{text}\t{label}\n")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Tiny pretrained gpt and bert runs on the sentiment sentences, shared by the tests here."""
    root = tmp_path_factory.mktemp("pretrained")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join((POSITIVE + NEGATIVE) * 30) + "\n", encoding="utf-8")
    runs = {}
    for arch in ("gpt", "bert"):
        config = tiny_config(corpus, root / "experiments", arch, training={"max_steps": 20, "eval_interval": 10})
        model_foundry.train(config)
        runs[arch] = root / "experiments" / "pretraining" / f"tiny_{arch}"
    return runs


@pytest.fixture
def sentiment(tmp_path):
    for name, rows, seed in (("train", 160, 1), ("dev", 40, 2), ("test", 40, 3)):
        write_sentiment(tmp_path / f"{name}.tsv", rows, seed)
    return tmp_path


def finetune_config(tmp_path, source, data_dir, **sections) -> dict:
    config = {
        "experiment": {"name": "ft", "kind": "finetuning", "seed": 3, "output_dir": str(tmp_path / "experiments")},
        "data": {"train": str(data_dir / "train.tsv"), "val": str(data_dir / "dev.tsv"),
                 "test": str(data_dir / "test.tsv"), "text_column": "sentence"},
        "task": {"type": "sequence_classification"},
        "transfer": {"init_from_checkpoint": str(source)},
        "training": {"max_steps": 40, "batch_size": 16, "learning_rate": 3e-3, "warmup_steps": 0,
                     "eval_interval": 20, "log_interval": 1, "device": "cpu", "weight_decay": 0.1,
                     "precision": "fp32"},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


def ft_dir(tmp_path):
    return tmp_path / "experiments" / "finetuning" / "ft"


def train_rows(tmp_path) -> list[dict]:
    with open(ft_dir(tmp_path) / "metrics" / "train.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt", "bert"])
def test_classifier_learns_and_reports_every_metric(pretrained, sentiment, tmp_path, arch):
    results = model_foundry.train(finetune_config(tmp_path, pretrained[arch], sentiment))
    test = results["test"]
    assert test["accuracy"] > 0.9, test
    assert set(test) >= {"loss", "accuracy", "f1_macro", "f1_micro", "per_class", "confusion_matrix"}
    assert test["confusion_matrix"]["labels"] == ["0", "1"]
    assert sum(map(sum, test["confusion_matrix"]["matrix"])) == 40
    saved = json.loads((ft_dir(tmp_path) / "checkpoints" / "best" / "model_config.json").read_text())
    assert saved["task_head"]["labels"] == ["0", "1"]
    assert saved["task_head"]["pooler"] == ("last" if arch == "gpt" else "cls")
    tokenizer = json.loads((ft_dir(tmp_path) / "tokenizer" / "tokenizer.json").read_text())
    assert tokenizer == json.loads((pretrained[arch] / "tokenizer" / "tokenizer.json").read_text())


def backbone_tensors(directory) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(directory / "model.safetensors").items() if k.startswith("backbone.")}


@pytest.mark.slow
def test_frozen_backbone_is_untouched_then_unfreezes_with_lr_multiplier(pretrained, sentiment, tmp_path):
    config = finetune_config(tmp_path, pretrained["bert"], sentiment,
                             transfer={"freeze_transformer": True, "unfreeze_at_iteration": 6,
                                       "unfreeze_lr_multiplier": 0.1},
                             training={"max_steps": 5, "lr_schedule": "constant", "save_interval": 5})
    model_foundry.train(config)
    before = backbone_tensors(pretrained["bert"] / "checkpoints" / "last")
    after = backbone_tensors(ft_dir(tmp_path) / "checkpoints" / "step_5")
    assert after.keys() <= before.keys()
    assert all(torch.equal(after[k], before[k]) for k in after), "a frozen weight moved (gradient or decay)"

    resumed = model_foundry.train(config, overrides={"training.max_steps": 10, "training.resume": True})
    assert resumed["run"]["steps"] == 10
    moved = backbone_tensors(ft_dir(tmp_path) / "checkpoints" / "last")
    assert any(not torch.equal(moved[k], before[k]) for k in moved), "the backbone never unfroze"
    rows = train_rows(tmp_path)
    by_step = {int(r["step"]): r for r in rows}
    for step in (1, 10):
        head, backbone = float(by_step[step]["lr_head_decay"]), float(by_step[step]["lr_backbone_decay"])
        expected = 1.0 if step < 6 else 0.1
        assert backbone == pytest.approx(expected * head)


@pytest.mark.slow
def test_per_part_learning_rates_and_layer_decay(pretrained, sentiment, tmp_path):
    config = finetune_config(tmp_path, pretrained["gpt"], sentiment,
                             transfer={"head_lr_mult": 10.0, "layer_lr_decay": 0.5},
                             training={"max_steps": 2, "lr_schedule": "constant"})
    model_foundry.train(config)
    row = train_rows(tmp_path)[-1]
    base = 3e-3
    assert float(row["lr_head_decay"]) == pytest.approx(10 * base)
    assert float(row["lr_block1_decay"]) == pytest.approx(base)  # the top of two blocks
    assert float(row["lr_block0_decay"]) == pytest.approx(0.5 * base)
    assert float(row["lr_embeddings_no_decay"]) == pytest.approx(0.25 * base)


@pytest.mark.slow
def test_remove_and_reinit_layers(pretrained, sentiment, tmp_path):
    config = finetune_config(tmp_path, pretrained["bert"], sentiment,
                             transfer={"remove_n_layers": 1, "freeze_transformer": True},
                             training={"max_steps": 1})
    model_foundry.train(config)
    saved = json.loads((ft_dir(tmp_path) / "checkpoints" / "last" / "model_config.json").read_text())
    assert saved["config"]["n_layer"] == 1
    weights = backbone_tensors(ft_dir(tmp_path) / "checkpoints" / "last")
    assert not any(k.startswith("backbone.blocks.1.") for k in weights)

    source = backbone_tensors(pretrained["bert"] / "checkpoints" / "last")
    config = finetune_config(tmp_path, pretrained["bert"], sentiment, experiment={"name": "reinit"},
                             transfer={"reinit_n_layers": 1, "freeze_transformer": True}, training={"max_steps": 1})
    model_foundry.train(config)
    weights = backbone_tensors(tmp_path / "experiments" / "finetuning" / "reinit" / "checkpoints" / "last")
    key0, key1 = "backbone.blocks.0.attn.qkv.weight", "backbone.blocks.1.attn.qkv.weight"
    assert torch.equal(weights[key0], source[key0]) and not torch.equal(weights[key1], source[key1])


@pytest.mark.slow
def test_label_unseen_in_training_names_file_and_line(pretrained, sentiment, tmp_path):
    with open(sentiment / "dev.tsv", "a", encoding="utf-8") as handle:
        handle.write("so so\tneutral\n")
    with pytest.raises(UserError, match=r"dev\.tsv:42.*'neutral'"):
        model_foundry.train(finetune_config(tmp_path, pretrained["bert"], sentiment))


@pytest.mark.slow
def test_scores_are_normalised_and_predicted_in_the_original_scale(pretrained, tmp_path):
    for name, rows, seed in (("train", 160, 1), ("dev", 40, 2), ("test", 40, 3)):
        write_sentiment(tmp_path / f"{name}.tsv", rows, seed, scores=True)
    config = finetune_config(tmp_path, pretrained["bert"], tmp_path, task={"type": "sequence_scoring"},
                             training={"max_steps": 60})
    results = model_foundry.train(config)
    assert results["test"]["pearson"] > 0.8 and set(results["test"]) >= {"mse", "mae", "pearson", "spearman"}
    saved = json.loads((ft_dir(tmp_path) / "checkpoints" / "best" / "model_config.json").read_text())
    low, high = saved["task_head"]["target_range"]
    assert -4.0 <= low < -3.5 and 3.5 < high <= 4.0
    from model_foundry.inference.predict import predict_run

    good, bad = predict_run(ft_dir(tmp_path), text="a good film")[0], predict_run(ft_dir(tmp_path), text="a bad film")[0]
    assert good["score"] > 0.5 and bad["score"] < -0.5  # original scale, not [0, 1]


CONLLU = """# text = the dog runs
1\tthe\tthe\tDET\t_\t_\t2\tdet\t_\t_
2\tdog\tdog\tNOUN\t_\t_\t3\tnsubj\t_\t_
3\truns\trun\tVERB\t_\t_\t0\troot\t_\t_

# text = a cat sleeps
1\ta\ta\tDET\t_\t_\t2\tdet\t_\t_
2\tcat\tcat\tNOUN\t_\t_\t3\tnsubj\t_\t_
3\tsleeps\tsleep\tVERB\t_\t_\t0\troot\t_\t_

"""


@pytest.mark.slow
def test_token_classification_tags_words(pretrained, tmp_path):
    (tmp_path / "train.conllu").write_text(CONLLU * 30, encoding="utf-8")
    (tmp_path / "dev.conllu").write_text(CONLLU, encoding="utf-8")
    config = finetune_config(tmp_path, pretrained["bert"], tmp_path, task={"type": "token_classification"},
                             data={"train": str(tmp_path / "train.conllu"), "val": str(tmp_path / "dev.conllu")},
                             training={"max_steps": 30})
    del config["data"]["test"]
    results = model_foundry.train(config)
    assert results["val"]["token_accuracy"] == 1.0 and "entity_f1" not in results["val"]
    from model_foundry.inference.predict import predict_run

    [row] = predict_run(ft_dir(tmp_path), text="the cat runs")
    assert row == {"tokens": ["the", "cat", "runs"], "tags": ["DET", "NOUN", "VERB"]}


@pytest.mark.slow
def test_pt_tensor_files_finetune(pretrained, tmp_path):
    """Padded rows with a True = PAD mask and integer labels, as the `.pt` dataset format saves them."""
    from torch.utils.data import TensorDataset

    from model_foundry.tokenizer import FoundryTokenizer

    tokenizer = FoundryTokenizer.load(pretrained["bert"] / "tokenizer")
    texts = [(t, 1) for t in POSITIVE] + [(t, 0) for t in NEGATIVE]
    ids = torch.full((len(texts), 30), tokenizer.pad_id)
    pad = torch.ones(len(texts), 30, dtype=torch.bool)
    for row, (text, _) in enumerate(texts):
        encoded = [tokenizer.cls_id, *tokenizer.encode(text), tokenizer.sep_id]
        ids[row, :len(encoded)], pad[row, :len(encoded)] = torch.tensor(encoded), False
    labels = torch.tensor([label for _, label in texts])
    for name, copies in (("train", 12), ("val", 2)):
        torch.save(TensorDataset(ids.repeat(copies, 1), pad.repeat(copies, 1), labels.repeat(copies)),
                   tmp_path / f"{name}.pt")
    config = finetune_config(tmp_path, pretrained["bert"], tmp_path, data={"train": str(tmp_path / "train.pt"),
                                                                           "val": str(tmp_path / "val.pt")})
    del config["data"]["test"], config["data"]["text_column"]
    results = model_foundry.train(config)
    assert results["val"]["accuracy"] == 1.0 and results["val"]["confusion_matrix"]["labels"] == ["0", "1"]


@pytest.mark.slow
def test_multi_label_classification(pretrained, tmp_path):
    rows = [("a good film", "good,film"), ("a bad film", "bad,film"), ("great fun", "good"), ("dull fun", "bad")]
    for name, copies in (("train", 40), ("dev", 3)):
        (tmp_path / f"{name}.tsv").write_text("sentence\tlabel\n" + "\n".join(f"{t}\t{l}" for t, l in rows * copies))
    config = finetune_config(tmp_path, pretrained["gpt"], tmp_path, task={"multi_label": True},
                             training={"max_steps": 60})
    del config["data"]["test"]
    results = model_foundry.train(config)
    assert results["val"]["accuracy"] == 1.0 and set(results["val"]["per_class"]) == {"bad", "film", "good"}
    from model_foundry.inference.predict import predict_run

    [row] = predict_run(ft_dir(tmp_path), text="a good film")
    assert sorted(row["labels"]) == ["film", "good"] and set(row["probabilities"]) == {"bad", "film", "good"}


@pytest.mark.slow
def test_load_weights_false_keeps_architecture_and_tokenizer_but_not_weights(pretrained, sentiment, tmp_path):
    """The from-scratch control: the pretrained run's settings and tokenizer, random weights."""
    config = finetune_config(tmp_path, pretrained["bert"], sentiment, training={"max_steps": 1, "eval_interval": 1},
                             transfer={"load_weights": False})
    model_foundry.train(config)
    run = ft_dir(tmp_path)
    assert (run / "tokenizer" / "tokenizer.json").read_text() == (pretrained["bert"] / "tokenizer" / "tokenizer.json").read_text()
    meta = json.loads((run / "checkpoints" / "last" / "model_config.json").read_text())
    source = json.loads((pretrained["bert"] / "checkpoints" / "best" / "model_config.json").read_text())
    assert meta["architecture"] == source["architecture"] == "bert" and meta["config"] == source["config"]
    control = backbone_tensors(run / "checkpoints" / "last")
    original = backbone_tensors(pretrained["bert"] / "checkpoints" / "best")
    assert control.keys() == original.keys()
    embedding = "backbone.token_embedding.weight"
    assert control[embedding].shape == original[embedding].shape
    # One step at lr 3e-3 moves a weight by ~3e-3: far less than the distance between two random draws.
    assert (control[embedding] - original[embedding]).abs().mean() > 0.01
    loaded = finetune_config(tmp_path / "loaded", pretrained["bert"], sentiment,
                             training={"max_steps": 1, "eval_interval": 1, "learning_rate": 1e-9})
    model_foundry.train(loaded)
    near = backbone_tensors(ft_dir(tmp_path / "loaded") / "checkpoints" / "last")
    assert torch.allclose(near[embedding], original[embedding], atol=1e-6)


def test_load_weights_false_without_a_checkpoint_warns(make_config, capsys):
    model_foundry.train(make_config("gpt", training={"max_steps": 1}, transfer={"load_weights": False}))
    assert "transfer.load_weights: false has no effect" in capsys.readouterr().err


@pytest.mark.slow
def test_max_train_samples_takes_the_same_seeded_subset(pretrained, sentiment, tmp_path, capsys):
    from model_foundry.tasks.finetuning import seeded_subset

    items = list(range(100))
    first, again, other = seeded_subset(items, 10, 1), seeded_subset(items, 10, 1), seeded_subset(items, 10, 2)
    assert first == again and first != other and len(first) == 10 and first == sorted(first)
    assert seeded_subset(items, 500, 1) == items and seeded_subset(items, None, 1) == items
    config = finetune_config(tmp_path, pretrained["gpt"], sentiment, data={"max_train_samples": 24},
                             training={"max_steps": None, "epochs": 1, "eval_interval": 100})
    results = model_foundry.train(config)
    assert "train 24, val 40" in capsys.readouterr().err
    assert results["run"]["steps"] == 1  # 24 examples at batch 16: one full batch (a partial one is dropped)
