"""Settings that had no test: sentence pairs (`data.text_pair_column`), several labels per example
(`task.label_separator`) and LoRA's `use_dora`, `use_rslora` and `init_lora_weights`.

Each is checked for its effect, against a control that lacks the setting. LoRA is checked through
the public config (a `lora:` section, built as `model_foundry.train` builds a run) and peft's own
layer attributes, whatever wraps the model.
"""
from __future__ import annotations

import math

import pytest
import torch

import model_foundry
from model_foundry.config.schema import FoundryConfig
from model_foundry.training.run import absolute_paths, build_trainer

# The first text says nothing (and holds every character of the pairs); only the pair tells the label.
PAIRS = [("good fun or a bad film", "good fun", 1), ("good fun or a bad film", "bad film", 0)] * 20


def trainer_for(config: dict, run_dir):
    return build_trainer(absolute_paths(FoundryConfig.model_validate(config)), run_dir)


def pair_config(make_config, tmp_path, pair_column: str | None) -> dict:
    data = tmp_path / "pairs.tsv"
    data.write_text("question\tanswer\tlabel\n" + "".join(f"{q}\t{a}\t{y}\n" for q, a, y in PAIRS), encoding="utf-8")
    config = make_config("bert", experiment={"name": f"pairs_{pair_column}", "kind": "finetuning"},
                         model={"dropout": 0.0}, task={"type": "sequence_classification", "head_dropout": 0.0},
                         data={"train": {"path": str(data)}, "val": {"path": str(data)}, "format": "tsv",
                               "text_column": "question", "text_pair_column": pair_column, "label_column": "label"},
                         training={"max_steps": 30, "eval_interval": 30})
    return config


def test_a_pair_reaches_the_model_as_a_second_segment(make_config, tmp_path):
    trainer = trainer_for(pair_config(make_config, tmp_path, "answer"), tmp_path / "run")
    batch = next(trainer.train_stream)
    tokenizer = trainer.task.tokenizer
    for ids, types, mask in zip(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]):
        ids, types = ids[mask.bool()].tolist(), types[mask.bool()].tolist()
        first = types.index(1)  # the second segment starts after `cls text sep`
        assert ids[0] == tokenizer.cls_id and ids[first - 1] == tokenizer.sep_id and ids[-1] == tokenizer.sep_id
        assert set(types[:first]) == {0} and set(types[first:]) == {1}
        assert tokenizer.decode(ids[first:-1], skip_special_tokens=True).replace(" ", "") in {"goodfun", "badfilm"}


def test_a_new_tokenizer_learns_the_pairs_characters_too(make_config, tmp_path):
    config = pair_config(make_config, tmp_path, "answer")
    data = tmp_path / "pairs.tsv"
    data.write_text("question\tanswer\tlabel\n" + "what is it\tgood fun\t1\n" * 40, encoding="utf-8")
    tokenizer = trainer_for(config, tmp_path / "run").task.tokenizer
    assert tokenizer.unk_id not in tokenizer.encode("good fun"), tokenizer.encode("good fun")


@pytest.mark.slow
def test_a_classifier_learns_what_only_the_pair_tells(make_config, tmp_path):
    """Every first text is the same: without the pair a model cannot beat the majority share (0.5)."""
    paired = model_foundry.train(pair_config(make_config, tmp_path, "answer"))["val"]["accuracy"]
    alone = model_foundry.train(pair_config(make_config, tmp_path, None))["val"]["accuracy"]
    assert alone == 0.5  # the control: identical inputs get identical predictions
    assert paired == 1.0


def multi_label_config(make_config, tmp_path, **task) -> dict:
    rows = [("a match and a goal", "sports"), ("votes were counted today", "politics;news"),
            ("the team won the vote", "sports;politics"), ("the paper wrote it first", "news")] * 6
    data = tmp_path / "topics.tsv"
    data.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    return make_config("bert", experiment={"name": "topics", "kind": "finetuning"},
                       task={"type": "sequence_classification", "multi_label": True, **task},
                       data={"train": {"path": str(data)}, "format": "tsv", "val_fraction": 0.0},
                       training={"batch_size": 24})


