"""Model inspection: the module table, weight statistics, the dry run and `foundry summary`."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import model_foundry
from model_foundry.cli.main import main
from model_foundry.config.schema import TransferSection
from model_foundry.models import create_model
from model_foundry.reporting import dry_run as dry_run_module
from model_foundry.reporting.dry_run import Inspection, dry_run
from model_foundry.reporting.summary import (format_summary, format_weight_statistics, human_bytes, summarize,
                                             weight_statistics)
from model_foundry.training.transfer import TransferPlan
from tests.conftest import says, tiny_config

VOCAB = 53


def tiny_gpt() -> nn.Module:
    torch.manual_seed(0)
    return create_model("gpt", vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32, block_size=24)


def lm_batch(batch: int = 2, length: int = 12) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "labels": ids.roll(-1, dims=1)}


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


# ---- the module table -----------------------------------------------------------------------------

def test_rows_have_the_real_output_shapes_and_parameter_totals():
    model = tiny_gpt().train()
    before = weights_of(model)
    rows = summarize(model, lm_batch())
    by_name = {row.name: row for row in rows}

    assert by_name[""].type == "GPT" and by_name[""].depth == 0
    assert by_name["backbone.blocks.0.attn.qkv"].output_shape == "[2, 12, 96]"
    assert by_name["backbone.blocks.1.mlp.fc"].output_shape == "[2, 12, 128]"
    assert by_name["lm_head"].output_shape == "[2, 12, 53]"
    assert by_name["backbone.blocks"].output_shape == "-", "a ModuleList is a container, never called"
    assert by_name["backbone.blocks.0"].depth == 3
    assert by_name["backbone.blocks.0.attn.qkv"].params == 32 * 96 + 96

    total = model.get_parameter_count()
    assert by_name[""].params == total == by_name[""].trainable_params
    assert sum(row.params for row in rows if row.depth == 1) == total, "the tied head is not counted twice"
    assert by_name["lm_head"].params == 0 and by_name["lm_head"].tied_to == "backbone.token_embedding"
    assert by_name[""].memory_bytes == model.get_memory_footprint()
    assert model.training, "the summary restores the train/eval mode"
    assert_unchanged(model, before)


def test_trainable_flags_and_the_formatted_table():
    model = tiny_gpt()
    model.backbone.blocks[0].requires_grad_(False)
    rows = summarize(model, lm_batch())
    by_name = {row.name: row for row in rows}
    assert by_name["backbone.blocks.0"].trainable == "none"
    assert by_name["backbone.blocks.1"].trainable == "all"
    assert by_name["backbone"].trainable == "partial"
    assert by_name["backbone.drop"].trainable == "-"

    frozen = sum(p.numel() for p in model.backbone.blocks[0].parameters())
    total = model.get_parameter_count()
    text = format_summary(rows, depth=2)
    assert f"Total parameters: {total:,} (trainable {total - frozen:,}, frozen {frozen:,})" in text
    assert "final_norm" in text and "qkv" not in text, "depth 2 stops above the blocks' insides"
    assert "0 (tied to backbone.token_embedding)" in text


class TwoViews(nn.Module):
    """A stack and a second view of the very same layers (as the hybrid's shared design has)."""

    def __init__(self):
        super().__init__()
        self.stack = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2))
        self.view = nn.Sequential(*self.stack)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.view(self.stack(x) @ torch.ones(2, 3))


def test_a_view_of_another_stack_is_counted_once_and_names_its_owner():
    model = TwoViews()
    by_name = {row.name: row for row in summarize(model, {"x": torch.zeros(4, 3)})}
    assert by_name["stack"].params == 3 * 5 + 5 + 5 * 2 + 2 == by_name[""].params
    assert (by_name["view"].params, by_name["view"].tied_to) == (0, "stack")
    assert (by_name["stack"].output_shape, by_name["stack"].calls) == ("[4, 2]", 1)
    assert by_name["stack.0"].calls == 2, "the shared layer runs once per view"


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536, 1024 ** 3, 5 * 1024 ** 2)] == \
        ["0 B", "1023 B", "1.0 KiB", "1.5 KiB", "1.0 GiB", "5.0 MiB"]


def test_weight_statistics_of_a_hand_set_tensor():
    model = tiny_gpt()
    with torch.no_grad():
        model.backbone.final_norm.weight.copy_(torch.tensor([0.0] * 8 + [1.0] * 8 + [-2.0] * 8 + [3.0] * 8))
    statistics = {row["name"]: row for row in weight_statistics(model)}
    norm = statistics["backbone.final_norm.weight"]
    # mean (0 + 8 - 16 + 24) / 32 = 0.5; mean of squares (0 + 8 + 32 + 72) / 32 = 3.5; variance 3.5 - 0.25.
    assert norm["shape"] == [32]
    assert norm["mean"] == pytest.approx(0.5)
    assert norm["std"] == pytest.approx(math.sqrt(3.25))
    assert (norm["min"], norm["max"], norm["zeros"]) == (-2.0, 3.0, 0.25)
    assert "lm_head.weight" not in statistics, "a tied weight is listed once"
    assert len(statistics) == len(list(model.parameters()))
    lines = format_weight_statistics(list(statistics.values())).splitlines()
    norm_line = next(line for line in lines if line.startswith("backbone.final_norm.weight"))
    assert norm_line.split() == ["backbone.final_norm.weight", "[32]", "+0.5", "1.803", "-2", "+3", "25.0%"]


# ---- the dry run ----------------------------------------------------------------------------------

