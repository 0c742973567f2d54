"""Checkpoint -> Hugging Face folders.

    python -m modernbert_pretrain.export <checkpoint file or run folder> <out dir> [--all] [--dtype float32|bfloat16]

Each checkpoint becomes `<out dir>/step<batch>-tok<tokens>/` with config.json, model.safetensors, the
tokenizer files and training_metadata.json (phase, step, tokens seen, LR, training YAML). A folder is
written under a temporary name and renamed when complete, so a partial export never looks complete.
The last line printed is the path of the (last) exported folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from .checkpoints import (
    LATEST,
    CheckpointError,
    build_model,
    describe,
    list_checkpoints,
    read_checkpoint,
    resolve_checkpoint,
    uncommitted,
)
from .model import ModernBertForMaskedLM

METADATA_NAME = "training_metadata.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
"""Weight dtypes of an exported safetensors file, by name."""


class ExportError(ValueError):
    """Something about the input or output of an export is wrong; the message says what."""


# --------------------------------------------------------------------------------- writing
def folder_name(meta: dict[str, Any]) -> str:
    return f"step{meta['step']}-tok{meta['tokens_seen']}"


def _same_export(folder: Path, meta: dict[str, Any]) -> bool:
    existing = folder / METADATA_NAME
    if not existing.is_file():
        return False
    old = json.loads(existing.read_text())
    return all(old.get(k) == meta.get(k) for k in ("phase", "step", "tokens_seen"))


def write_folder(model: ModernBertForMaskedLM, meta: dict[str, Any], out_root: Path, *,
                 dtype: torch.dtype | None = None, tokenizer: str | None = None) -> tuple[Path, bool]:
    """Write one export atomically. Returns (folder, written); written is False when it already existed."""
    out_root.mkdir(parents=True, exist_ok=True)
    target = out_root / folder_name(meta)
    if target.exists():
        if _same_export(target, meta):
            return target, False
        raise ExportError(f"{target} already holds a different export (or something else); remove it or choose "
                          "another output folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=out_root))
    try:
        model.save_pretrained(tmp, dtype=dtype)
        tok = tokenizer or meta.get("tokenizer")
        if tok:
            _save_tokenizer(tok, tmp)
        public = {k: v for k, v in meta.items() if k != "model_config"}
        (tmp / METADATA_NAME).write_text(json.dumps(public, indent=2, default=str) + "\n")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, True


def _save_tokenizer(name_or_path: str, out: Path) -> None:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as err:  # noqa: BLE001 - transformers raises many types
        raise ExportError(f"cannot load the run's tokenizer {name_or_path!r}: {err}; pass --tokenizer") from err
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


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)
    try:
        last, folders = None, []
        for ckpt in checkpoints_of(Path(args.checkpoint), args.all):
            last, written = export_checkpoint(ckpt, args.out, dtype=args.dtype, tokenizer=args.tokenizer)
            folders.append(last)
            print(f"{'exported' if written else 'already exported'}: {ckpt} -> {last}", file=sys.stderr)
        if args.push_to_hub:
            plan = hub_plan(folders, args.push_to_hub)
            if args.hub_dry_run:
                print(json.dumps(plan, indent=1), file=sys.stderr)
            else:
                push_to_hub(plan, private=args.private)
    except ExportError as err:
        print(f"export error: {err}", file=sys.stderr)
        return 2
    print(last)
    return 0


if __name__ == "__main__":
    sys.exit(main())
