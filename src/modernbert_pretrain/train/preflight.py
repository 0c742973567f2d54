"""Checks that run before any work: inputs exist, the save folder is writable and has room."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..config import TrainConfig
from ..data.fingerprint import preflight_tokenizer_check
from ..model.attention import BACKENDS, resolve_backend
from ..schema import ConfigError


def check_paths(cfg: TrainConfig, *, strict: bool) -> list[str]:
    """Missing inputs: errors for a real run, warnings for a dry run."""
    problems = []
    for stream in cfg.data.stream_list():
        if stream.remote is None and not Path(stream.local).exists():
            problems.append(f"data: MDS folder {stream.local} does not exist (run data_prep/tokenize_to_mds.py)")
    tok = cfg.data.tokenizer
    if (tok.startswith("/") or tok.startswith(".")) and not Path(tok).exists():
        problems.append(f"data.tokenizer: {tok} does not exist (run data_prep/train_tokenizer.py)")
    if cfg.load_from is not None and not _local_or_hub(cfg.load_from.path):
        problems.append(f"load_from.path: checkpoint {cfg.load_from.path} does not exist (run the earlier phase)")
    if cfg.init_from is not None and not _local_or_hub(cfg.init_from.path):
        problems.append(f"init_from.path: {cfg.init_from.path} does not exist (train or download the smaller model)")
    if cfg.export is not None and Path(cfg.export.folder).exists() and not Path(cfg.export.folder).is_dir():
        problems.append(f"export.folder: {cfg.export.folder} is a file, not a folder; give a folder path")
    if not cfg.autoresume:
        problems += _checkpoints_in_the_way(cfg)
    if strict and problems:
        raise ConfigError("cannot start: " + "; ".join(problems))
    return problems + ([] if strict else preflight_tokenizer_check(cfg.data))


def _checkpoints_in_the_way(cfg: TrainConfig) -> list[str]:
    """autoresume=false starts a new run at step 0, whose checkpoints would take the names of those already in
    save.folder (Composer refuses to overwrite them, but only with a traceback)."""
    from ..checkpoints import LATEST, list_checkpoints

    folder = Path(cfg.save.folder)
    found = list_checkpoints(folder) if folder.is_dir() else []
    if not found and not (folder / LATEST).is_symlink():
        return []
    newest = found[-1].name if found else LATEST
    return [f"save.folder: {folder} already holds checkpoints of a run ({len(found)}, the newest {newest}), and "
            "autoresume=false would start a new run over them; set autoresume=true to continue that run, or "
            "choose a new save.folder (with load_from.path set to this folder to start from its weights)"]


def _local_or_hub(path: str) -> bool:
    """An existing path, or a Hub model id (resolved when the model is built)."""
    from ..model.hf import is_hub_id

    return Path(path).exists() or (not Path(path).is_absolute() and is_hub_id(path))


def check_save_folder(folder: str, needed_bytes: int) -> None:
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"save.folder: cannot write to {path}: {err}") from err
    free = shutil.disk_usage(path).free
    if free < needed_bytes:
        raise ConfigError(f"save.folder: {path} has {free / 2**30:.2f} GiB free, less than one checkpoint "
                          f"(~{needed_bytes / 2**30:.2f} GiB); free space or choose another folder")


def checkpoint_bytes(model: torch.nn.Module) -> int:
    """Weights plus two Adam moments in fp32, with 10% slack."""
    params = sum(p.numel() for p in model.parameters())
    return int(params * 4 * 3 * 1.1)


def run_precision(cfg: TrainConfig, on_gpu: bool) -> str:
    """Composer applies bf16 autocast on GPU only: on CPU it refuses amp_bf16, so we refuse it first, in one line."""
    if cfg.precision == "auto":
        return "amp_bf16" if on_gpu else "fp32"
    if cfg.precision == "amp_bf16" and not on_gpu:
        raise ConfigError("precision: amp_bf16 needs a GPU (Composer applies no bf16 autocast on CPU); use "
                          "precision: auto or fp32 on CPU")
    return cfg.precision


def compute_dtype(cfg: TrainConfig, on_gpu: bool) -> torch.dtype:
    """The dtype the model computes in under the run's precision (bf16 autocast or fp32)."""
    return torch.bfloat16 if run_precision(cfg, on_gpu) == "amp_bf16" else torch.float32


def wants_compile(cfg: TrainConfig, on_gpu: bool) -> bool:
    """`compile: on`, or `auto` on GPU."""
    return cfg.compile == "on" or (cfg.compile == "auto" and on_gpu)


def check_compile(backend: str, device: torch.device, compile_model: bool) -> None:
    if compile_model and device.type not in BACKENDS[backend].compile_devices:
        raise ConfigError(f"compile: on with attention backend {backend!r} on {device.type}: torch.compile can "
                          f"train it only on {'/'.join(BACKENDS[backend].compile_devices)}; set compile: off, or "
                          "model.attn_backend: sdpa")


def check_device(cfg: TrainConfig) -> None:
    """The precision and an explicitly named attention backend (with compile) against this machine, before the
    trainer's imports; `auto` is resolved by the builder, which needs the model."""
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    dtype = compute_dtype(cfg, on_gpu)
    name = cfg.model_config().attn_backend
    if name == "auto":
        return
    try:  # an explicit name is only checked for availability here
        resolve_backend(name, device=device, dtype=dtype, needs_window=False, needs_dropout=False)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"model.attn_backend: {err}") from err
    check_compile(name, device, wants_compile(cfg, on_gpu))
