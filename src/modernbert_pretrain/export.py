"""Checkpoint -> Hugging Face folders.

    python -m modernbert_pretrain.export <checkpoint file or run folder> <out dir> [--all] [--dtype float32|bfloat16]

Each checkpoint becomes `<out dir>/step<batch>-tok<tokens>/` with config.json, model.safetensors, the
tokenizer files and training_metadata.json (phase, step, tokens seen in the phase and over all phases, LR,
training YAML). A folder is written under a temporary name and renamed when complete, so a partial export
never looks complete; the temporary folder of an export that was killed is removed by the next export into the
same folder. Files get the permissions the umask gives. The last line printed is the path of the (last) exported folder.
Errors are one line and exit code 2 (`--debug` or MODERNBERT_DEBUG=1 also prints the traceback).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

from .checkpoints import (
    LATEST,
    METADATA_NAME,
    CheckpointError,
    build_model,
    describe,
    list_checkpoints,
    read_checkpoint,
    resolve_checkpoint,
    uncommitted,
)
from .diskspace import free_bytes, no_space, out_of_space
from .model import ModernBertForMaskedLM
from .model.hf import WEIGHTS_NAME, current_umask, to_hf_state_dict
from .schema import debug_requested

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
"""Weight dtypes of an exported safetensors file, by name."""
# `.tmp-<folder>-pid<pid>@<host>-<random>`: the owner's pid and host tell a killed export's leftovers from a
# concurrent export's live folder.
_TMP_RE = re.compile(r"^\.tmp-(?P<target>.+)-pid(?P<pid>\d+)@(?P<host>[^@/]+)-(?P<rand>[0-9a-f]{8})$")


class ExportError(ValueError):
    """Something about the input or output of an export is wrong; the message says what."""


class ExportNoSpace(ExportError):  # noqa: N818 - named after the condition
    """The disk filled during an export; the message names the folder, the free and the needed space."""


# --------------------------------------------------------------------------------- writing
def folder_name(meta: dict[str, Any]) -> str:
    return f"step{meta['step']}-tok{meta['tokens_seen']}"


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the exported tensors (names, dtypes, shapes, bytes): the identity of an export's weights.
    Two exports are the same only when this matches; run name, step and tokens can coincide across runs."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key].detach().contiguous().cpu()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}\n".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _existing_meta(folder: Path) -> dict[str, Any] | None:
    """The export metadata in `folder`, with its weights digest (computed from model.safetensors for exports
    written before the digest was recorded); None when the folder holds no readable export."""
    try:
        old = json.loads((folder / METADATA_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(old, dict):
        return None
    if "weights_sha256" not in old:
        from safetensors.torch import load_file

        try:
            old["weights_sha256"] = weights_digest(load_file(str(folder / WEIGHTS_NAME)))
        except Exception:  # noqa: BLE001 - a missing or broken weights file: not the same export
            old["weights_sha256"] = None
    return old


def _source(meta: dict[str, Any]) -> str:
    """The run and checkpoint an export came from, for messages."""
    folder = ((meta.get("train_config") or {}).get("save") or {}).get("folder")
    where = f" saved in {folder}" if folder else ""
    ckpt = meta.get("checkpoint") or "its in-memory weights during training"
    digest = str(meta.get("weights_sha256"))[:12]
    return f"run {meta.get('phase')!r}{where} (checkpoint {ckpt}, weights sha256 {digest})"


def _same_export(folder: Path, meta: dict[str, Any]) -> bool:
    """True when `folder` already holds this very export (same weights); an ExportError when it holds another
    run's or checkpoint's export under the same name; False when it holds no export."""
    old = _existing_meta(folder)
    if old is None:
        return False
    keys = ("weights_sha256", "phase", "step", "tokens_seen")
    if all(old.get(k) == meta.get(k) for k in keys):
        return True
    raise ExportError(f"{folder} already holds a different export: of {_source(old)}; this one is of "
                      f"{_source(meta)}. Export into another folder, or remove {folder} if it is no longer wanted")


def prepare_out(out_root: Path) -> None:
    """Create the output folder, or say in one line why it cannot be used."""
    if out_root.exists() and not out_root.is_dir():
        raise ExportError(f"output folder {out_root} is a file, not a folder; give a folder path (it is created "
                          "if missing)")
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if out_of_space(err) == "errno":
            raise ExportNoSpace(str(no_space("while creating the export folder", out_root, None,
                                             "Free space or export into another folder"))) from err
        raise ExportError(f"cannot create the output folder {out_root}: {err.strerror or err}") from err


def _temp_name(target: Path) -> str:
    return f".tmp-{target.name}-pid{os.getpid()}@{socket.gethostname()}-{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def clean_stale_temps(out_root: Path) -> list[Path]:
    """Remove temporary folders left by exports on this host whose process is gone. Live exports' folders,
    other hosts' folders and unrecognised names are left alone (the latter two with a warning)."""
    host, removed = socket.gethostname(), []
    for entry in sorted(out_root.glob(".tmp-*")):
        match = _TMP_RE.match(entry.name)
        if match is None or match["host"] != host:
            why = "written on another host" if match else "its name carries no owner process"
            log.warning("left %s in place (%s); remove it if no export into %s is running", entry, why, out_root)
            continue
        if _pid_alive(int(match["pid"])):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            log.warning("removed %s: left by export process %s, which is no longer running", entry, match["pid"])
            removed.append(entry)
    return removed


