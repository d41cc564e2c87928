"""Every rule about what goes with what is checked in one pass before a run writes anything: a
refused config leaves no run directory (no run.json, no tokenizer, no token cache) behind, whether
it comes through `model_foundry.train` or `foundry train`, and `foundry summary` refuses it the same way."""
from __future__ import annotations

import pytest
import yaml

import model_foundry
from model_foundry.cli.main import main
from model_foundry.errors import UserError

# (architecture, sections, what the message must say): one refused config per rule and task.
REFUSED = {
    "causal_lm_on_bert": ("bert", {"task": {"type": "causal_lm"}}, "task.type causal_lm cannot train this bert model"),
    "electra_without_rtd": ("electra", {"task": {"type": "masked_lm"}},
                            "model.architecture 'electra' trains only with task.type replaced_token_detection"),
    "masked_lm_on_hybrid": ("hybrid", {"task": {"type": "masked_lm"}}, "trains a single-stack language model"),
    "hybrid_task_on_gpt": ("gpt", {"task": {"type": "hybrid"}}, "set model.architecture: hybrid"),
    "bad_loss_weights": ("hybrid", {"task": {"loss_weights": [1.0, -1.0]}}, "it must be two non-negative numbers"),
    "loss_weights_with_shared_design": ("hybrid", {"model": {"hybrid_design": "shared"},
                                                   "task": {"loss_weights": [0.2, 0.8]}}, "set task.causal_ratio"),
    "rtd_on_a_causal_gpt": ("gpt", {"task": {"type": "replaced_token_detection"}},
                            "task.type replaced_token_detection needs a bidirectional discriminator"),
    "rtd_on_lstm": ("lstm", {"task": {"type": "replaced_token_detection"}}, "model.architecture is 'lstm'"),
    "bad_model_setting": ("gpt", {"model": {"n_head": 3}}, "must be divisible by model.n_head"),
    "too_many_layers_removed": ("bert", {"experiment": {"kind": "finetuning"},
                                         "task": {"type": "sequence_classification"},
                                         "transfer": {"remove_n_layers": 2}}, "transfer.remove_n_layers is 2"),
    "criterion_option_it_ignores": ("bert", {"experiment": {"kind": "finetuning"}, "task": {
        "type": "sequence_scoring", "label_smoothing": 0.1}}, "label_smoothing"),
    "target_smoothing_on_bitempered": ("bert", {"experiment": {"kind": "finetuning"},
                                                "task": {"type": "token_classification", "criterion": "bitempered"},
                                                "loss_modifiers": {"target_smoothing_enabled": True}},
                                       "target_smoothing_enabled smooths a cross-entropy"),
}


def one_line(text: str) -> str:
    """The message with its wrapping undone (the CLI wraps at a fixed width)."""
    return " ".join(text.split())


def squeezed(text: str) -> str:
    """The text without any whitespace: the CLI's wrapping also breaks at hyphens ("pytest-of-" +
    newline), so a wrapped message is compared with every space and line break removed."""
    return "".join(text.split())


def everything_under(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("case", REFUSED)
def test_a_refused_config_leaves_no_run_directory(make_config, tmp_path, case):
    arch, sections, message = REFUSED[case]
    config = make_config(arch, **sections)
    before = everything_under(tmp_path)
    with pytest.raises(UserError) as refused:
        model_foundry.train(config)
    assert message in one_line(str(refused.value))
    assert everything_under(tmp_path) == before, "the run was refused after it had written something"


@pytest.mark.parametrize("case", ["causal_lm_on_bert", "electra_without_rtd", "bad_loss_weights",
                                  "target_smoothing_on_bitempered"])
def test_foundry_train_refuses_with_one_paragraph_and_exit_2(make_config, tmp_path, capsys, case):
    arch, sections, message = REFUSED[case]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(make_config(arch, **sections)), encoding="utf-8")
    before = everything_under(tmp_path)
    assert main(["train", str(path)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err.startswith("error: ")
    assert "\n\n" not in captured.err.strip(), "one paragraph"
    assert squeezed(message) in squeezed(captured.err)
    assert everything_under(tmp_path) == before


def test_foundry_summary_refuses_the_same_config_the_same_way(make_config, tmp_path, capsys):
    arch, sections, message = REFUSED["causal_lm_on_bert"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(make_config(arch, **sections)), encoding="utf-8")
    assert main(["summary", str(path)]) == 2
    error = capsys.readouterr().err
    assert squeezed(message) in squeezed(error) and "Traceback" not in error


def test_a_compatible_config_still_trains(make_config, tmp_path):
    """Control: the check refuses what it should, not every config of these architectures."""
    results = model_foundry.train(make_config("bert", training={"max_steps": 2, "eval_interval": 2}))
    assert (tmp_path / "experiments" / "pretraining" / "tiny_bert" / "checkpoints" / "last").is_dir()
    assert results["val"]["loss"] > 0
