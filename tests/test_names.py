"""One meaning per name: `experiment.kind` is `--kind` / `kind=` (older spellings -m, --mode, mode=
still work), each flag of `foundry new` means one thing (the older -p / -f still work where they are
unambiguous), one function says which process writes, `ModelOutput` has no `attentions`, and
alternative key names of the config are aliases."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

import model_foundry
from model_foundry.cli import commands
from model_foundry.cli.main import build_parser, main
from model_foundry.config import load_config
from model_foundry.config.loading import alternative_key_names
from model_foundry.errors import WORKER_ERRORS_ENV, UserError, report_user_error
from model_foundry.ranks import is_writer, process_rank
from model_foundry.training.distributed import Workers
from model_foundry.training.ignored_keys import warn

PACKAGE = Path(model_foundry.__file__).parent


def one_line(text: str) -> str:
    """Messages are wrapped at a fixed width in places; compare them as one line."""
    return " ".join(text.split())


# ---- experiment.kind ------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--kind", "-m", "--mode"])
def test_train_takes_the_kind_under_its_name_and_its_older_spellings(flag, tmp_path):
    for kind in ("pretraining", "finetuning"):
        (tmp_path / kind / "both").mkdir(parents=True)
        (tmp_path / kind / "both" / "config.yaml").write_text("{}\n")
    args = build_parser().parse_args(["train", "both", flag, "finetuning", "--root", str(tmp_path)])
    assert args.kind == "finetuning"
    assert commands.config_path(args.target, args.kind, args.root) == tmp_path / "finetuning" / "both" / "config.yaml"


def test_a_name_in_both_kinds_asks_for_kind(tmp_path, capsys):
    for kind in ("pretraining", "finetuning"):
        (tmp_path / kind / "both").mkdir(parents=True)
        (tmp_path / kind / "both" / "config.yaml").write_text("{}\n")
    assert main(["train", "both", "--root", str(tmp_path)]) == 2
    assert "choose one with --kind pretraining or --kind finetuning" in one_line(capsys.readouterr().err)


def test_workers_get_the_kind_as_kind(tmp_path, monkeypatch):
    """`--nproc` passes the kind on to every worker under its own name, which the worker's parser reads back."""
    from model_foundry.training import launch

    launched = []
    monkeypatch.setattr(launch, "launch_workers", lambda nproc, worker_args: launched.append(worker_args) or 0)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"training": {"batch_size": 4}}))
    args = build_parser().parse_args(["train", str(path), "-m", "finetuning", "--nproc", "2"])
    assert commands.train(args) == 0
    worker_args = launched[0]
    assert "--kind" in worker_args and "--mode" not in worker_args and "-m" not in worker_args
    assert build_parser().parse_args(worker_args).kind == "finetuning"


def test_python_train_takes_kind_and_mode_as_its_deprecated_alias(monkeypatch):
    from model_foundry.training import run

    kinds = []
    monkeypatch.setattr(run, "train", lambda config, overrides=None, out=None, kind=None: kinds.append(kind) or {})
    model_foundry.train("c.yaml", kind="finetuning")
    with pytest.warns(DeprecationWarning, match="kind="):
        model_foundry.train("c.yaml", mode="finetuning")
    model_foundry.train("c.yaml", None, None, "finetuning")  # the fourth positional argument, as before
    model_foundry.train("c.yaml")
    assert kinds == ["finetuning", "finetuning", "finetuning", None]
    with pytest.raises(TypeError, match="not both"):
        model_foundry.train("c.yaml", kind="finetuning", mode="pretraining")


@pytest.mark.parametrize("entry", ["python", "cli"])
def test_mode_still_chooses_the_run_directory(entry, tiny_corpus, tmp_path, capsys):
    """End to end through the older spellings (`mode=`, `--mode`): a config of kind pretraining,
    trained as `finetuning`, lands under finetuning/."""
    from tests.conftest import tiny_config

    config = tiny_config(tiny_corpus, tmp_path, training={"max_steps": 2, "eval_interval": 2})
    if entry == "python":
        with pytest.warns(DeprecationWarning):
            model_foundry.train(config, mode="finetuning")
    else:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        assert main(["train", str(path), "--mode", "finetuning"]) == 0, capsys.readouterr().err
    run_dir = tmp_path / "finetuning" / "tiny_gpt"
    resolved = yaml.safe_load((run_dir / "resolved_config.yaml").read_text())
    assert resolved["experiment"]["kind"] == "finetuning" and (run_dir / "results.json").is_file()
    assert not (tmp_path / "pretraining").exists()


# ---- foundry new: one meaning per flag ------------------------------------------------------------------
def request(*argv: str) -> commands.NewExperiment:
    return commands.new_experiment_request(build_parser().parse_args(["new", *argv]))


@pytest.mark.parametrize("argv, expected", [
    (["pretraining", "a"], ("pretraining", "a", None)),
    (["-p", "a"], ("pretraining", "a", None)),
    (["--pretraining", "a", "-rp", "old"], ("pretraining", "a", None)),
    (["finetuning", "b", "--from", "a"], ("finetuning", "b", "a")),
    (["-f", "b", "-p", "a"], ("finetuning", "b", "a")),  # older spelling: -p is the run to start from with -f
    (["-f", "b", "--from", "a"], ("finetuning", "b", "a")),
])
def test_new_reads_its_own_and_seed_spellings_alike(argv, expected):
    assert dataclasses.astuple(request(*argv)) == expected


