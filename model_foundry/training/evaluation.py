"""Evaluation over a batch stream: one ordered pass of a split, as the trainer, `foundry eval` and
the final results evaluate it, whole or one process's share of its batches."""
from __future__ import annotations

import torch

from model_foundry.data import BatchStream
from model_foundry.tasks import Task
from model_foundry.tasks.base import move_to
from model_foundry.training.precision import autocast


def evaluate_stream(task: Task, model: torch.nn.Module, stream: BatchStream, device: torch.device,
                    precision: str, limit: int | None = None) -> dict:
    """The task's metrics over one ordered pass of `stream` (its first `limit` batches, or all)."""
    return task.metrics_from_totals(stream_totals(task, model, stream, device, precision, limit))


def stream_totals(task: Task, model: torch.nn.Module, stream: BatchStream, device: torch.device, precision: str,
                  limit: int | None = None, share: tuple[int, int] = (0, 1)) -> dict:
    """The task's evaluation totals over one ordered pass of `stream` (its first `limit` batches, or
    all); with `share` (rank, processes), over every processes-th batch from the rank-th on."""
    rank, processes = share
    batches = (move_to(b, device) for i, b in enumerate(stream.one_pass())
               if (limit is None or i < limit) and i % processes == rank)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        totals = task.evaluation_totals(model, batches, autocast(device, precision))
    model.train(was_training)
    return totals
