"""The contract between the evaluation runner and a task family (GLUE, retrieval, embedded tasks).

A task family exposes ``TaskSpec`` objects. The runner expands ``grid`` x seeds, calls ``run`` once per point
and writes one JSON line per call; it never looks inside a task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunArgs:
    """Everything one (checkpoint, task, seed, hyper-parameter point) run gets."""

    model_dir: str
    """An exported Hugging Face folder (config.json, model.safetensors, tokenizer files)."""
    seed: int
    """Seeds every random choice of the run (fine-tuning order, head init, sampling)."""
    hparams: dict
    """One point of the task's grid, e.g. {"lr": 3e-5}; {} for tasks without a grid."""
    data_dir: str | None
    """A local data folder given with --data-dir, or None for the task's default source."""
    work_dir: str
    """A scratch folder owned by this run (fine-tuning outputs); removed by the runner afterwards."""
    device: str = "cpu"
    """torch device string."""


class TaskError(Exception):
    """A task cannot run with what it was given (missing data, unknown dataset): one line for the user."""


@dataclass(frozen=True)
class TaskSpec:
    """One evaluation task."""

    name: str
    """Unique name used on the command line and in output rows, e.g. "glue/rte", "code_search"."""
    family: str
    """"glue", "retrieval" or "embedded"."""
    metric: str
    """The headline metric's key in ``run``'s result (e.g. "mcc", "accuracy", "ndcg@10")."""
    run: Callable[[RunArgs], dict[str, float]]
    """Runs once; returns every metric it computed, the headline one included."""
    grid: tuple[dict, ...] = field(default=({},))
    """Hyper-parameter points; the runner calls ``run`` for each point x seed."""
    higher_is_better: bool = True
    reference: str | None = None
    """Optional key in ``run``'s result of a model-free baseline on the same examples and metric (e.g. a
    bag-of-words score), shown beside the model's score in the summary table."""