def test_dry_run_passes_on_a_healthy_model_and_changes_nothing():
    model = tiny_gpt().eval()
    before = weights_of(model)
    earlier_grad = torch.ones_like(model.backbone.final_norm.bias)
    model.backbone.final_norm.bias.grad = earlier_grad
    report = dry_run(model, lm_batch())

    assert report.passed, report.describe()
    assert report.checked == len(list(model.parameters()))
    with torch.no_grad():
        assert report.loss == pytest.approx(float(model(**lm_batch()).loss))
    assert report.describe().startswith("Dry run PASSED")
    assert_unchanged(model, before)
    assert model.backbone.final_norm.bias.grad is earlier_grad, "gradients are put back as they were"
    assert model.backbone.final_norm.weight.grad is None
    assert not model.training


def test_dry_run_lists_a_trainable_parameter_the_forward_never_uses():
    model = tiny_gpt()
    model.extra = nn.Linear(4, 4)  # registered, but GPT.forward never calls it
    report = dry_run(model, lm_batch())
    assert not report.passed
    assert report.unused == ["extra.weight", "extra.bias"]
    assert "2 trainable parameters got no gradient: extra.weight, extra.bias" in report.describe()
    assert {row.name: row for row in summarize(model, lm_batch())}["extra"].output_shape is None


def test_dry_run_catches_parameters_the_transfer_plan_freezes_that_still_get_gradient():
    model = tiny_gpt()
    plan = TransferPlan(TransferSection(freeze_n_layers=1), model, steps_per_epoch=10)
    names = {id(p): n for n, p in model.named_parameters()}
    frozen = [names[id(p)] for p in plan.frozen_at_start]
    assert frozen and all(name.startswith("backbone.blocks.0.") for name in frozen)

    # The bug the check exists for: the plan says frozen, but the freezing never reached the parameters.
    broken = dry_run(model, lm_batch(), frozen=frozen)
    assert not broken.passed and broken.frozen_with_gradient == frozen and not broken.unused
    assert "parameters the transfer settings freeze still got a gradient" in broken.describe()

    plan.apply(0, torch.optim.SGD(model.parameters(), lr=0.0))
    fixed = dry_run(model, lm_batch(), frozen=frozen)
    assert fixed.passed, fixed.describe()
    assert fixed.checked == len(list(model.parameters())) - len(frozen) and fixed.frozen == len(frozen)


def test_dry_run_reports_non_finite_gradients_and_loss():
    model = tiny_gpt()
    model.backbone.final_norm.weight.register_hook(lambda grad: grad * float("nan"))
    report = dry_run(model, lm_batch())
    assert math.isfinite(report.loss) and report.non_finite == ["backbone.final_norm.weight"]

    with torch.no_grad():
        model.backbone.final_norm.bias.fill_(float("inf"))
    report = dry_run(model, lm_batch())
    assert not math.isfinite(report.loss) and "the loss is nan" in report.describe()


# ---- foundry summary ------------------------------------------------------------------------------

def file_digests(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_foundry_summary_of_a_run_and_of_a_config(tiny_corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config_path = tmp_path / "tiny.yaml"
    config = tiny_config(tiny_corpus, tmp_path / "experiments", training={"max_steps": 4, "eval_interval": 2})
    config_path.write_text(yaml.safe_dump(config))
    model_foundry.train(config_path)
    run_dir = tmp_path / "experiments" / "pretraining" / "tiny_gpt"
    capsys.readouterr()
    before = file_digests(run_dir)

    assert main(["summary", str(run_dir)]) == 0
    out = capsys.readouterr().out
    total = model_foundry.load_model(run_dir).get_parameter_count()
    assert f"Total parameters: {total:,}" in out and "(best checkpoint)" in out
    assert "Dry run PASSED" in out
    assert file_digests(run_dir) == before, "summary writes nothing into the run directory"

    assert main(["summary", str(config_path), "--stats"]) == 0
    out = capsys.readouterr().out
    assert "(fresh weights)" in out and "backbone.token_embedding.weight" in out and "zeros" in out

    assert main(["summary", "tiny_gpt", "--no-dry-run", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "Dry run" not in out and "lm_head" in out and "final_norm" not in out
    assert main(["summary", "tiny_gpt", "--depth", "-1"]) == 2


def test_a_failed_dry_run_exits_2_naming_the_parameters(monkeypatch, capsys):
    model = tiny_gpt()
    model.extra = nn.Linear(4, 4)
    inspection = Inspection(model=model, batch=lm_batch(), frozen=[], source="broken.yaml (fresh weights)",
                            device=torch.device("cpu"), precision="fp32")
    monkeypatch.setattr(dry_run_module, "load_target", lambda target: inspection)
    assert main(["summary", "broken.yaml"]) == 2
    captured = capsys.readouterr()
    assert "not called" in captured.out, "the table is printed before the dry run fails"
    assert says(captured.err, "broken.yaml (fresh weights): Dry run FAILED"), captured.err
    assert says(captured.err, "extra.weight, extra.bias"), captured.err


def test_the_dry_run_of_a_shared_hybrid_checks_both_objectives(tiny_corpus, tmp_path, capsys):
    # causal_ratio 1 draws only causal batches; the masked head must still be checked, not reported unused.
    config = tiny_config(tiny_corpus, tmp_path / "experiments", "hybrid", model={"hybrid_design": "shared"},
                         task={"causal_ratio": 1.0})
    config_path = tmp_path / "hybrid.yaml"
    config_path.write_text(yaml.safe_dump(config))
    assert main(["summary", str(config_path), "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "Dry run PASSED" in out and "mlm_logits" in out and "clm_logits" in out
