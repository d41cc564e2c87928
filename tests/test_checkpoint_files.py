"""The files of model directories and checkpoints (`model_foundry.checkpoint_files`): one loader with
its strictness and prefix, one error for a damaged weights file, and checkpoint writes that survive a
full disk, a read-only file system and a kill between the swap's two renames."""
from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil

import pytest
import safetensors.torch
import torch
import yaml
from safetensors import SafetensorError

import model_foundry
from model_foundry.checkpoint_files import (WEIGHTS_FILE, is_checkpoint, load_weights, os_error_behind,
                                            read_model_config)
from model_foundry.cli.main import main
from model_foundry.errors import UserError
from model_foundry.models import BaseLanguageModel, TaskHeadConfig, TaskModel, create_model
from model_foundry.training.checkpoints import load_trainer_state
from model_foundry.training.transfer import load_backbone_weights
from tests.conftest import tiny_config

TINY = {"vocab_size": 40, "n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16, "dropout": 0.0}


def flat(text: str) -> str:
    """`text` without any whitespace: messages are wrapped at a fixed width, even inside a long path."""
    return "".join(text.split())


def classifier(arch: str = "bert") -> TaskModel:
    return TaskModel(arch, create_model(arch, **TINY).config,
                     TaskHeadConfig(task="sequence_classification", num_outputs=2, pooler="cls"))


# ---- model directories ------------------------------------------------------------------------------
def test_a_saved_model_stores_a_tied_weight_once_and_describes_itself(tmp_path):
    model = classifier()
    model.save_pretrained(tmp_path)
    meta = read_model_config(tmp_path)
    assert meta["architecture"] == "bert" and meta["task_head"]["num_outputs"] == 2 and meta["format_version"] == 1
    saved = safetensors.torch.load_file(tmp_path / WEIGHTS_FILE)
    lm = create_model("bert", **TINY)
    lm.save_pretrained(tmp_path / "lm")
    lm_saved = safetensors.torch.load_file(tmp_path / "lm" / WEIGHTS_FILE)
    assert "backbone.token_embedding.weight" in lm_saved and "mlm_head.decoder.weight" not in lm_saved
    reloaded = BaseLanguageModel.from_pretrained(tmp_path)
    assert type(reloaded) is TaskModel
    assert all(torch.equal(value, reloaded.state_dict()[name]) for name, value in saved.items())


def test_the_backbone_prefix_loads_only_the_backbone_and_reports_the_rest(tmp_path):
    source = create_model("bert", **TINY)
    source.save_pretrained(tmp_path)
    target = classifier()
    head_before = target.head.state_dict()
    report = load_weights(target, tmp_path, strict=True, prefix="backbone.")
    assert torch.equal(target.backbone.blocks[1].attn.qkv.weight, source.backbone.blocks[1].attn.qkv.weight)
    assert all(torch.equal(value, head_before[name]) for name, value in target.head.state_dict().items())
    assert report.left_out and all(name.startswith("mlm_head.") for name in report.left_out)
    assert report.missing == [] and report.loaded == len([k for k in target.state_dict() if k.startswith("backbone.")])


def test_strictness_names_the_missing_keys_and_the_setting_that_relaxes_it(tmp_path, capsys):
    create_model("bert", **TINY).save_pretrained(tmp_path)
    with pytest.raises(UserError) as caught:
        load_weights(classifier(), tmp_path, strict=True, relax_with="training.strict")
    message = " ".join(str(caught.value).split())
    assert "head.out_proj.weight" in message and "mlm_head.dense.weight" in message
    assert "set training.strict: false" in message
    report = load_weights(classifier(), tmp_path, strict=False)
    assert "head.out_proj.weight" in report.missing and "mlm_head.dense.weight" in report.unexpected
    assert "non-strictly" in capsys.readouterr().err


def test_a_damaged_weights_file_gives_one_message_whichever_loader_reads_it(tmp_path):
    classifier().save_pretrained(tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    loaders = {"from_pretrained": lambda: BaseLanguageModel.from_pretrained(tmp_path),
               "resume": lambda: load_weights(classifier(), tmp_path),
               "transfer": lambda: load_backbone_weights(classifier(), tmp_path, strict=True)}
    messages = {}
    for name, load in loaders.items():
        with pytest.raises(UserError) as caught:
            load()
        messages[name] = str(caught.value).split(" (")[0]
    assert set(messages.values()) == {f"{tmp_path / WEIGHTS_FILE} cannot be loaded: it is not a complete "
                                      "safetensors file"}, messages


# ---- the cause behind a failed write ----------------------------------------------------------------
class FullDisk:
    """A file that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def test_the_os_error_is_found_behind_torch_and_safetensors_failures(tmp_path):
    with open(tmp_path / "state.pt", "wb") as handle, pytest.raises(RuntimeError) as torch_failure:
        torch.save({"w": torch.zeros(1000)}, FullDisk(handle, 100))  # torch's own RuntimeError
    assert "inline_container" in str(torch_failure.value)
    assert os_error_behind(torch_failure.value) == errno.ENOSPC
    real_message = "Error while serializing: I/O error: Read-only file system (os error 30)"
    assert os_error_behind(SafetensorError(real_message)) == errno.EROFS
    assert os_error_behind(OSError(errno.EDQUOT, "quota")) == errno.EDQUOT
    assert os_error_behind(ValueError("a bug, not the disk")) is None


# ---- faults while a run writes a checkpoint ---------------------------------------------------------
def run_config(tiny_corpus, tmp_path) -> pathlib.Path:
    """A run that writes `last` at step 2 and again at step 4, its last step."""
    config = tiny_config(tiny_corpus, tmp_path / "experiments",
                         training={"max_steps": 4, "eval_interval": 2, "log_interval": 1, "warmup_steps": 1})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fail_state_write(monkeypatch, last: pathlib.Path) -> None:
    """Once `last` exists, its next trainer state hits a full disk (inside torch.save)."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if ".last.tmp" in getattr(f, "name", "") and last.exists():
            return real_save(obj, FullDisk(f, 4096), *args, **kwargs)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def fail_weights_write(monkeypatch, last: pathlib.Path) -> None:
    """Once `last` exists, its next weights hit a full disk (safetensors' own error, half a file left)."""
    real_save = safetensors.torch.save_model

    def save_model(model, filename, *args, **kwargs):
        if ".last.tmp" in filename and last.exists():
            pathlib.Path(filename).write_bytes(b"\0" * 1000)
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(model, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_model", save_model)


def fail_on_read_only(monkeypatch, last: pathlib.Path) -> None:
    """Once `last` exists, the file system refuses the next one's directory as a read-only one does."""
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.name == ".last.tmp" and last.exists():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)


@pytest.mark.parametrize("fault, cause", [(fail_state_write, "the disk is full"),
                                          (fail_weights_write, "the disk is full"),
                                          (fail_on_read_only, "the file system is read-only")])
def test_a_failed_checkpoint_write_is_one_paragraph_and_the_last_good_one_resumes(
        tiny_corpus, tmp_path, capsys, monkeypatch, fault, cause):
    config, out = run_config(tiny_corpus, tmp_path), tmp_path / "run"
    last = out / "checkpoints" / "last"
    with monkeypatch.context() as patch:
        fault(patch, last)
        code = main(["train", str(config), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    paragraph = err[err.index("error: "):]
    assert flat(f"Could not write checkpoint {last}: {cause}") in flat(paragraph)
    assert flat("--set training.resume=true") in flat(paragraph)
    assert not (out / "checkpoints" / ".last.tmp").exists()
    assert is_checkpoint(last) and load_trainer_state(last)["step"] == 2
    BaseLanguageModel.from_pretrained(last)
    assert main(["train", str(config), "--out", str(out), "--set", "training.resume=true"]) == 0
    assert "Resuming at step 2" in capsys.readouterr().err
    assert load_trainer_state(last)["step"] == 4


class Killed(BaseException):
    """Stands for SIGKILL: no `except Exception` sees it, so nothing is cleaned up."""


def test_a_kill_between_the_swaps_two_renames_is_recovered(tiny_corpus, tmp_path, capsys, monkeypatch):
    import model_foundry.checkpoint_files as files

    config, out = run_config(tiny_corpus, tmp_path), tmp_path / "run"
    root = out / "checkpoints"
    real_rename, swaps = os.rename, []

    def rename(source, target):
        if pathlib.Path(source).name == ".last.tmp":
            swaps.append(target)
            if len(swaps) > 1:  # the old `last` is already `.last.old`; the new one never arrives
                raise Killed()
        real_rename(source, target)

    with monkeypatch.context() as patch:
        patch.setattr(files.os, "rename", rename)
        with pytest.raises(Killed):
            model_foundry.train(str(config), out=out)
    assert not (root / "last").exists() and (root / ".last.old").is_dir()
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    # Every reader recovers it: a command that loads the run ...
    assert json.loads((root / ".last.old" / "model_config.json").read_text())["architecture"] == "gpt"
    model_foundry.load_model(copy, "last")
    assert is_checkpoint(copy / "checkpoints" / "last")
    # ... and the resumed run, which continues from the recovered step.
    capsys.readouterr()
    results = model_foundry.train(str(config), out=out, overrides=["training.resume=true"])
    assert "Resuming at step 2" in capsys.readouterr().err
    assert results["run"]["steps"] == 4 and load_trainer_state(root / "last")["step"] == 4
    assert not (root / ".last.old").exists()


def test_a_task_head_entry_that_does_not_fit_names_the_file_and_the_entry(tmp_path):
    model = classifier("gpt")
    model.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "model_config.json").read_text(encoding="utf-8"))
    meta["task_head"]["no_such_setting"] = 1
    (tmp_path / "model_config.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(UserError) as caught:
        BaseLanguageModel.from_pretrained(tmp_path)
    message = " ".join(str(caught.value).split())
    assert "model_config.json: 'task_head' does not describe a task head" in message
    assert "no_such_setting" in message
