"""The results file (one JSON line per checkpoint x task x seed x grid point), its summary table and plot.

Rows are appended and fsynced one at a time, so a crash loses at most the row being written; a partial last
line left by such a crash is dropped (and said so) the next time the file is opened. When a row is redone
(--force) the later line wins.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from .targets import trajectory_tokens

RESULTS_NAME = "results.jsonl"
SUMMARY_NAME = "summary.md"
PLOT_NAME = "scores_vs_tokens.png"


def row_key(model: str, task: str, seed: int, hparams: dict) -> tuple:
    return (model, task, int(seed), json.dumps(hparams, sort_keys=True))


def key_of(row: dict) -> tuple:
    return row_key(row["model"], row["task"], row["seed"], row["hparams"])


_ROW_TYPES = {"model": str, "task": str, "checkpoint": str, "metric": str, "hparams": dict, "metrics": dict}


def row_problem(row) -> str | None:
    """What makes a parsed line unusable as a row (None when it is fine): the summary and the skip logic rely on
    these fields and types."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    for name, kind in _ROW_TYPES.items():
        if not isinstance(row.get(name), kind):
            return f"{name!r} is {row.get(name)!r}, expected a {kind.__name__}"
    if not _is_int(row.get("seed")):
        return f"'seed' is {row.get('seed')!r}, expected an integer"
    if not _is_number(row.get("value")):
        return f"'value' is {row.get('value')!r}, expected a number"
    bad = sorted(k for k, v in row["metrics"].items() if not _is_number(v))
    if bad:
        return f"metrics {bad} are not numbers"
    for name in ("step", "tokens_seen", "total_tokens_seen"):
        if row.get(name) is not None and not _is_int(row[name]):
            return f"{name!r} is {row[name]!r}, expected an integer or null"
    missing = [name for name in ("phase", "step", "tokens_seen") if name not in row]
    return f"no {missing}" if missing else None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ResultsFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[tuple, dict] = {}
        if path.is_file():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        if tail.strip():
            # no newline at the end: the last write was cut off
            print(f"{self.path}: dropping a partial last line left by an interrupted run ({len(tail)} bytes)",
                  file=sys.stderr)
            with open(self.path, "r+b") as f:
                f.truncate(len(data) - len(tail))
                os.fsync(f.fileno())
        for n, line in enumerate(complete, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                problem = row_problem(row)
            except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                problem = f"not JSON: {err}"
            if problem:
                print(f"{self.path}:{n}: unreadable line ignored ({problem}); it will be redone if selected",
                      file=sys.stderr)
                continue
            self.rows[key_of(row)] = row

    def __contains__(self, key: tuple) -> bool:
        return key in self.rows

    def append(self, row: dict) -> None:
        line = (json.dumps(row, sort_keys=True, default=str) + "\n").encode("utf-8")
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.rows[key_of(row)] = row


def _umask_mode(path: str) -> None:
    """mkstemp creates its file 0600; give it the mode the umask gives any other new file (as exports do)."""
    from ..model.hf import current_umask

    os.chmod(path, 0o666 & ~current_umask())


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- summary
def summarize(rows: list[dict]) -> list[dict]:
    """One entry per (model, task): the grid point with the best median over seeds, its median, min, max."""
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        groups[(row["model"], row["task"])][json.dumps(row["hparams"], sort_keys=True)].append(row)
    out = []
    for (model, task), points in groups.items():
        best = None
        for hp, point_rows in points.items():
            values = [r["value"] for r in point_rows]
            med = statistics.median(values)
            sign = 1 if point_rows[0].get("higher_is_better", True) else -1
            if best is None or sign * med > sign * best["median"]:
                ref_key = point_rows[0].get("reference")
                refs = [r["metrics"][ref_key] for r in point_rows if ref_key and ref_key in r["metrics"]]
                first = point_rows[0]
                best = {"model": model, "checkpoint": first["checkpoint"], "tokens_seen": first["tokens_seen"],
                        "total_tokens_seen": first.get("total_tokens_seen"),
                        "tokens": trajectory_tokens(first.get("total_tokens_seen"), first["tokens_seen"]),
                        "phase": first["phase"], "step": first["step"], "task": task, "metric": first["metric"],
                        "median": med, "min": min(values), "max": max(values), "seeds": len(values),
                        "hparams": json.loads(hp), "grid_points": len(points),
                        "reference": ref_key, "reference_value": statistics.median(refs) if refs else None}
        out.append(best)
    return sorted(out, key=lambda s: (s["task"], s["tokens"] is None, s["tokens"] or 0, s["step"] or 0,
                                      s["checkpoint"]))


def _tokens(value) -> str:
    if value is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return str(value)


def markdown_table(summary: list[dict]) -> str:
    head = ("| task | checkpoint | tokens seen | metric | median | min - max | seeds | best grid point "
            "| no-model reference |")
    lines = [head, "|" + "---|" * 9]
    for s in summary:
        hp = ", ".join(f"{k}={v}" for k, v in s["hparams"].items()) or "-"
        if s["grid_points"] > 1:
            hp += f" (of {s['grid_points']})"
        ref = f"{s['reference']} {s['reference_value']:.3f}" if s["reference_value"] is not None else "-"
        lines.append(f"| {s['task']} | {s['checkpoint']} | {_tokens(s['tokens'])} | {s['metric']} | "
                     f"{s['median']:.3f} | {s['min']:.3f} - {s['max']:.3f} | {s['seeds']} | {hp} | {ref} |")
    return "\n".join(lines) + "\n"


def trajectories(summary: list[dict]) -> dict[str, list[dict]]:
    """Per task, the summary entries with a known token count, in the order the plot draws them: by tokens seen
    over all phases (phase-local counts restart at 0 in each phase)."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for s in summary:
        if s["tokens"] is not None:
            by_task[s["task"]].append(s)
    return {task: sorted(pts, key=lambda s: (s["tokens"], s["step"] or 0)) for task, pts in sorted(by_task.items())}


def plot(summary: list[dict], path: Path) -> bool:
    """Each task's median score (min-max as error bars) against tokens seen over all phases; False when fewer
    than two checkpoints with a known token count were evaluated."""
    by_task = trajectories(summary)
    if not any(len({s["model"] for s in v}) >= 2 for v in by_task.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(by_task), figsize=(4.2 * len(by_task), 3.4), squeeze=False)
    for ax, (task, pts) in zip(axes[0], by_task.items()):
        x = [s["tokens"] for s in pts]
        y = [s["median"] for s in pts]
        err = [[s["median"] - s["min"] for s in pts], [s["max"] - s["median"] for s in pts]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3)
        refs = [s["reference_value"] for s in pts if s["reference_value"] is not None]
        if refs:
            ax.axhline(statistics.median(refs), color="grey", linestyle="--", label=pts[0]["reference"])
            ax.legend(fontsize=7)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("tokens seen (all phases)")
        ax.set_ylabel(pts[0]["metric"])
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.stem}-", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        _umask_mode(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True
