"""Roll a run back to one of its checkpoints, e.g. after a loss spike, keeping the later ones aside.

    python -m modernbert_pretrain.train.rollback <save.folder> <checkpoint> [--data-seed N]

<checkpoint> is a checkpoint file of that folder (its name, e.g. ba2000-tok8192000000-rank0.pt, or its path).
The later checkpoints (and the completion marker of a finished run) are moved into
`<save.folder>/rolled-back-<time>/` with a note, never deleted; `latest` is pointed at <checkpoint>. Then run
the same train.py command as before: it resumes from <checkpoint>, and its log says what was rolled back.
With --data-seed N, add data.seed=N to that command (and keep it): the run resumes the checkpoint's position in
the data with the order of seed N, e.g. to pass over the batches that led to a loss spike.
The save folder is locked like a training run's: a live run on it is refused. Errors are one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from pathlib import Path

from .. import checkpoints as ckpt_io
from ..schema import debug_requested
from .runlock import RunLock, RunLocked

log = logging.getLogger(__name__)

PENDING_NAME = "rollback_pending.json"
"""Written by a rollback into the save folder; the next training start logs it and moves it into the aside
folder, so that the run's own log says what was rolled back."""
COMPLETE_NAME = "training_complete.json"


def _target(folder: Path, checkpoint: str) -> Path:
    path = Path(checkpoint)
    if not path.is_absolute() and not path.exists():
        path = folder / checkpoint
    ours = {p.resolve() for p in ckpt_io.list_checkpoints(folder)}
    if path.resolve() not in ours:
        names = ", ".join(p.name for p in ckpt_io.list_checkpoints(folder)) or "none"
        raise ckpt_io.CheckpointError(f"{checkpoint} is not a checkpoint of {folder} (its checkpoints: {names}); "
                                      "name one of them")
    path = path.resolve()
    if ckpt_io.is_sharded(path):  # an FSDP sharded folder: complete once its metadata reads
        if not ckpt_io.checkpoint_loads(path):
            raise ckpt_io.CheckpointError(f"{checkpoint} is a sharded checkpoint whose .metadata does not read (a "
                                          "save that did not finish); name another checkpoint")
    else:
        ckpt_io.load_checkpoint(path, mmap=True)  # refuses a file that does not load, naming it
    return path


def rollback(folder: str | Path, checkpoint: str, data_seed: int | None = None) -> tuple[Path, Path | None]:
    """Point `latest` of the run in `folder` at `checkpoint`, moving every later checkpoint aside. Returns the
    checkpoint and the aside folder (None when nothing was later and no data seed was given). With `data_seed`,
    the run may resume that checkpoint with data.seed=<data_seed> (`allowed_data_seed`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ckpt_io.CheckpointError(f"save folder {folder} does not exist; give the run's save.folder")
    with RunLock(folder):
        target = _target(folder, checkpoint)
        step = ckpt_io.batch_of(target)
        latest = folder / ckpt_io.LATEST
        before = latest.resolve().name if ckpt_io.has_checkpoint(folder) else None
        later = [p for p in ckpt_io.list_checkpoints(folder) if ckpt_io.batch_of(p) > step]
        marker = folder / COMPLETE_NAME
        moved = later + ([marker] if marker.is_file() else [])
        note = {"rolled_back_to": target.name, "latest_before": before, "reason": "rollback command",
                "data_seed": data_seed}
        aside = ckpt_io.set_aside(folder, moved, note) if moved or data_seed is not None else None
        ckpt_io.point_latest(folder, target)
        if aside is not None:
            pending = {**note, "aside": str(aside), "moved": [p.name for p in moved]}
            (folder / PENDING_NAME).write_text(json.dumps(pending, indent=2) + "\n")
    return target, aside


def allowed_data_seed(folder: str | Path) -> int | None:
    """The data seed a rollback to the checkpoint `latest` names asked for (None: none did). It stays allowed
    for every start that resumes from that checkpoint, so a crash before the next save does not lose it."""
    p = Path(folder)
    if not ckpt_io.has_checkpoint(p):
        return None
    name = (p / ckpt_io.LATEST).resolve().name
    seed = None
    for note_path in sorted(p.glob(f"{ckpt_io.ASIDE_PREFIX}*/{ckpt_io.ASIDE_NOTE}")):  # oldest first
        try:
            note = json.loads(note_path.read_text())
        except (OSError, ValueError):
            continue
        if note.get("rolled_back_to") == name:  # the last rollback to that checkpoint decides
            seed = None if note.get("data_seed") is None else int(note["data_seed"])
    return seed


def announce_pending(folder: str | Path) -> None:
    """At a training start (rank 0, under the lock): log what the last rollback did, once."""
    path = Path(folder) / PENDING_NAME
    if not path.is_file():
        return
    try:
        note = json.loads(path.read_text())
    except (OSError, ValueError):
        note = {}
    seed = "" if note.get("data_seed") is None else f" with data seed {note['data_seed']}"
    log.warning("rollback: this run resumes from %s%s (latest was %s); the later checkpoints %s are kept in %s",
                note.get("rolled_back_to"), seed, note.get("latest_before"), note.get("moved"), note.get("aside"))
    aside = Path(note.get("aside") or "")
    if aside.is_dir():
        path.replace(aside / PENDING_NAME)
    else:
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modernbert_pretrain.train.rollback",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the run's save.folder")
    parser.add_argument("checkpoint", help="the checkpoint to resume from: its file name in the folder, or path")
    parser.add_argument("--data-seed", type=int, default=None,
                        help="resume with this data.seed (another data order from the checkpoint's position on); "
                             "pass data.seed=N to train.py from then on")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    args = parser.parse_args(argv)
    if args.data_seed is not None and args.data_seed < 0:
        parser.error("--data-seed must be >= 0")
    try:
        target, aside = rollback(args.folder, args.checkpoint, args.data_seed)
    except (ckpt_io.CheckpointError, RunLocked, OSError) as err:
        if debug_requested(args.debug):
            traceback.print_exc()
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    later = [p for p in aside.iterdir() if p.name.endswith(".pt")] if aside else []
    kept = f"the later checkpoints are kept in {aside}" if later else "no later checkpoint existed"
    command = ("the same train.py command" if args.data_seed is None else
               f"the same train.py command with data.seed={args.data_seed} (keep it on later resumes)")
    print(f"rolled back {args.folder} to {target.name} (step {ckpt_io.batch_of(target)}): {kept}. Run {command} "
          "to resume from there", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
