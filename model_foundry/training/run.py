"""`train()`: everything `foundry train` does, from a config to a finished run directory.

config -> run directory -> tokenizer -> task (model, data) -> trainer -> results.json and plots.

Every rule about what goes with what (`tasks.check_compatibility`) runs before the run directory
is touched, so a refused config leaves nothing behind. Under torchrun every worker runs this too:
rank 0 locks the run directory (`run_lock`) for the whole run, prepares it, the tokenizer and the
token cache before the others read them, and alone writes what the run leaves behind.
"""
from __future__ import annotations

import contextlib
import random
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_foundry.checkpoint_files import load_weights
from model_foundry.config import FoundryConfig, load_config
from model_foundry.config.experiments import locate_checkpoint, run_directory
from model_foundry.config.loading import save_yaml
from model_foundry.errors import UserError
from model_foundry.models.lora import apply_lora
from model_foundry.tasks import build_task, check_compatibility
from model_foundry.tasks.registry import architecture_of
from model_foundry.tokenizer import FoundryTokenizer, HFTokenizer, load_any_tokenizer, train_tokenizer
from model_foundry.training import checkpoints as ckpt
from model_foundry.training.distributed import Workers, process_group
from model_foundry.training.embedding_init import init_embeddings_from_corpus
from model_foundry.training.ignored_keys import ignored_start_keys, warn
from model_foundry.training.metrics_log import MetricsLogger
from model_foundry.training.plots import plot_runs
from model_foundry.training.results import write_results, write_run_info
from model_foundry.training.run_lock import RunDirectoryLock, lock_run_directory
from model_foundry.training.step_state import TrainingInterrupted
from model_foundry.training.trainer import Trainer
from model_foundry.training.transfer import load_backbone_weights, reinit_last_layers


def train(config_or_path: str | Path | dict | FoundryConfig, overrides: dict[str, Any] | list[str] | None = None,
          out: str | Path | None = None, kind: str | None = None) -> dict:
    """Run a training job and return its results dict (the content of results.json)."""
    return run_training(config_or_path, overrides, out, kind)[0]


def run_training(config_or_path: str | Path | dict | FoundryConfig,
                 overrides: dict[str, Any] | list[str] | None = None, out: str | Path | None = None,
                 kind: str | None = None) -> tuple[dict, Path]:
    """`train`, also returning the run directory (the CLI prints it)."""
    override_map = dict(overrides) if isinstance(overrides, dict) else list(overrides or [])
    if kind is not None:
        override_map = add_override(override_map, "experiment.kind", kind)
    loaded = load_config(config_or_path, override_map)
    config = resolved_config(loaded.config)
    check_compatibility(config)
    run_dir = run_directory(config, out)
    with process_group(config.training.device, clean_exits=(TrainingInterrupted,)) as workers:
        return train_in(run_dir, config, loaded.path, workers), run_dir


def train_in(run_dir: Path, config: FoundryConfig, config_path: Path | None, workers: Workers) -> dict:
    """Train `config` in `run_dir` with these workers (one process: `Workers()`); returns the results.

    Rank 0 holds the run directory's lock until the run ends, so a second writer is refused.
    """
    with workers.rank_zero_first(lambda: lock_run(run_dir), contextlib.nullcontext):
        return train_locked(run_dir, config, config_path, workers)


def train_locked(run_dir: Path, config: FoundryConfig, config_path: Path | None, workers: Workers) -> dict:
    """`train_in`, once rank 0 holds the run directory."""
    run_info = workers.rank_zero_first(lambda: start_run_directory(run_dir, config, config_path), lambda: None)
    seed_everything(config.experiment.seed)
    trainer = build_trainer(config, run_dir, workers)
    logger = open_logger(config, run_dir, workers.is_writer)
    logger.resume_at(trainer.counters.step)
    try:
        if trainer.counters.step < trainer.total_steps:
            trainer.fit(logger, label=config.experiment.name)
        elif workers.is_writer:
            print(f"max_steps ({trainer.total_steps}) already reached: evaluating only.", file=sys.stderr)
        results = write_results(trainer, logger)
    finally:
        logger.close()
    if workers.is_writer:
        run_info["hardware"].update(device=str(trainer.device), precision=trainer.precision,
                                    processes=workers.world_size)
        write_run_info(run_dir, config, started=False, previous=run_info)
        plot_run_quietly(run_dir)
    return results


