"""`training.optimizer: muon`: which parameters Muon updates, what one step does to them, exact
resume, the refusals, and a short run whose loss falls."""
from __future__ import annotations

import csv
import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import model_foundry
from model_foundry.config.loading import load_config
from model_foundry.config.schema import FoundryConfig, TrainingSection
from model_foundry.errors import UserError
from model_foundry.models.registry import create_model
from model_foundry.tokenizer import FoundryTokenizer
from model_foundry.models.task_model import TaskHeadConfig, TaskModel
from model_foundry.training.ignored_keys import ignored_optimizer_keys
from model_foundry.training.muon import MuonWithAdamW, hidden_matrices
from model_foundry.training.optimizer import make_optimizer
from model_foundry.training.transfer import TransferPlan

SIZES = {"vocab_size": 64, "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32}
HIDDEN_SUFFIXES = ("attn.qkv.weight", "attn.proj.weight", "mlp.fc.weight", "mlp.proj.weight")


def names_of(model: nn.Module, ids: set[int]) -> set[str]:
    return {name for name, param in model.named_parameters() if id(param) in ids}


@pytest.mark.parametrize("arch", ["gpt", "bert"])
def test_hidden_matrices_are_the_blocks_matrices_and_nothing_else(arch):
    model = create_model(arch, **SIZES)
    muon = names_of(model, hidden_matrices(model))
    expected = {f"backbone.blocks.{i}.{suffix}" for i in range(2) for suffix in HIDDEN_SUFFIXES}
    assert muon == expected
    # The rest: embeddings, norms, biases and the head (GPT's is tied to the token embedding; BERT's
    # MLM transform is a 2-D matrix of the head, not of a hidden layer).
    rest = {name for name, _ in model.named_parameters()} - muon
    assert "backbone.token_embedding.weight" in rest
    assert all(name.endswith(("bias", "embedding.weight")) or "norm" in name or not name.startswith("backbone.")
               for name in rest)
    if arch == "bert":
        assert "mlm_head.dense.weight" in rest


def untied_gpt() -> nn.Module:
    """A GPT whose output head is a matrix of its own (as a Hugging Face checkpoint's may be)."""
    model = create_model("gpt", **SIZES)
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    return model


def test_an_untied_head_and_task_heads_stay_with_adamw():
    untied = untied_gpt()
    assert "lm_head.weight" not in names_of(untied, hidden_matrices(untied))
    classifier = TaskModel("bert", create_model("bert", **SIZES).config,
                           TaskHeadConfig(task="sequence_classification", num_outputs=2, labels=["a", "b"], head="sequential",
                                          pooler="attention"))
    muon = names_of(classifier, hidden_matrices(classifier))
    assert muon and all(name.startswith("backbone.blocks.") for name in muon)
    recurrent = create_model("lstm", vocab_size=64, n_layer=2, n_embd=32)
    assert names_of(recurrent, hidden_matrices(recurrent)) == {
        f"backbone.blocks.{i}.rnn.{kind}_l0" for i in range(2) for kind in ("weight_ih", "weight_hh")}


def test_lora_factors_stay_with_adamw_so_muon_holds_only_frozen_base_weights():
    pytest.importorskip("peft")
    from model_foundry.config.schema import LoraSection
    from model_foundry.models.lora import apply_lora

    model = apply_lora(create_model("gpt", **SIZES), LoraSection(enabled=True))
    muon = hidden_matrices(model)
    factors = [name for name, _ in model.named_parameters() if ".lora_" in name]
    assert factors and not names_of(model, muon) & set(factors)
    assert muon and not any(param.requires_grad for param in model.parameters() if id(param) in muon)


@pytest.mark.parametrize("arch", ["gpt", "bert"])
def test_every_parameter_is_in_exactly_one_group_of_the_right_optimizer(arch):
    model = untied_gpt() if arch == "gpt" else create_model(arch, **SIZES)
    optimizer = make_optimizer(model, TrainingSection(optimizer="muon"), torch.device("cpu"))
    assert isinstance(optimizer, MuonWithAdamW)
    in_muon = [id(p) for group in optimizer.muon.param_groups for p in group["params"]]
    in_adamw = [id(p) for group in optimizer.adamw.param_groups for p in group["params"]]
    assert len(in_muon) + len(in_adamw) == len(set(in_muon) | set(in_adamw))  # none twice, none in both
    assert set(in_muon) | set(in_adamw) == {id(p) for p in model.parameters()}  # none missing
    assert set(in_muon) == hidden_matrices(model)
    # `decay` holds the AdamW matrices: GPT's untied head, BERT's MLM transform.
    assert {g["name"] for g in optimizer.param_groups} == {"muon", "decay", "no_decay"}


def test_muon_rate_and_decay_follow_the_settings_through_the_group_scale():
    model = create_model("gpt", **SIZES)
    plan = TransferPlan(FoundryConfig().transfer, model, steps_per_epoch=10)
    training = TrainingSection(optimizer="muon", learning_rate=1e-3, muon_learning_rate=0.05, weight_decay=0.2)
    optimizer = make_optimizer(model, training, torch.device("cpu"), plan.group_of)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["muon"]["lr_scale"] == pytest.approx(50.0) and groups["muon"]["weight_decay"] == 0.2
    assert groups["no_decay"]["lr_scale"] == 1.0 and groups["no_decay"]["weight_decay"] == 0.0
    assert groups["muon"]["momentum"] == 0.95 and groups["muon"]["adjust_lr_fn"] == "original"


def spread(values: torch.Tensor) -> float:
    """max / min of the larger half of the singular values `values` (sorted, descending)."""
    top = values[: len(values) // 2]
    return float(top[0] / top[-1])


def test_one_step_orthogonalises_muon_updates_and_adam_steps_by_the_sign():
    torch.manual_seed(0)
    model = untied_gpt()
    lr, muon_lr = 1e-3, 0.01
    optimizer = make_optimizer(model, TrainingSection(optimizer="muon", learning_rate=lr, muon_learning_rate=muon_lr,
                                                      weight_decay=0.0), torch.device("cpu"))
    ids = torch.randint(0, SIZES["vocab_size"], (8, 32))
    model(ids, labels=ids).loss.backward()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    optimizer.step()
    muon = names_of(model, hidden_matrices(model))
    for name, param in model.named_parameters():
        change = param.detach() - before[name]
        if name in muon:
            rows, columns = param.shape
            update = -change / (muon_lr * max(1.0, rows / columns) ** 0.5)
            singular, raw = torch.linalg.svdvals(update), torch.linalg.svdvals(grads[name])
            # Newton-Schulz brings the gradient's leading directions to about one size (torch's
            # quintic leaves them between about 0.7 and 1.2: a spread under 1.7); the raw gradient's
            # spread over as many directions is 4 to 35 here. AdamW's sign-like update, or plain
            # momentum, would fail this.
            assert spread(raw) > 3, name
            assert spread(singular) < 1.7, name
            assert 0.6 < float(singular[: len(singular) // 2].median()) < 1.3, name
        else:
            strong = grads[name].abs() > 1e-4  # Adam's eps (1e-8) is negligible beside these
            assert strong.any()
            expected = -lr * torch.sign(grads[name])
            torch.testing.assert_close(change[strong], expected[strong], rtol=1e-3, atol=1e-7)


def run_config(make_config, name: str, **training) -> dict:
    config = make_config("gpt", training={"optimizer": "muon", "muon_learning_rate": 0.02, "log_interval": 1,
                                          **training})
    config["experiment"]["name"] = name
    return config


def test_resume_from_the_middle_is_bit_identical(make_config, tmp_path):
    straight = run_config(make_config, "straight", max_steps=12, save_interval=6, keep_last_n=5, eval_interval=6)
    model_foundry.train(straight)
    runs = tmp_path / "experiments" / "pretraining"
    halfway = runs / "straight" / "checkpoints" / "step_6"
    state = torch.load(halfway / "trainer_state.pt", weights_only=True)
    assert state["optimizer_name"] == "muon" and state["optimizer"]["muon"]["state"]
    resumed = run_config(make_config, "resumed", max_steps=12, save_interval=6, keep_last_n=5, eval_interval=6,
                         resume_from=str(halfway))
    model_foundry.train(resumed)
    expected = load_file(runs / "straight" / "checkpoints" / "last" / "model.safetensors")
    got = load_file(runs / "resumed" / "checkpoints" / "last" / "model.safetensors")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    adamw = run_config(make_config, "adamw", max_steps=12, optimizer="adamw", resume_from=str(halfway))
    with pytest.raises(UserError, match="training.optimizer: muon"):
        model_foundry.train(adamw)


def test_muon_with_fsdp_and_a_misspelt_optimizer_are_config_errors():
    with pytest.raises(UserError) as caught:
        load_config({"training": {"optimizer": "muon", "distributed": "fsdp"}})
    assert "training.optimizer: muon" in str(caught.value) and "training.distributed: fsdp" in str(caught.value)
    with pytest.raises(UserError) as caught:
        load_config({"training": {"optimizer": "moun"}})
    assert "training.optimizer" in str(caught.value) and "muon" in str(caught.value)


def test_muon_keys_without_muon_and_muon_under_lora_are_warned():
    assert ignored_optimizer_keys(FoundryConfig()) == []
    adamw = FoundryConfig(training={"muon_learning_rate": 0.05})
    assert ignored_optimizer_keys(adamw) == [
        "training.muon_learning_rate has no effect with training.optimizer: adamw (only muon uses it)."]
    lora = FoundryConfig(training={"optimizer": "muon"}, lora={"enabled": True})
    assert "lora.enabled" in ignored_optimizer_keys(lora)[0]


def test_a_short_muon_run_learns(make_config, tmp_path):
    results = model_foundry.train(run_config(make_config, "learns", max_steps=30))
    run_dir = tmp_path / "experiments" / "pretraining" / "learns"
    with open(run_dir / "metrics" / "train.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {"lr_muon", "lr_no_decay"} <= set(rows[0])
    # The schedule shapes both rates alike: Muon's stays muon_learning_rate / learning_rate times AdamW's.
    assert all(float(r["lr_muon"]) == pytest.approx(0.02 / 3e-3 * float(r["lr_no_decay"])) for r in rows)
    uniform_loss = math.log(FoundryTokenizer.load(run_dir / "tokenizer").vocab_size)
    first, last = float(rows[0]["loss"]), sum(float(r["loss"]) for r in rows[-3:]) / 3
    assert last < first - 0.5, (first, last)
    assert results["val"]["loss"] < uniform_loss - 0.5, (results["val"], uniform_loss)