def _fix_modes(folder: Path) -> None:
    """The umask's modes for everything in the folder (safetensors creates its file 0600)."""
    mask = current_umask()
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def write_folder(model: ModernBertForMaskedLM, meta: dict[str, Any], out_root: Path, *,
                 dtype: torch.dtype | None = None, tokenizer: str | None = None,
                 tokenizer_field: str = "--tokenizer") -> tuple[Path, bool]:
    """Write one export atomically. Returns (folder, written); written is False when it already existed.
    `tokenizer_field` names where an explicit `tokenizer` came from, for messages. A full disk is an
    ExportNoSpace (the partial folder removed)."""
    prepare_out(out_root)
    clean_stale_temps(out_root)
    target = out_root / folder_name(meta)
    state = to_hf_state_dict(model, dtype)
    meta = {**meta, "weights_sha256": weights_digest(state)}
    if target.exists():
        if _same_export(target, meta):
            return target, False
        raise ExportError(f"{target} already holds something that is not an export (no readable {METADATA_NAME}); "
                          "remove it or choose another output folder")
    needed = sum(v.numel() * v.element_size() for v in state.values())
    del state
    _no_space = functools.partial(no_space, f"while exporting step {meta.get('step')} ({folder_name(meta)})",
                                  out_root, needed)
    free = free_bytes(out_root)
    if free is not None and free < needed:
        raise ExportNoSpace(str(_no_space("Nothing was written; free space or export into another folder")))
    tmp = out_root / _temp_name(target)
    try:
        tmp.mkdir()  # not tempfile.mkdtemp: that makes the folder 0700
        _write_tmp(model, meta, tmp, dtype, tokenizer, tokenizer_field)
        try:
            tmp.rename(target)
        except OSError:
            if not _same_export(target, meta):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent export of the same checkpoint finished first
            return target, False
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception) and out_of_space(err) == "errno":
            raise ExportNoSpace(str(_no_space("The partial folder was removed; free space or export into another "
                                              "folder, then run the export again"))) from err
        raise
    return target, True


