"""The task registry: the embedded tasks always, GLUE and retrieval when their modules are installed.

``--tasks`` takes task names ("glue/rte", "embedded/code_search") and family names ("glue", "embedded",
"retrieval"), comma-separated or repeated.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from .base import RunArgs, TaskError, TaskSpec

__all__ = ["RunArgs", "TaskError", "TaskSpec", "UnknownTask", "all_tasks", "select_tasks", "FAMILIES", "DEFAULT_TASKS"]

FAMILIES = ("embedded", "glue", "retrieval")
DEFAULT_TASKS = ("embedded",)
# family -> (module under modernbert_pretrain.evaluate, factory function)
_OPTIONAL = {"glue": ("glue", "glue_tasks"), "retrieval": ("retrieval", "retrieval_tasks")}


class UnknownTask(ValueError):
    """A --tasks entry names no task or family; the message lists the valid ones."""


def _optional_family(family: str) -> tuple[list[TaskSpec], str | None]:
    """(tasks, None) or ([], why they are unavailable)."""
    module_name, factory = _OPTIONAL[family]
    try:
        module = importlib.import_module(f"..{module_name}", __package__)
    except ImportError as err:
        return [], f"the {family} tasks cannot be imported ({err})"
    try:
        return list(getattr(module, factory)()), None
    except (TaskError, ValueError) as err:  # e.g. an invalid settings YAML: reported when the family is selected
        return [], f"the {family} tasks cannot be set up: {err}"


def all_tasks() -> tuple[dict[str, TaskSpec], dict[str, str]]:
    """({name: task}, {family: why unavailable})."""
    from .embedded import embedded_tasks

    tasks = {t.name: t for t in embedded_tasks()}
    missing: dict[str, str] = {}
    for family in _OPTIONAL:
        found, why = _optional_family(family)
        if why:
            missing[family] = why
        for task in found:
            if task.name in tasks:
                raise ValueError(f"two tasks are named {task.name!r}")
            tasks[task.name] = task
    return tasks, missing


def select_tasks(requested: Iterable[str] | None) -> list[TaskSpec]:
    """Tasks for --tasks entries, in registry order, without duplicates."""
    tasks, missing = all_tasks()
    wanted: set[str] = set()
    for entry in requested or DEFAULT_TASKS:
        for name in (x.strip() for x in entry.split(",")):
            if not name:
                continue
            family = name.split("/", 1)[0]
            if family in missing:
                raise UnknownTask(f"--tasks {name}: {missing[family]}")
            matched = [t.name for t in tasks.values() if t.name == name or t.family == name]
            if not matched:
                families = sorted(set(FAMILIES) - set(missing))
                raise UnknownTask(f"--tasks {name}: no such task or family; choose from the families "
                                  f"{', '.join(families)} or the tasks {', '.join(tasks)}")
            wanted.update(matched)
    return [t for t in tasks.values() if t.name in wanted]
