"""`python train.py <yaml> [key=value ...] [--dry-run]` and `composer train.py ...`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from ..config import load
from ..schema import DEBUG_ENV, ConfigError, debug_requested

log = logging.getLogger("modernbert_pretrain")


def git_sha() -> str:
    root = Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="train.py", description="Pretrain a ModernBERT encoder from a YAML config.",
        epilog="Overrides are dotted keys: optimizer.lr=3e-4 data.seq_len=8192 workdir=/data/run1")
    parser.add_argument("config", help="training YAML (e.g. yamls/phase1.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the plan as JSON; no training")
    parser.add_argument("--world-size", type=int, default=None,
                        help="for --dry-run: world size to check batch arithmetic against (default: $WORLD_SIZE or 1)")
    parser.add_argument("--gpu-memory", default=None, metavar="SIZE",
                        help="for --dry-run: memory of one GPU to check the memory plan against, e.g. 80GB, "
                             "79.6GiB (default: an H100's 80GB)")
    parser.add_argument("--no-memory", action="store_true",
                        help="for --dry-run: skip the memory plan (a traced forward: 6 of a dry run's 12 s on a "
                             "2-core CPU); launch/recipe.sh checks every phase with it")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of a refusal (also: {DEBUG_ENV}=1); by default one line, exit 2")
    return parser.parse_intermixed_args(argv)


def dry_run(args) -> int:
    from .memory import DEFAULT_GPU_MEMORY, format_table, memory_plan, parse_memory
    from .plan import make_plan
    from .preflight import check_paths

    gpu_memory = parse_memory(args.gpu_memory or DEFAULT_GPU_MEMORY)
    _, cfg = load(args.config, args.overrides)
    world = args.world_size or int(os.environ.get("WORLD_SIZE", "1"))
    cfg.check_world_size(world)
    for problem in check_paths(cfg, strict=False):
        print(f"warning: {problem}", file=sys.stderr)
    plan = make_plan(cfg, world)
    if plan["tokens_trained"] != plan["max_tokens"]:
        print(f"note: max_tokens={plan['max_tokens']} is not at a step boundary; the run stops after step "
              f"{plan['steps']}, at {plan['tokens_trained']} tokens", file=sys.stderr)
    plan["memory"] = None if args.no_memory else memory_plan(cfg, world, gpu_memory)
    if plan["memory"] is not None:
        print(format_table(plan["memory"]))
        if not plan["memory"]["fits"]:
            print(f"warning: memory plan: {plan['memory']['verdict']} in {args.gpu_memory or DEFAULT_GPU_MEMORY} "
                  "per GPU (table above); lower data.device_microbatch_size or check --gpu-memory", file=sys.stderr)
    print(json.dumps(plan))
    return 0


def run(args) -> int:
    from .preflight import check_device, check_paths

    raw, cfg = load(args.config, args.overrides)
    done = completed(cfg)
    if done is not None:
        print(done, file=sys.stderr)
        return 0
    # The refusals that need no Composer come before importing it (4-5 s of a rank's start on a 2-core CPU), so
    # a config key, world size, path, precision or backend error is reported in about 2 s; build_trainer checks
    # again under the lock.
    cfg.check_world_size(int(os.environ.get("WORLD_SIZE", "1")))
    check_paths(cfg, strict=True)
    check_device(cfg)

    from composer.utils import dist

    from .builder import build_trainer

    if dist.get_global_rank() == 0:
        log.info("git sha: %s", git_sha())
        log.info("resolved config:\n%s", json.dumps(raw, indent=2, default=str))
    from .faults import NonFiniteGuard, NonFiniteLoss, Preempted

    trainer = build_trainer(cfg, raw_config=raw)
    if dist.get_global_rank() == 0:
        (Path(cfg.save.folder) / COMPLETE_NAME).unlink(missing_ok=True)  # an extended run; under the lock
    try:
        if int(trainer.state.timestamp.token.value) < cfg.max_tokens:
            trainer.fit()  # else resumed at its end (a stop after the last save): Composer would refuse to fit
        for guard in (cb for cb in trainer.state.callbacks if isinstance(cb, NonFiniteGuard)):
            guard.check_finished(trainer.state)
        if dist.get_global_rank() == 0:
            mark_complete(cfg, trainer)  # while the run still holds the save folder's lock
    except Preempted as stop:
        log.warning("preempted: %s", stop)
        print(f"preempted: {stop}", file=sys.stderr)
        return 0
    except NonFiniteLoss as err:
        print(f"training stopped: {err}", file=sys.stderr)
        return 3
    finally:
        trainer.close()
    return 0


COMPLETE_NAME = "training_complete.json"


def completed(cfg) -> str | None:
    """The line to print when this exact run already finished (same max_tokens); None when there is work left.

    A finished run whose max_tokens was raised since continues from its last checkpoint; `run` then removes its
    marker, so that a crash during the extension does not leave the phase looking finished."""
    marker = Path(cfg.save.folder) / COMPLETE_NAME
    if not cfg.autoresume or not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        record = {}
    if int(record.get("tokens", 0)) < cfg.max_tokens:
        log.warning("%s: the run finished at %s tokens; max_tokens is now %d: continuing it", marker,
                    record.get("tokens", "?"), cfg.max_tokens)
        return None
    if _rolled_back(cfg.save.folder, record):
        return None
    return (f"run {cfg.run_name!r} is already complete: step {record.get('step')}, {record.get('tokens')} tokens "
            f"({marker}); nothing to do. To train further raise max_tokens, or choose a new save.folder")


def _rolled_back(folder: str, record: dict) -> bool:
    """True when `latest` names an earlier step than the finished run's last one: it was rolled back by hand
    since, and the run continues from there (the marker is removed when it starts)."""
    from ..checkpoints import LATEST, batch_of, has_checkpoint, list_checkpoints

    target = (Path(folder) / LATEST).resolve()
    if not has_checkpoint(folder) or not isinstance(record.get("step"), int) or \
            target not in {p.resolve() for p in list_checkpoints(Path(folder))}:
        return False
    step = batch_of(target)
    if step >= record["step"]:
        return False
    log.warning("the run finished at step %d, but %s now names step %d (rolled back): continuing from there",
                record["step"], LATEST, step)
    return True


def mark_complete(cfg, trainer) -> None:
    """A finished phase leaves `<save.folder>/training_complete.json`; recipe runners skip such phases."""
    stamp = trainer.state.timestamp
    record = {"run_name": cfg.run_name, "step": int(stamp.batch.value), "tokens": int(stamp.token.value),
              "max_tokens": cfg.max_tokens, "git_sha": git_sha()}
    folder = Path(cfg.save.folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{COMPLETE_NAME}.tmp"
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(folder / COMPLETE_NAME)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args.debug)
    try:
        return dry_run(args) if args.dry_run else run(args)
    except refusals() as err:
        if debug:
            raise
        kind = "config error" if isinstance(err, ConfigError) else "error"
        print(f"{kind}: {one_line(err)}", file=sys.stderr)
        return 2


def refusals() -> tuple[type[BaseException], ...]:
    """Our error classes: each message names the file or key and the fix, so the user gets it alone."""
    # none of these imports Composer: a refusal before the trainer's imports stays fast
    from ..checkpoints import CheckpointError
    from ..data import errors as data_errors
    from ..data.streaming_adapter import StreamingVersionError
    from ..diskspace import NoSpaceLeft
    from ..export import ExportError
    from .runlock import RunLocked

    return (ConfigError, CheckpointError, ExportError, RunLocked, NoSpaceLeft, data_errors.InputDataError,
            data_errors.TokenizerLoadError, data_errors.OutputExistsError, data_errors.ShardError,
            data_errors.ResumeStateError, StreamingVersionError)


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
