"""Tasks: each objective (causal LM, masked LM, classification, ...) registered under its `task.type`."""
from model_foundry.tasks import hybrid  # noqa: F401
from model_foundry.tasks import language_modeling  # noqa: F401  (registers causal_lm, masked_lm)
from model_foundry.tasks import replaced_token_detection  # noqa: F401
from model_foundry.tasks import sequence_tasks  # noqa: F401  (sequence_classification, sequence_scoring)
from model_foundry.tasks import token_classification  # noqa: F401
from model_foundry.tasks.base import DatasetSplits, Task, metric_is_maximised
from model_foundry.tasks.registry import TASKS, build_task, get_task, register_task

__all__ = ["TASKS", "DatasetSplits", "Task", "build_task", "get_task", "metric_is_maximised", "register_task"]