@contextlib.contextmanager
def run_directory_errors(run_dir: Path) -> Iterator[None]:
    """Report a file system that refuses the run directory (read-only, full, not permitted) as the
    user's problem it is, in one paragraph, rather than as a traceback."""
    try:
        yield
    except OSError as error:
        where = f" ({error.filename})" if error.filename and str(error.filename) != str(run_dir) else ""
        raise UserError(f"Cannot write the run directory {run_dir}: {error.strerror or error}{where}. Choose a "
                        "writable place with --out or experiment.output_dir, or make room there.") from None


def lock_run(run_dir: Path) -> RunDirectoryLock:
    """Create and lock the run directory for this process (see `run_lock`)."""
    with run_directory_errors(run_dir):
        return lock_run_directory(run_dir)


def start_run_directory(run_dir: Path, config: FoundryConfig, config_path: Path | None) -> dict:
    """Prepare the run directory and write the run.json of a starting run; returns its content."""
    with run_directory_errors(run_dir):
        prepare_run_directory(run_dir, config, config_path)
        return write_run_info(run_dir, config, started=True)


def open_logger(config: FoundryConfig, run_dir: Path, writer: bool) -> MetricsLogger:
    """The run's metric logs; a process other than rank 0 gets one that writes nothing."""
    logging_cfg = config.logging
    return MetricsLogger(run_dir, csv_enabled=logging_cfg.csv and writer,
                         tensorboard=logging_cfg.tensorboard and writer, wandb=logging_cfg.wandb and writer,
                         wandb_mode=logging_cfg.wandb_mode, project=logging_cfg.project,
                         run_name=config.experiment.name, config=config.model_dump(mode="json"))


def build_trainer(config: FoundryConfig, run_dir: Path, workers: Workers = Workers()) -> Trainer:
    """Tokenizer, task, model and data for a run, with its checkpoint restored when resuming.

    Rank 0 chooses (maybe trains) the tokenizer and fills the token cache first; the other workers
    then read both, so no two processes write the same file.
    """
    tokenizer = workers.rank_zero_first(lambda: choose_tokenizer(config, run_dir),
                                        lambda: load_any_tokenizer(run_dir / "tokenizer"))
    task = build_task(config, tokenizer)
    splits = workers.rank_zero_first(lambda: task.build_datasets(cache_directory(config)))
    model = task.build_model(splits)
    start_from = checkpoint_to_start_from(config, run_dir)
    for message in ignored_start_keys(config):
        warn(message)
    if config.model.init_embeddings == "ppmi" and start_from is None:  # a resumed run keeps its trained ones
        init_embeddings_from_corpus(model, config, tokenizer, task)
    if (config.transfer.init_from_checkpoint and config.transfer.load_weights
            and (start_from is None or not start_from.full_state)):
        load_backbone_weights(model, init_checkpoint(config), strict=config.transfer.strict)
    if config.transfer.reinit_n_layers:
        reinit_last_layers(model, config.transfer.reinit_n_layers)
    if config.lora.enabled:  # before resuming: a LoRA checkpoint holds the adapted model's weights
        model = apply_lora(model, config.lora)
    if start_from is not None:
        load_weights(model, start_from.path, strict=config.training.strict, relax_with="training.strict")
    trainer = Trainer(config, model, task, splits, run_dir, workers)
    workers.seed_dropout(config.experiment.seed)
    if start_from is not None and start_from.full_state:
        trainer.load_state_dict(ckpt.load_trainer_state(start_from.path))
        if workers.is_writer:
            print(f"Resuming at step {trainer.counters.step} from {start_from.path}.", file=sys.stderr)
    return trainer


