"""python -m modernbert_pretrain.evaluate <target> [<target> ...] [--tasks ...] [--seeds N] [--out DIR]

Scores exported checkpoints on downstream tasks. A target is an exported Hugging Face folder, an export root
(every step*-tok* folder in it) or a run folder (its checkpoints are exported first). Writes one JSON line per
checkpoint x task x seed x grid point to <out>/results.jsonl, the summary table to <out>/summary.md (also
printed), and <out>/scores_vs_tokens.png when several checkpoints were scored. Finished rows are skipped on a
re-run; --force redoes them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..schema import debug_requested

EXIT_USAGE = 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m modernbert_pretrain.evaluate", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="+", metavar="target",
                   help="exported model folder, export root or run folder (several allowed)")
    p.add_argument("--tasks", action="append", default=None,
                   help="task or family names, comma-separated or repeated: embedded (default), glue, retrieval, "
                        "or e.g. glue/rte, embedded/code_search; --list-tasks shows them")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per grid point (default 3)")
    p.add_argument("--out", default=None,
                   help="results folder (default: <export root or run folder>/eval, or beside a model folder)")
    p.add_argument("--data-dir", default=None,
                   help="local data: GLUE/retrieval folders in the Hub's schema, or for the embedded tasks a "
                        "folder with the quickstart corpus' train.jsonl and val.jsonl (or a quickstart workdir)")
    p.add_argument("--export-dir", default=None, help="where a run folder's checkpoints are exported (<run>/hf)")
    p.add_argument("--random-init-baseline", action="store_true",
                   help="also score a randomly initialised model of the same size as the targets (written once "
                        "to <out>/models/)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--force", action="store_true", help="redo rows already in the results file")
    p.add_argument("--list-tasks", action="store_true", help="print the available tasks and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks (also: MODERNBERT_DEBUG=1)")
    return p


def _list_tasks() -> None:
    from .tasks import all_tasks

    tasks, missing = all_tasks()
    for task in tasks.values():
        print(f"{task.name:32s} {task.family:10s} {task.metric}")
    for family, why in missing.items():
        print(f"{family + '/*':32s} unavailable: {why}")


def _models(args):
    from .random_init import write_random_init
    from .targets import ModelRef, describe_folder, resolve_target

    models: list[ModelRef] = []
    for target in args.targets:
        for model in resolve_target(target, export_dir=args.export_dir):
            if model.folder not in {m.folder for m in models}:
                models.append(model)
    if args.random_init_baseline:
        baselines = []
        for like in {(m.folder / "config.json").read_bytes(): m for m in models}.values():
            folder = write_random_init(like.folder, Path(args.out) / "models", seed=0)
            baselines.append(describe_folder(folder))
        models = baselines + models
    return models


def run(args) -> int:
    import torch

    from .runner import Plan, report, run_plan
    from .targets import default_out_dir
    from .tasks import select_tasks

    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    tasks = select_tasks(args.tasks)
    if args.out is None:
        args.out = str(default_out_dir(args.targets[0]))
    models = _models(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    plan = Plan(models=models, tasks=tasks, seeds=list(range(args.seeds)), out=Path(args.out),
                data_dir=args.data_dir, device=device, force=args.force)
    rows = run_plan(plan)
    print(report(rows, plan.out), end="")
    print(f"results: {plan.out}", file=sys.stderr)
    return 0


class UsageError(ValueError):
    pass


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if "--list-tasks" in argv:
        _list_tasks()
        return 0
    args = parser().parse_args(argv)
    from ..export import ExportError
    from .runner import BusyError
    from .targets import TargetError
    from .tasks import TaskError, UnknownTask

    args.debug = debug_requested(args.debug)
    try:
        return run(args)
    except (UsageError, TargetError, UnknownTask, TaskError, ExportError, BusyError) as err:
        if args.debug:
            raise
        print(f"evaluate: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("evaluate: interrupted; finished rows are saved, a re-run continues", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - one line unless --debug
        if args.debug:
            raise
        print(f"evaluate: failed: {type(err).__name__}: {err} (--debug shows the traceback)", file=sys.stderr)
        return 1
