"""Config loading: overrides, aliases, templates, and an error message for each kind of mistake."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from model_foundry.config import load_config
from model_foundry.config.experiments import find_experiment_config, run_directory
from model_foundry.templates import new_pretraining
from model_foundry.errors import UserError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(source, overrides=None) -> str:
    with pytest.raises(UserError) as caught:
        load_config(source, overrides)
    return str(caught.value)


def test_unknown_key_names_line_and_closest_keys(tmp_path):
    path = write(tmp_path, "experiment:\n  name: x\ntraining:\n  batch_size: 4\n  learnig_rate: 0.1\n")
    message = error_of(path)
    assert str(path) in message
    assert "line 5" in message
    assert "'training.learnig_rate'" in message
    assert "'learning_rate'" in message


def test_unknown_section_is_named(tmp_path):
    message = error_of(write(tmp_path, "trainig:\n  batch_size: 4\n"))
    assert "unknown section 'trainig'" in message and "'training'" in message


def test_wrong_type_names_field_path_and_value(tmp_path):
    message = error_of(write(tmp_path, "training:\n  batch_size: many\n"))
    assert "line 2" in message and "training.batch_size" in message and "'many'" in message
    assert "integer" in message


def test_out_of_range_value_says_what_is_allowed(tmp_path):
    message = error_of(write(tmp_path, "data:\n  val_fraction: 1.5\n"))
    assert "data.val_fraction" in message and "less than 1" in message


def test_bad_choice_lists_the_valid_ones(tmp_path):
    message = error_of(write(tmp_path, "model:\n  positional: alibi\n"))
    assert "model.positional" in message
    for choice in ("learned", "rotary", "sinusoidal"):
        assert choice in message


def test_unknown_architecture_and_task_list_the_registered_ones(tmp_path):
    from model_foundry.tasks import check_choices

    for text, wrong, valid in (("model:\n  architecture: mamba\n", "mamba", ("gpt", "bert", "lstm")),
                               ("task:\n  type: caual_lm\n", "caual_lm", ("causal_lm", "masked_lm"))):
        config = load_config(write(tmp_path, text)).config  # the schema checks form; the registries names
        with pytest.raises(UserError) as error:
            check_choices(config)
        assert wrong in str(error.value) and all(name in str(error.value) for name in valid)


def test_missing_file_and_broken_yaml(tmp_path):
    assert "does not exist" in error_of(tmp_path / "nope.yaml")
    message = error_of(write(tmp_path, "training:\n  batch_size: [1, 2\n"))
    assert "not valid YAML" in message and "line" in message


def test_overrides_are_coerced_and_named_in_errors(tmp_path):
    path = write(tmp_path, "training:\n  batch_size: 4\n")
    config = load_config(path, ["training.learning_rate=3e-4", "training.batch_size=8",
                                "training.compile=true", "model.n_layer=2"]).config
    assert config.training.learning_rate == pytest.approx(3e-4)
    assert config.training.batch_size == 8 and config.training.compile is True
    assert config.model.n_layer == 2
    message = error_of(path, ["training.batch_sise=8"])
    assert "--set training.batch_sise" in message and "'batch_size'" in message
    assert "KEY=VALUE" in error_of(path, ["training.batch_size"])


def test_alternative_key_names_are_aliases(tmp_path):
    config = load_config({"training": {"max_iters": 7, "lr": 0.01}, "model": {"torch_dtype": "bfloat16"},
                          "data": {"train": "corpus.txt"}}).config
    assert config.training.max_steps == 7 and config.training.learning_rate == 0.01
    assert config.model.dtype == "bfloat16"
    assert config.data.train.path == "corpus.txt"


def test_warmup_given_twice_is_refused():
    assert "warmup_steps or warmup_ratio" in error_of({"training": {"warmup_steps": 5, "warmup_ratio": 0.1}})


def test_run_directory_rule(tmp_path):
    config = load_config({"experiment": {"name": "exp", "output_dir": str(tmp_path)}}).config
    assert run_directory(config, None) == (tmp_path / "pretraining" / "exp").resolve()
    assert run_directory(config, tmp_path / "elsewhere") == (tmp_path / "elsewhere").resolve()


@pytest.mark.parametrize("arch", ["gpt", "bert", "hybrid", "lstm", "gru", "rnn"])
def test_template_is_valid_and_commented(tmp_path, arch):
    from model_foundry.models import create_config

    path = new_pretraining("demo", arch=arch, root=tmp_path)
    text = path.read_text()
    assert "#" in text and f"architecture: {arch}" in text
    config = load_config(path).config
    assert config.experiment.name == "demo" and config.model.architecture == arch
    create_config(arch, config.model.preset, vocab_size=100, **config.model.architecture_values())
    assert find_experiment_config("demo", root=tmp_path) == path
    with pytest.raises(UserError, match="already exists"):
        new_pretraining("demo", arch=arch, root=tmp_path)


@pytest.mark.parametrize(("arch", "positional", "norm"), [("gpt", "rotary", "pre"), ("bert", "rotary", "post"),
                                                   ("lstm", "learned", "pre")])
def test_template_shows_the_settings_the_model_really_uses(tmp_path, arch, positional, norm):
    """The commented model keys show what the model will use: the template's recipe over the architecture's
    defaults (modern for gpt, where it was measured to win; bert keeps BERT's layout with rotary positions, and
    both train with Muon)."""
    from model_foundry.models import create_config

    text = new_pretraining("demo", arch=arch, root=tmp_path).read_text()
    assert f"# positional: {positional} " in text and f"# norm_position: {norm} " in text
    settings = create_config(arch, None, **load_config(tmp_path / "pretraining" / "demo" / "config.yaml")
                             .config.model.architecture_values())[1]
    assert ("\n  recipe: modern " in text) == (arch == "gpt") and ("# recipe: classic" in text) == (arch != "gpt")
    assert ("\n  optimizer: muon " in text) == (arch in ("gpt", "bert", "hybrid"))
    if arch == "lstm":  # no positions or norms: the template shows the fallbacks, commented
        return
    assert (settings.positional, settings.norm_position) == (positional, norm)


def test_clone_for_resume_points_at_old_last_checkpoint(tmp_path):
    new_pretraining("old", root=tmp_path)
    path = new_pretraining("new", resume_from="old", root=tmp_path)
    raw = yaml.safe_load(path.read_text())
    assert raw["experiment"]["name"] == "new"
    assert raw["training"]["resume_from"] == str((tmp_path / "pretraining" / "old" / "checkpoints" / "last").resolve())
    assert load_config(path).config.training.resume_from.endswith("checkpoints/last")


def test_unknown_experiment_lists_existing_ones(tmp_path):
    new_pretraining("alpha", root=tmp_path)
    with pytest.raises(UserError, match="alpha"):
        find_experiment_config("beta", root=tmp_path)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "examples").rglob("*.yaml")),
                         ids=lambda p: str(p.relative_to(Path(__file__).parents[1] / "examples")))
def test_example_configs_validate(path):
    assert load_config(path).config.experiment.name