def add_override(overrides: dict | list, key: str, value: str) -> dict | list:
    if isinstance(overrides, dict):
        return {key: value, **overrides}
    return [f"{key}={value}", *overrides]


def absolute_paths(config: FoundryConfig) -> FoundryConfig:
    """A copy with every path made absolute against the working directory (for resolved_config.yaml)."""
    def absolute(value):
        if value is None:
            return None
        if isinstance(value, list):
            return [absolute(v) for v in value]
        return str(Path(value).expanduser().absolute())

    config = config.model_copy(deep=True)
    config.experiment.output_dir = absolute(config.experiment.output_dir)
    config.tokenizer.path = absolute(config.tokenizer.path)
    for split in (config.data.train, config.data.val, config.data.test):
        split.path = absolute(split.path)
    config.data.cache_dir = absolute(config.data.cache_dir)
    config.training.resume_from = absolute(config.training.resume_from)
    hf_model = config.model.hf_name_or_path
    if hf_model and Path(hf_model).expanduser().exists():  # a local directory, not a hub name
        config.model.hf_name_or_path = absolute(hf_model)
    return config


def resolved_config(config: FoundryConfig) -> FoundryConfig:
    """What `resolved_config.yaml` records: the user's config with absolute paths and the architecture
    the run really trains (`architecture_of`), as a new object."""
    absolute = absolute_paths(config)
    model = absolute.model.model_copy(update={"architecture": architecture_of(absolute)})
    model.model_fields_set.add("architecture")
    return absolute.model_copy(update={"model": model})


def init_checkpoint(config: FoundryConfig) -> Path:
    return locate_checkpoint(config.transfer.init_from_checkpoint, "transfer.init_from_checkpoint")


def prepare_run_directory(run_dir: Path, config: FoundryConfig, config_path: Path | None) -> None:
    """Refuse to overwrite a run's checkpoints unless resuming; copy the user's config in."""
    checkpoint_root = run_dir / "checkpoints"
    ckpt.recover(checkpoint_root / "last")
    has_checkpoints = checkpoint_root.is_dir() and any(ckpt.is_checkpoint(p) for p in checkpoint_root.iterdir())
    if has_checkpoints and not config.training.resume:
        raise UserError(f"Run directory {run_dir} already holds checkpoints. To continue that run, pass "
                        "--set training.resume=true; to start a new one, choose another experiment.name or "
                        "--out. Nothing was changed.")
    run_dir.mkdir(parents=True, exist_ok=True)
    user_config = run_dir / "config.yaml"
    if config_path is not None and not user_config.exists():
        shutil.copyfile(config_path, user_config)
    save_yaml(config.model_dump(mode="json"), run_dir / "resolved_config.yaml")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def choose_tokenizer(config: FoundryConfig, run_dir: Path) -> FoundryTokenizer:
    """The run's tokenizer, saved into `run_dir/tokenizer` for eval, predict and export. The first that applies:

    1. `model.architecture: hf`: the Hugging Face model's own tokenizer;
    2. `tokenizer.path`: that tokenizer, always (an explicit choice wins);
    3. resuming this run (`training.resume`): the tokenizer the run already has;
    4. `transfer.init_from_checkpoint`: the tokenizer of the run the backbone comes from;
    5. `training.resume_from`: the tokenizer of the run that checkpoint comes from;
    6. otherwise a new `tokenizer.type` tokenizer trained on `data.train.path`.

    A run directory's old tokenizer is used only to resume (3): a fresh run in it gets a new one,
    so an edited `tokenizer.type` takes effect.
    """
    own = run_dir / "tokenizer"
    tokenizer = (configured_tokenizer(config, own) or source_run_tokenizer(config)
                 or train_new_tokenizer(config))
    tokenizer.save(own)
    return tokenizer


