"""`foundry eval`: a trained run's metrics on its val or test split."""
from __future__ import annotations

from pathlib import Path

from model_foundry.data import BatchStream
from model_foundry.errors import UserError
from model_foundry.inference.loading import rebuild_run
from model_foundry.training.precision import resolve_device, resolve_precision
from model_foundry.training.run import cache_directory
from model_foundry.training.evaluation import evaluate_stream


def evaluate_run(run: str | Path, split: str = "val", checkpoint: str = "best") -> dict:
    """Rebuild the run's task and data from its resolved config and evaluate one checkpoint."""
    rebuilt = rebuild_run(run, checkpoint)
    config, task = rebuilt.config, rebuilt.task
    dataset = getattr(task.build_datasets(cache_directory(config)), split)
    if dataset is None:
        raise UserError(f"Run {rebuilt.directory} has no {split} split; set data.{split}.path in its config "
                        "(or data.val_fraction for val).")
    training = config.training
    stream = BatchStream(dataset, training.batch_size, task.collator(), seed=config.experiment.seed,
                         shuffle=False, drop_last=False)
    device = resolve_device(training.device)
    return evaluate_stream(task, rebuilt.model.to(device), stream, device,
                           resolve_precision(training.precision, device))