def test_label_separator_splits_a_row_into_several_labels(make_config, tmp_path):
    trainer = trainer_for(multi_label_config(make_config, tmp_path, label_separator=";"), tmp_path / "split")
    labels = trainer.task.label_set.labels
    assert sorted(labels) == ["news", "politics", "sports"]
    targets = next(trainer.train_stream)["labels"]
    assert targets.shape[-1] == 3 and sorted(targets.sum(-1).tolist()) == [1.0] * 12 + [2.0] * 12
    # The control: the default separator "," leaves each "a;b" whole, one label of its own.
    whole = trainer_for(multi_label_config(make_config, tmp_path), tmp_path / "whole")
    assert sorted(whole.task.label_set.labels) == ["news", "politics;news", "sports", "sports;politics"]


# ---- LoRA's options reach peft ------------------------------------------------------------------------
def lora_trainer(make_config, tmp_path, name: str, **lora):
    config = make_config("gpt", experiment={"name": name}, model={"dropout": 0.0},
                         lora={"enabled": True, "r": 4, "alpha": 8.0, **lora})
    torch.manual_seed(0)
    return trainer_for(config, tmp_path / name)


def lora_layers(model: torch.nn.Module) -> list:
    from peft.tuners.lora import LoraLayer

    layers = [module for module in model.modules() if isinstance(module, LoraLayer)]
    assert layers, "no LoRA layer was injected"
    return layers


def logits_with_and_without_adapters(model: torch.nn.Module, layers: list) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 30, (2, 12), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        for layer in layers:
            layer.enable_adapters(False)
        base = model(input_ids=ids).logits
        for layer in layers:
            layer.enable_adapters(True)
    return adapted, base


@pytest.fixture(scope="module", autouse=True)
def needs_peft():
    pytest.importorskip("peft")


def test_use_rslora_scales_adapters_by_alpha_over_the_root_of_r(make_config, tmp_path):
    plain = lora_layers(lora_trainer(make_config, tmp_path, "plain").model)
    rank_stabilised = lora_layers(lora_trainer(make_config, tmp_path, "rslora", use_rslora=True).model)
    assert [layer.scaling["default"] for layer in plain] == [8.0 / 4] * len(plain)
    assert [layer.scaling["default"] for layer in rank_stabilised] == pytest.approx([8.0 / math.sqrt(4)] * len(plain))


def test_use_dora_adds_a_trained_magnitude_vector_per_layer(make_config, tmp_path):
    plain = lora_trainer(make_config, tmp_path, "plain").model
    assert all("default" not in layer.lora_magnitude_vector for layer in lora_layers(plain))
    dora = lora_trainer(make_config, tmp_path, "dora", use_dora=True)
    layers = lora_layers(dora.model)
    for layer in layers:
        magnitude = layer.lora_magnitude_vector["default"].weight
        assert magnitude.requires_grad and magnitude.shape == (layer.out_features,)
    trainable = {id(p) for group in dora.optimizer.param_groups for p in group["params"]}
    assert all(id(layer.lora_magnitude_vector["default"].weight) in trainable for layer in layers)


def test_init_lora_weights_false_starts_from_a_model_that_differs_from_the_base(make_config, tmp_path):
    zero = lora_trainer(make_config, tmp_path, "zero_init")
    layers = lora_layers(zero.model)
    assert all(not layer.lora_B["default"].weight.any() for layer in layers)  # peft's default: B = 0
    adapted, base = logits_with_and_without_adapters(zero.model, layers)
    assert torch.equal(adapted, base)  # so the untrained adapted model is the base model
    random = lora_trainer(make_config, tmp_path, "random_init", init_lora_weights=False)
    layers = lora_layers(random.model)
    assert all(layer.lora_B["default"].weight.any() for layer in layers)
    adapted, base = logits_with_and_without_adapters(random.model, layers)
    assert (adapted - base).abs().max() > 1e-4