def configured_tokenizer(config: FoundryConfig, own: Path) -> FoundryTokenizer | None:
    """Rules 1-3 of `choose_tokenizer`."""
    if config.model.architecture == "hf":
        if (own / "tokenizer.json").is_file() and config.training.resume:
            return load_any_tokenizer(own)
        return HFTokenizer.load(config.model.hf_name_or_path, config.model.trust_remote_code)
    if config.tokenizer.path is not None:
        return load_any_tokenizer(config.tokenizer.path)
    if config.training.resume and (own / "tokenizer.json").is_file():
        return load_any_tokenizer(own)
    return None


def source_run_tokenizer(config: FoundryConfig) -> FoundryTokenizer | None:
    """Rules 4-5 of `choose_tokenizer`: the tokenizer beside the checkpoint a run starts from."""
    if config.transfer.init_from_checkpoint:
        checkpoint = init_checkpoint(config)
    elif config.training.resume_from:
        checkpoint = locate_checkpoint(config.training.resume_from, "training.resume_from", prefer=("last",))
    else:
        return None
    for candidate in (checkpoint.parent.parent / "tokenizer", checkpoint.parent / "tokenizer"):
        if (candidate / "tokenizer.json").is_file():
            return load_any_tokenizer(candidate)
    return None


def train_new_tokenizer(config: FoundryConfig) -> FoundryTokenizer:
    from model_foundry.data import guess_format, iter_texts, resolve_paths

    data = config.data
    if data.train.path is None:
        raise UserError("Neither tokenizer.path nor data.train.path is set, so there is no tokenizer and "
                        "nothing to train one on; set one of them.")
    paths = resolve_paths(data.train.path, "data.train.path")
    fmt = data.format or guess_format(paths[0])
    if fmt == "pt":
        raise UserError("data.train.path holds already tokenized .pt tensors; set tokenizer.path to the "
                        "tokenizer that made them.")
    tok = config.tokenizer
    print(f"Training a {tok.type} tokenizer (vocab {tok.vocab_size}) on {len(paths)} file(s)...", file=sys.stderr)
    if fmt == "text":
        return train_tokenizer(tok.type, tok.vocab_size, files=paths, min_frequency=tok.min_frequency,
                               lowercase=tok.lowercase)
    # A sentence pair's second text is input too: its characters and words must not become [UNK].
    columns = [data.text_column, *([data.text_pair_column] if data.text_pair_column else [])]
    texts = (text for path in paths for column in columns for text in iter_texts(path, fmt, column))
    return train_tokenizer(tok.type, tok.vocab_size, texts=texts, min_frequency=tok.min_frequency,
                           lowercase=tok.lowercase)


def cache_directory(config: FoundryConfig) -> Path:
    if config.data.cache_dir:
        return Path(config.data.cache_dir)
    return Path(config.experiment.output_dir) / ".cache" / "tokens"


class StartPoint:
    def __init__(self, path: Path, full_state: bool):
        self.path, self.full_state = path, full_state


def checkpoint_to_start_from(config: FoundryConfig, run_dir: Path) -> StartPoint | None:
    """`resume: true` continues this run's `last`; else `resume_from` starts from another checkpoint."""
    training = config.training
    last = run_dir / "checkpoints" / "last"
    if training.resume:
        if ckpt.is_checkpoint(last):
            return StartPoint(last, full_state=True)
        print(f"training.resume is true but {last} does not exist yet: starting fresh.", file=sys.stderr)
    if training.resume_from:
        source = locate_checkpoint(training.resume_from, "training.resume_from", prefer=("last",))
        return StartPoint(source, full_state=not training.load_only_model_state)
    return None


def plot_run_quietly(run_dir: Path) -> None:
    """Curves for the run; a plotting problem must not fail a finished training run."""
    try:
        plot_runs([run_dir], run_dir / "plots" / "loss.png")
    except Exception as exc:  # plotting is a convenience; the run's results are already written
        print(f"Could not write plots: {exc}", file=sys.stderr)
