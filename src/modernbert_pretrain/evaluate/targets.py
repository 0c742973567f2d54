"""What to evaluate: an exported folder, an export root (every ``step*-tok*`` folder in it) or a run folder
(Composer checkpoints, exported first through modernbert_pretrain.export)."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..export import METADATA_NAME
from ..model.hf import CONFIG_NAME

_EXPORT_RE = re.compile(r"^step(\d+)-tok(\d+)$")


class TargetError(ValueError):
    """The target cannot be evaluated; the message says why and what to pass instead."""


@dataclass(frozen=True)
class ModelRef:
    folder: Path
    """The exported Hugging Face folder (absolute)."""
    phase: str | None
    step: int | None
    tokens_seen: int | None
    """Tokens seen in the checkpoint's own phase (its run's clock)."""
    total_tokens_seen: int | None = None
    """Tokens seen over every phase the model went through; None when unknown or not recorded."""

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def tokens(self) -> int | None:
        return trajectory_tokens(self.total_tokens_seen, self.tokens_seen)


def trajectory_tokens(total: int | None, phase_local: int | None) -> int | None:
    """The count trajectories are drawn against: tokens over every phase when known (exports and result rows
    written before they were recorded have none), else the checkpoint's phase-local count."""
    return total if total is not None else phase_local


def describe_folder(folder: Path) -> ModelRef:
    """Phase, step and tokens seen (phase-local and cumulative) from the exporter's training_metadata.json (None
    when absent)."""
    meta: dict = {}
    path = folder / METADATA_NAME
    if path.is_file():
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise TargetError(f"{path} is not valid JSON ({err}); re-export the checkpoint") from err
    return ModelRef(folder.resolve(), meta.get("phase"), meta.get("step"), meta.get("tokens_seen"),
                    meta.get("total_tokens_seen"))


def in_token_order(models: list[ModelRef]) -> list[ModelRef]:
    """Oldest first by cumulative tokens (an export root may hold several phases' folders), unknown counts last."""
    return sorted(models, key=lambda m: (m.tokens is None, m.tokens or 0, m.step or 0, m.name))


def export_folders(root: Path) -> list[Path]:
    """``step*-tok*`` model folders of an export root, by tokens seen."""
    found = [d for d in root.iterdir() if d.is_dir() and _EXPORT_RE.match(d.name) and (d / CONFIG_NAME).is_file()]
    return sorted(found, key=lambda d: (int(_EXPORT_RE.match(d.name).group(2)), int(_EXPORT_RE.match(d.name).group(1))))


def is_run_folder(path: Path) -> bool:
    from ..checkpoints import LATEST, list_checkpoints

    return path.is_dir() and ((path / LATEST).exists() or bool(list_checkpoints(path)))


def default_export_dir(run: Path) -> Path:
    return run / "hf"


def export_run(run: Path, export_dir: Path) -> list[Path]:
    """Export every committed checkpoint of a run that has no export in ``export_dir`` yet; returns all of the
    run's export folders. A checkpoint counts as exported when an export's metadata names its file."""
    from ..export import ExportError, checkpoints_of, export_checkpoint

    done: set[str] = set()
    if export_dir.is_dir():
        for folder in export_folders(export_dir):
            ckpt = describe_checkpoint_path(folder)
            if ckpt:
                done.add(ckpt)
    try:
        checkpoints = checkpoints_of(run, everything=True)
        for ckpt in checkpoints:
            if str(ckpt) in done or str(ckpt.resolve()) in done:
                continue
            try:
                folder, _ = export_checkpoint(ckpt, export_dir)
            except (ExportError, OSError):
                if ckpt.exists():
                    raise
                # a live run's checkpoint rotation (save.keep) removed it since it was listed, as export --all
                print(f"skipped: {ckpt} was deleted during the export (checkpoint rotation?)", file=sys.stderr)
                continue
            print(f"exported {ckpt} -> {folder}", file=sys.stderr)
    except ExportError as err:
        raise TargetError(f"exporting {run}: {err}") from err
    return export_folders(export_dir)


def describe_checkpoint_path(folder: Path) -> str | None:
    path = folder / METADATA_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("checkpoint")
    except json.JSONDecodeError:
        return None


def resolve_target(target: str, *, export_dir: str | None = None) -> list[ModelRef]:
    """The model folders a target stands for, oldest first."""
    path = Path(target)
    if not path.exists():
        raise TargetError(f"{target} does not exist; pass an exported model folder, an export root "
                          "(step*-tok* folders) or a run folder (checkpoints)")
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return [describe_folder(path)]
    if path.is_dir():
        folders = export_folders(path)
        if folders:
            return in_token_order([describe_folder(f) for f in folders])
        if is_run_folder(path):
            out = Path(export_dir) if export_dir else default_export_dir(path)
            return in_token_order([describe_folder(f) for f in export_run(path, out)])
    raise TargetError(f"{target} is neither an exported model folder (no {CONFIG_NAME}), an export root (no "
                      "step*-tok* folders with a config.json) nor a run folder (no *.pt checkpoints); point to one")


def default_out_dir(target: str) -> Path:
    """Results next to what was evaluated: <export root or run>/eval, or <parent of a model folder>/eval."""
    path = Path(target)
    if (path / CONFIG_NAME).is_file():
        return path.resolve().parent / "eval"
    return path.resolve() / "eval"
