"""Tasks: each objective (causal LM, masked LM, classification, ...) registered under its `task.type`.

Importing this package imports every module in it, so a new task is one new file here with
`@register_task("name")` on its class.
"""
import importlib
import pkgutil

from model_foundry.tasks.base import DatasetSplits, Task, metric_is_maximised
from model_foundry.tasks.registry import (TASKS, build_task, check_choices, check_compatibility, get_task,
                                         register_task)

for module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{module.name}")

__all__ = ["TASKS", "DatasetSplits", "Task", "build_task", "check_choices", "check_compatibility", "get_task",
           "metric_is_maximised", "register_task"]
