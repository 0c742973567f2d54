"""Runs every (checkpoint, task, grid point, seed) that the results file does not hold yet."""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import results as R
from .targets import ModelRef
from .tasks import RunArgs, TaskError, TaskSpec


class BusyError(RuntimeError):
    """Another evaluation holds the output folder."""


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Exclusive use of the output folder for one process: two runs appending to one results file, or
    removing each other's scratch folders, is exactly what this prevents."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise BusyError(f"another evaluation is writing to {out} (it holds {out / '.lock'}); wait for it "
                            "or pass another --out") from err
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Plan:
    models: list[ModelRef]
    tasks: list[TaskSpec]
    seeds: list[int]
    out: Path
    data_dir: str | None = None
    device: str = "cpu"
    force: bool = False

    def points(self) -> Iterator[tuple[ModelRef, TaskSpec, dict, int]]:
        for model in self.models:
            for task in self.tasks:
                for hparams in task.grid:
                    for seed in self.seeds:
                        yield model, task, dict(hparams), seed


def _row(model: ModelRef, task: TaskSpec, hparams: dict, seed: int, metrics: dict, seconds: float,
         device: str) -> dict:
    return {"model": str(model.folder), "checkpoint": model.name, "phase": model.phase, "step": model.step,
            "tokens_seen": model.tokens_seen, "total_tokens_seen": model.total_tokens_seen, "task": task.name,
            "family": task.family, "metric": task.metric,
            "value": float(metrics[task.metric]), "higher_is_better": task.higher_is_better,
            "reference": task.reference, "metrics": {k: float(v) for k, v in metrics.items()}, "seed": seed,
            "hparams": hparams, "seconds": round(seconds, 2), "device": device,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def run_plan(plan: Plan) -> list[dict]:
    """Runs the missing rows (all of them with force) and returns the plan's rows, old and new."""
    with locked(plan.out):
        store = R.ResultsFile(plan.out / R.RESULTS_NAME)
        scratch = plan.out / ".work"
        points = list(plan.points())
        todo = [p for p in points if plan.force or R.row_key(str(p[0].folder), p[1].name, p[3], p[2]) not in store]
        if len(todo) < len(points):
            print(f"{len(points) - len(todo)} of {len(points)} rows already in {store.path}; skipped "
                  "(--force redoes them)", file=sys.stderr)
        for n, (model, task, hparams, seed) in enumerate(todo, start=1):
            scratch.mkdir(exist_ok=True)
            work = tempfile.mkdtemp(prefix="run-", dir=scratch)
            start = time.perf_counter()
            try:
                metrics = task.run(RunArgs(model_dir=str(model.folder), seed=seed, hparams=hparams,
                                           data_dir=plan.data_dir, work_dir=work, device=plan.device))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            if task.metric not in metrics:
                raise TaskError(f"task {task.name} returned no {task.metric!r} (got {sorted(metrics)})")
            row = _row(model, task, hparams, seed, metrics, time.perf_counter() - start, plan.device)
            store.append(row)
            hp = " ".join(f"{k}={v}" for k, v in hparams.items())
            print(f"[{n}/{len(todo)}] {model.name} {task.name} seed={seed} {hp}: {task.metric} {row['value']:.4f} "
                  f"({row['seconds']:.0f} s)", file=sys.stderr)
        if scratch.is_dir() and not os.listdir(scratch):
            scratch.rmdir()
        return [store.rows[R.row_key(str(m.folder), t.name, s, h)] for m, t, h, s in points]


def report(rows: list[dict], out: Path) -> str:
    """Writes summary.md (and the plot when several checkpoints were scored); returns the table."""
    summary = R.summarize(rows)
    table = R.markdown_table(summary)
    R.write_atomic(out / R.SUMMARY_NAME, table.encode("utf-8"))
    if R.plot(summary, out / R.PLOT_NAME):
        print(f"plot: {out / R.PLOT_NAME}", file=sys.stderr)
    return table