def _write_tmp(model: ModernBertForMaskedLM, meta: dict[str, Any], tmp: Path, dtype: torch.dtype | None,
               tokenizer: str | None, tokenizer_field: str) -> None:
    try:
        model.save_pretrained(tmp, dtype=dtype)
    except ValueError as err:
        raise ExportError(f"{meta.get('checkpoint')}: {err}") from err
    if tokenizer:
        _save_tokenizer(tokenizer, tmp, tokenizer_field)
    elif meta.get("tokenizer"):
        _save_tokenizer(meta["tokenizer"], tmp, None)
    public = {k: v for k, v in meta.items() if k != "model_config"}
    (tmp / METADATA_NAME).write_text(json.dumps(public, indent=2, default=str) + "\n")
    _fix_modes(tmp)


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def _save_tokenizer(name_or_path: str, out: Path, field: str | None) -> None:
    """Bundle a tokenizer. `field` is where it was given (e.g. --tokenizer); None: it is the run's own."""
    from transformers import AutoTokenizer

    label = f"{field} {name_or_path}" if field else f"the run's tokenizer {name_or_path}"
    fix = ("give a tokenizer folder (as data_prep/train_tokenizer.py writes) or a Hugging Face tokenizer name"
           if field else "pass --tokenizer <folder or Hugging Face name>")
    path = Path(name_or_path)
    if path.is_dir() and not any((path / name).is_file() for name in _TOKENIZER_FILES):
        held = sorted(p.name for p in path.iterdir())
        contents = f"it holds {', '.join(held[:8])}{' ...' if len(held) > 8 else ''}" if held else "it is empty"
        raise ExportError(f"{label}: the folder has no {' or '.join(_TOKENIZER_FILES)} ({contents}); {fix}")
    if not path.exists() and (path.is_absolute() or name_or_path.startswith(".")):
        raise ExportError(f"{label} does not exist; {fix}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as err:  # noqa: BLE001 - transformers raises many types
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ExportError(f"cannot load {label}: {reason[:300]}; {fix}") from err
    tokenizer.save_pretrained(out)


def export_checkpoint(path: str | Path, out_root: str | Path, *, dtype: str = "float32",
                      tokenizer: str | None = None) -> tuple[Path, bool]:
    """One checkpoint file -> one folder. The optimizer state is dropped right after reading."""
    try:
        ckpt = read_checkpoint(path)
        meta = describe(ckpt)
        ckpt["state"].pop("optimizers", None)
        model = build_model(ckpt)
    except CheckpointError as err:
        raise ExportError(str(err)) from err
    del ckpt
    return write_folder(model, meta, Path(out_root), dtype=DTYPES[dtype], tokenizer=tokenizer)


def checkpoints_of(path: Path, everything: bool) -> list[Path]:
    if path.is_file() or (path.is_dir() and (path / ".metadata").is_file()):
        return [path]
    if not path.exists():
        raise ExportError(f"{path} does not exist")
    if everything:
        found = list_checkpoints(path)
        if not found:
            raise ExportError(f"{path} holds no checkpoints (*.pt with a batch number)")
        newer = uncommitted(path)
        for f in newer:
            print(f"not exported: {f} was written after {LATEST} (a save cut off by a crash?)", file=sys.stderr)
        return [f for f in found if f not in newer]
    try:
        return [resolve_checkpoint(path)]
    except CheckpointError as err:
        raise ExportError(str(err)) from err


# ------------------------------------------------------------------------------ the Hub
def hub_plan(folders: list[Path], repo_id: str) -> list[dict[str, Any]]:
    """What would be uploaded where: one revision (branch) per checkpoint, named like its folder
    (`step<step>-tok<tokens>`), as the Ettin encoders publish their intermediate checkpoints."""
    if "/" not in repo_id:
        raise ExportError(f"--push-to-hub needs a repo id like 'user/name', got {repo_id!r}")
    return [{"repo_id": repo_id, "revision": folder.name, "folder": str(folder),
             "files": sorted(p.name for p in folder.iterdir() if p.is_file())} for folder in folders]


def push_to_hub(plan: list[dict[str, Any]], *, private: bool = False) -> None:
    """Upload each planned folder to its own branch (needs network and a token: `huggingface-cli login`)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(plan[0]["repo_id"], private=private, exist_ok=True)
    for item in plan:
        api.create_branch(item["repo_id"], branch=item["revision"], exist_ok=True)
        api.upload_folder(folder_path=item["folder"], repo_id=item["repo_id"], revision=item["revision"],
                          commit_message=f"checkpoint {item['revision']}")
        print(f"uploaded {item['folder']} -> {item['repo_id']}@{item['revision']}", file=sys.stderr)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m modernbert_pretrain.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint file, a sharded checkpoint folder, or a run's save folder")
    parser.add_argument("out", help="output folder; one subfolder per checkpoint")
    parser.add_argument("--all", action="store_true", help="export every checkpoint of a run (skips finished ones)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--tokenizer", default=None, help="tokenizer to bundle (default: the run's own)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None,
                        help="also upload each exported folder to this Hub repo, one branch per checkpoint")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--hub-dry-run", action="store_true",
                        help="print what would be uploaded (JSON) instead of uploading")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error (also: environment variable MODERNBERT_DEBUG=1)")
    return parser.parse_args(argv)


def _export_all(args: argparse.Namespace) -> Path:
    """Export each checkpoint; with --all, one that checkpoint rotation deletes mid-pass is skipped with a note."""
    prepare_out(Path(args.out))
    last, folders = None, []
    for ckpt in checkpoints_of(Path(args.checkpoint), args.all):
        try:
            last, written = export_checkpoint(ckpt, args.out, dtype=args.dtype, tokenizer=args.tokenizer)
        except (ExportError, OSError):
            if not args.all or ckpt.exists():
                raise
            print(f"skipped: {ckpt} was deleted during the export (checkpoint rotation?)", file=sys.stderr)
            continue
        folders.append(last)
        print(f"{'exported' if written else 'already exported'}: {ckpt} -> {last}", file=sys.stderr)
    if last is None:
        raise ExportError(f"every checkpoint of {args.checkpoint} was deleted during the export; nothing exported")
    if args.push_to_hub:
        plan = hub_plan(folders, args.push_to_hub)
        if args.hub_dry_run:
            print(json.dumps(plan, indent=1), file=sys.stderr)
        else:
            push_to_hub(plan, private=args.private)
    return last


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        last = _export_all(args)
    except (ExportError, CheckpointError, OSError) as err:
        if debug_requested(args.debug):
            traceback.print_exc()
        message = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"export error: {message}", file=sys.stderr)
        return 2
    print(last)
    return 0


if __name__ == "__main__":
    sys.exit(main())
