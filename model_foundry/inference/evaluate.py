"""`foundry eval`: a trained run's metrics on its val or test split."""
from __future__ import annotations

from pathlib import Path

from model_foundry.config import load_config
from model_foundry.config.experiments import find_run
from model_foundry.data import BatchStream
from model_foundry.errors import UserError
from model_foundry.inference.loading import checkpoint_of, load_tokenizer
from model_foundry.tasks import build_task
from model_foundry.training.precision import resolve_device, resolve_precision
from model_foundry.training.run import cache_directory
from model_foundry.training.trainer import evaluate_stream


def evaluate_run(run: str | Path, split: str = "val", checkpoint: str = "best") -> dict:
    """Rebuild the run's task and data from its resolved config and evaluate one checkpoint."""
    from model_foundry.models import BaseLanguageModel

    run_dir = find_run(run)
    resolved = run_dir / "resolved_config.yaml"
    if not resolved.is_file():
        raise UserError(f"{run_dir} has no resolved_config.yaml, so it is not a Model Foundry run directory.")
    config = load_config(resolved).config
    task = build_task(config, load_tokenizer(run_dir))
    model = BaseLanguageModel.from_pretrained(checkpoint_of(run_dir, checkpoint))
    task.use_trained_model(model)
    dataset = getattr(task.build_datasets(cache_directory(config)), split)
    if dataset is None:
        raise UserError(f"Run {run_dir} has no {split} split; set data.{split}.path in its config "
                        "(or data.val_fraction for val).")
    training = config.training
    stream = BatchStream(dataset, training.batch_size, task.collator(), seed=config.experiment.seed,
                         shuffle=False, drop_last=False)
    device = resolve_device(training.device)
    return evaluate_stream(task, model.to(device), stream, device, resolve_precision(training.precision, device))