@pytest.mark.parametrize("argv, words", [
    (["finetuning", "b", "-p", "a"], ["-p is the older spelling", "--from PRETRAIN"]),
    (["pretraining", "a", "-p", "c"], ["both name the experiment", "foundry new pretraining NAME"]),
    (["pretraining", "a", "-f", "b"], ["-f is the older spelling"]),
    (["-f", "b", "-p", "a", "--from", "c"], ["-p a and --from c both name the pretraining run", "give one"]),
    (["-p", "a", "--from", "c"], ["--from c names the run a finetuning experiment starts from", "--resume-from c"]),
    (["pretraining", "a", "--from", "c"], ["--from c names the run a finetuning experiment starts from"]),
    (["finetuning", "b"], ["foundry new finetuning b --from PRETRAIN"]),
    (["-f", "b"], ["foundry new finetuning b --from PRETRAIN"]),
    (["finetuning", "b", "--from", "a", "-rp", "c"], ["--resume-from clones a pretraining experiment"]),
    ([], ["Name the experiment"]),
])
def test_new_refuses_flags_whose_meaning_is_unclear(argv, words):
    with pytest.raises(UserError) as error:
        request(*argv)
    assert all(word in one_line(str(error.value)) for word in words), str(error.value)


def test_a_refused_new_writes_nothing_and_exits_2(tmp_path, capsys):
    assert main(["new", "finetuning", "b", "-p", "a", "--root", str(tmp_path / "experiments")]) == 2
    assert "the older spelling" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "experiments").exists()


def test_new_pretraining_by_either_spelling_writes_the_same_config(tmp_path, capsys):
    assert main(["new", "pretraining", "same", "--arch", "bert", "--root", str(tmp_path / "one")]) == 0
    assert "foundry train same --kind pretraining" in capsys.readouterr().out
    assert main(["new", "-p", "same", "--arch", "bert", "--root", str(tmp_path / "two")]) == 0
    one = (tmp_path / "one" / "pretraining" / "same" / "config.yaml").read_text()
    two = (tmp_path / "two" / "pretraining" / "same" / "config.yaml").read_text()
    assert one == two.replace((tmp_path / "two").as_posix(), (tmp_path / "one").as_posix())
    assert "--kind pretraining" in one.splitlines()[0]


# ---- which process writes -------------------------------------------------------------------------------
def test_one_function_decides_the_writer(monkeypatch, capsys):
    monkeypatch.delenv("RANK", raising=False)
    assert process_rank() == 0 and is_writer()  # no launcher: the one process writes
    monkeypatch.setenv("RANK", "1")
    assert process_rank() == 1 and not is_writer()
    warn("said by rank 1 only")
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    warn("said by rank 0")
    assert capsys.readouterr().err == "warning: said by rank 0\n"
    assert Workers(rank=0, world_size=2).is_writer and not Workers(rank=1, world_size=2).is_writer


def test_a_users_mistake_is_printed_by_the_writer_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(WORKER_ERRORS_ENV, str(tmp_path))
    for rank in ("1", "0"):
        monkeypatch.setenv("RANK", rank)
        report_user_error(f"error: seen by {rank}")
    assert capsys.readouterr().err == "error: seen by 0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.txt", "rank1.txt"]


def test_only_the_ranks_module_reads_rank():
    readers = [path.relative_to(PACKAGE).as_posix() for path in sorted(PACKAGE.rglob("*.py"))
               if re.search(r"""["']RANK["']""", path.read_text(encoding="utf-8"))]
    assert readers == ["ranks.py"]


# ---- ModelOutput -----------------------------------------------------------------------------------------
def test_model_outputs_have_no_attentions():
    import torch

    from model_foundry.models import ModelOutput, create_model
    from model_foundry.models.electra import ElectraOutput
    from model_foundry.models.hybrid import HybridOutput

    assert [f.name for f in dataclasses.fields(ModelOutput)] == ["loss", "logits", "hidden_states"]
    assert all("attentions" not in {f.name for f in dataclasses.fields(cls)} for cls in (ElectraOutput, HybridOutput))
    for arch in ("gpt", "bert", "lstm"):
        settings = {"vocab_size": 30, "n_layer": 1, "n_embd": 16, "block_size": 8}
        model = create_model(arch, **settings, **({} if arch == "lstm" else {"n_head": 2}))
        output = model(torch.randint(0, 30, (2, 8)))
        assert output.logits.shape == (2, 8, 30) and not hasattr(output, "attentions")


# ---- alternative key names --------------------------------------------------------------------------------
def test_alternative_key_names_load_the_same_config():
    old = load_config({"training": {"max_iters": 7, "lr": 0.01, "warmup_iters": 2},
                       "model": {"torch_dtype": "bfloat16"}, "tokenizer": {"tokenizer_type": "char"},
                       "data": {"train": {"dataset_path": "c.txt"}}}).config
    new = load_config({"training": {"max_steps": 7, "learning_rate": 0.01, "warmup_steps": 2},
                       "model": {"dtype": "bfloat16"}, "tokenizer": {"type": "char"},
                       "data": {"train": {"path": "c.txt"}}}).config
    assert old.model_dump() == new.model_dump()
    assert load_config({}, ["training.lr=0.02"]).config.training.learning_rate == 0.02
    assert alternative_key_names(["training"]) == {"max_iters": "max_steps", "lr": "learning_rate",
                                                   "warmup_iters": "warmup_steps"}


def test_a_key_given_under_both_names_is_named_as_one_key(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("training:\n  learning_rate: 0.01\n  lr: 0.1\n")
    with pytest.raises(UserError) as error:
        load_config(path)
    message = one_line(str(error.value))
    assert "line 3: 'training.lr' and 'training.learning_rate' are the same key" in message
    assert "'lr' is an alternative name of 'learning_rate'" in message and "unknown key" not in message
