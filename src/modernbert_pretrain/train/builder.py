"""Build a Composer Trainer from a validated TrainConfig."""

from __future__ import annotations

import logging
from typing import Any

import torch
from composer import Trainer
from composer.core import DataSpec, Evaluator
from composer.utils import dist, reproducibility

from .. import checkpoints as ckpt_io
from ..config import TrainConfig
from ..constants import IGNORE_INDEX
from ..model import ModernBertForMaskedLM
from ..schema import ConfigError
from .callbacks import HFExport, MetricsFile, RunInfo, TrainMetrics
from .compat import RngResume, cheap_cpu_model, check_composer_version, per_node_signal_files
from .composer_model import ComposerMLM
from .faults import NonFiniteGuard, Preemption, SaveSpaceGuard
from .loggers import wandb_logger
from .optim import apply_phase_hyperparameters, build_optimizer
from .preflight import (
    check_compile,
    check_paths,
    check_save_folder,
    checkpoint_bytes,
    compute_dtype,
    run_precision,
    wants_compile,
)
from .rollback import allowed_data_seed, announce_pending
from .schedule import TokenSchedule

log = logging.getLogger(__name__)

SAVE_FILENAME = "ba{batch}-tok{token}-rank{rank}.pt"


# ------------------------------------------------------------------------------ model
def tokenizer_overrides(cfg: TrainConfig) -> dict[str, Any]:
    """The tokenizer is the authority on special ids; the model's vocab must hold it."""
    from ..data.tokenizer_info import tokenizer_info

    info = tokenizer_info(cfg.data.tokenizer)
    model_cfg = cfg.model_config()
    if info.vocab_size > model_cfg.vocab_size:
        raise ConfigError(f"the tokenizer {cfg.data.tokenizer} has {info.vocab_size} tokens but model.vocab_size is "
                          f"{model_cfg.vocab_size}; set model.vocab_size >= {info.vocab_size} (a multiple of 64)")
    out = {"mask_token_id": info.mask_id}
    for ours, theirs in (("pad_token_id", info.pad_id), ("cls_token_id", info.cls_id), ("sep_token_id", info.sep_id)):
        if theirs is not None:
            out[ours] = theirs
    if info.cls_id is not None:
        out["bos_token_id"] = info.cls_id
    if info.sep_id is not None:
        out["eos_token_id"] = info.sep_id
    return out


def start_model(cfg: TrainConfig, *, resuming: bool) -> tuple[ModernBertForMaskedLM, dict | None, dict | None]:
    """Fresh, tiled (init_from) or continued (load_from) model, the optimizer state to restore, and the run's
    prior (what the model had seen before this run; checkpoints.py `cumulative`). The prior is None when
    resuming: the checkpoint's run info brings it back (RunInfo.load_state_dict)."""
    model_cfg = cfg.model_config(**tokenizer_overrides(cfg))
    torch.manual_seed(cfg.seed)
    model = ModernBertForMaskedLM(model_cfg)
    if resuming:
        ckpt_io.check_same_model(cfg.save.folder, model.config.to_dict())
        return model, None, None  # Composer's autoresume restores everything
    if cfg.init_from is not None:
        from ..model.tiling import tile_model

        source = ckpt_io.model_from_checkpoint(cfg.init_from.path)
        log.info("tiling %s (%d params) -> %d params; the token count starts at 0 (a new model)",
                 cfg.init_from.path, source.num_parameters(), model.num_parameters())
        try:
            model = tile_model(source, model_cfg)
        except ValueError as err:
            raise ConfigError(f"init_from: cannot tile {cfg.init_from.path} into model.preset={cfg.model.preset!r}: "
                              f"{err}") from err
        return model, None, dict(ckpt_io.FRESH)
    if cfg.load_from is not None:
        folder = ckpt_io.hf_folder(cfg.load_from.path, "load_from.path")
        if folder is not None:  # released weights: no optimizer moments
            prior = ckpt_io.load_pretrained_weights(model, folder, cfg.load_from.path, cfg.load_from.weights_only)
            return model, None, prior
        ckpt = ckpt_io.read_checkpoint(cfg.load_from.path)
        ckpt_io.load_weights(model, ckpt, "load_from.path")
        optim = None if cfg.load_from.weights_only else ckpt_io.optimizer_state(ckpt)
        prior = ckpt_io.prior_of_checkpoint(ckpt)
        log.info("loaded weights%s from %s; %s", "" if optim is None else " and optimizer moments", ckpt["_path"],
                 ckpt_io.describe_prior(prior))
        del ckpt
        return model, optim, prior
    return model, None, dict(ckpt_io.FRESH)


def restore_optimizer(composer_model: ComposerMLM, optimizer, optim_state: dict, cfg: TrainConfig) -> None:
    """Load the earlier phase's moments (keyed by parameter name), then take every hyperparameter from this
    phase's YAML. The per-group step count is kept: it belongs to the moments (bias correction)."""
    saved_state, saved_groups = optim_state["state"], optim_state["param_groups"]
    params = dict(composer_model.named_parameters())
    missing = sorted(set(params) - set(saved_state))
    unexpected = sorted(set(saved_state) - set(params))
    if missing or unexpected:
        raise ConfigError(f"load_from: the checkpoint's optimizer state does not match this model (missing "
                          f"{missing[:5]}, unexpected {unexpected[:5]}); use load_from.weights_only: true")
    for name, param in params.items():
        optimizer.state[param] = {k: (v.to(param.device).clone() if torch.is_tensor(v) else v)
                                  for k, v in saved_state[name].items()}
    by_name = {g.get("name"): g for g in saved_groups}
    for group in optimizer.param_groups:
        old = by_name.get(group.get("name"), saved_groups[0])
        for key in ("step", "setup"):
            if key in old:
                group[key] = old[key].clone() if torch.is_tensor(old[key]) else old[key]
    apply_phase_hyperparameters(optimizer, cfg.optimizer)


# ------------------------------------------------------------------------------- data
def _num_tokens(batch: dict) -> dict[str, int]:
    if "microbatches" in batch:
        return {"total": int(batch["num_slot_tokens"]),
                "loss_generating": sum(_masked(mb) for mb in batch["microbatches"])}
    return {"total": int(batch["num_slot_tokens"]), "loss_generating": _masked(batch)}


def _masked(mb: dict) -> int:
    if "num_masked" in mb:
        return int(mb["num_masked"])
    return int((mb["labels"] != IGNORE_INDEX).sum())


def _num_samples(batch: dict) -> int:
    return int(batch["num_rows"])


def _split(batch: dict, microbatch_size) -> list[dict]:
    return list(batch["microbatches"])


def train_data_spec(loader) -> DataSpec:
    return DataSpec(loader, split_batch=_split, get_num_samples_in_batch=_num_samples,
                    get_num_tokens_in_batch=_num_tokens)


def eval_data_spec(loader) -> DataSpec:
    return train_data_spec(loader)


def build_loaders(cfg: TrainConfig, rank: int, world_size: int):
    from ..data import build_eval_loader, build_train_loader

    train = build_train_loader(cfg.data, rank=rank, world_size=world_size)
    evaluator = None
    if cfg.eval is not None:
        eval_loader = build_eval_loader(cfg.eval_data(), rank=rank, world_size=world_size)
        evaluator = Evaluator(label="heldout", dataloader=eval_data_spec(eval_loader),
                              metric_names=["MaskedAccuracy", "MaskedCrossEntropy"],
                              subset_num_batches=cfg.eval.batches)
    return train, evaluator


# ---------------------------------------------------------------------------- trainer
def _prepare_model(model: ModernBertForMaskedLM, cfg: TrainConfig, on_gpu: bool) -> bool:
    """Pick the attention backend for the run's device and compute dtype before any compile, on every device,
    so that no backend choice is traced inside the compiled forward; return whether to compile. On GPU the
    per-step input checks are skipped: the loader only emits valid ids and boundaries, and each is a host sync."""
    device = torch.device("cuda" if on_gpu else "cpu")
    try:
        name = model.model.resolve_attn_backend(device, compute_dtype(cfg, on_gpu))
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"model.attn_backend: {err}") from err
    log.info("attention backend: %s", name)
    if on_gpu:
        model.config.validate_inputs = False
    compile_model = wants_compile(cfg, on_gpu)
    check_compile(name, device, compile_model)
    return compile_model


def _callbacks_and_loggers(cfg: TrainConfig, model: ModernBertForMaskedLM, raw_config: dict | None,
                           prior: dict | None = None):
    info = {
        "model_config": model.config.to_dict(),
        "train_config": raw_config or {},
        "tokenizer": cfg.data.tokenizer,
        "phase": cfg.run_name,
    }
    if prior is not None:
        info["prior"] = prior
    # The loader's state (stream position, packer buffer, clock) is saved by Composer itself: the loader is a
    # DataLoader whose dataset exposes state_dict/load_state_dict (the seam: train/compat.py), so resume never
    # replays past batches.
    callbacks = [RunInfo(info), TrainMetrics(model.config), RngResume(), Preemption(),
                 NonFiniteGuard(cfg.nonfinite_loss, cfg.nonfinite_max_skipped), SaveSpaceGuard(cfg.save.folder, checkpoint_bytes(model)),
                 TokenSchedule(cfg.scheduler, cfg.max_tokens, cfg.optimizer.lr)]
    if cfg.logging.metrics_file:
        callbacks.append(MetricsFile(cfg.logging.metrics_file))
    if cfg.export is not None:
        interval = cfg.save.interval if cfg.export.interval == "checkpoint" else cfg.export.interval
        callbacks.append(HFExport(cfg.export.folder, interval, tokenizer=cfg.data.tokenizer, phase=cfg.run_name,
                                  train_config=raw_config or {}, dtype=cfg.export.dtype))
    loggers = []
    if cfg.logging.wandb:
        loggers.append(wandb_logger(cfg.logging.project, cfg.run_name))
    return callbacks, loggers


def build_trainer(cfg: TrainConfig, raw_config: dict | None = None) -> Trainer:
    """Global rank 0 locks the save folder before it repairs or writes anything there; the lock is released
    when the trainer closes (or the process exits)."""
    from .callbacks import ReleaseRunLock
    from .runlock import RunLock

    check_composer_version()
    cfg.check_world_size(dist.get_world_size())
    check_paths(cfg, strict=True)
    lock = RunLock(cfg.save.folder).acquire() if dist.get_global_rank() == 0 else None
    try:
        trainer = _build_trainer(cfg, raw_config, [ReleaseRunLock(lock)] if lock else [])
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return trainer


def _build_trainer(cfg: TrainConfig, raw_config: dict | None, extra_callbacks: list) -> Trainer:
    per_node_signal_files()
    cheap_cpu_model()
    on_gpu = torch.cuda.is_available()
    precision = run_precision(cfg, on_gpu)  # refused before any work
    rank, world_size = dist.get_global_rank(), dist.get_world_size()
    reproducibility.seed_all(cfg.seed)
    if cfg.autoresume and rank == 0:
        # Rank 0 alone writes checkpoints (monolithic), so it alone repairs: on a save folder shared by several
        # nodes a second repair would race the first.
        ckpt_io.repair_latest(cfg.save.folder)
        announce_pending(cfg.save.folder)
    resuming = cfg.autoresume and ckpt_io.has_checkpoint(cfg.save.folder)
    if resuming:
        log.info("autoresume: %s holds checkpoints of this run; continuing it", cfg.save.folder)

    model, optim_state, prior = start_model(cfg, resuming=resuming)
    check_save_folder(cfg.save.folder, checkpoint_bytes(model))
    if on_gpu:
        model.cuda()
    composer_model = ComposerMLM(model)
    optimizer = build_optimizer(model, cfg.optimizer)
    if optim_state is not None:
        restore_optimizer(composer_model, optimizer, optim_state, cfg)
    if _prepare_model(model, cfg, on_gpu):
        model.model.compile(dynamic=True)  # in place: parameter names stay the same

    loader, evaluator = build_loaders(cfg, rank, world_size)
    if resuming:
        loader.reseed = rollback_data_seed(cfg)
    callbacks, loggers = _callbacks_and_loggers(cfg, model, raw_config, prior)
    callbacks += extra_callbacks
    kwargs: dict[str, Any] = {}
    if evaluator is not None:
        kwargs.update(eval_dataloader=evaluator, eval_interval=cfg.eval.interval)
    if cfg.fsdp is not None:
        kwargs["parallelism_config"] = fsdp_parallelism(cfg, model, world_size, optim_state is not None)
    trainer = Trainer(
        model=composer_model,
        train_dataloader=train_data_spec(loader),
        max_duration=f"{cfg.max_tokens}tok",
        optimizers=optimizer,
        device="gpu" if on_gpu else "cpu",
        precision=precision,
        device_train_microbatch_size=cfg.data.device_microbatch_size,
        accumulate_train_batch_on_tokens=True,
        run_name=cfg.run_name,
        seed=cfg.seed,
        save_folder=cfg.save.folder,
        save_interval=cfg.save.interval,
        save_filename=SAVE_FILENAME,
        save_latest_filename=ckpt_io.LATEST,
        save_num_checkpoints_to_keep=cfg.save.keep,
        save_overwrite=False,
        autoresume=cfg.autoresume,
        loggers=loggers,
        callbacks=callbacks,
        log_to_console=True,
        console_log_interval=cfg.logging.console_interval,
        progress_bar=cfg.logging.progress_bar,
        **kwargs,
    )
    _export_after_checkpoint(trainer.state.callbacks)
    return trainer


def fsdp_parallelism(cfg: TrainConfig, model: ModernBertForMaskedLM, world_size: int,
                     restores_moments: bool) -> dict[str, Any]:
    """Composer's parallelism_config for `fsdp:`, always on FSDP2 (torch's fully_shard): FSDP1 is deprecated
    upstream and cannot run without CUDA. See docs/architecture.md, "Data parallelism"."""
    import os

    from composer.utils.parallelism import FSDP2Config

    from .compat import average_by_sum_on_gloo

    if os.environ.get("FSDP_VERSION", "2") != "2":
        raise ConfigError(f"FSDP_VERSION={os.environ['FSDP_VERSION']}: fsdp: runs on FSDP2 only (FSDP1 is "
                          "deprecated upstream and needs CUDA); unset FSDP_VERSION or set it to 2")
    if restores_moments:
        # Composer's FSDP2 path swaps the optimizer's parameters for their shards and drops any state it
        # holds (fsdp2_utils.update_optimizer_modules): the earlier phase's moments would vanish silently.
        raise ConfigError("load_from: restoring optimizer moments under fsdp: is not supported yet (sharding "
                          "would drop them); set load_from.weights_only: true, or train this phase with DDP "
                          "(fsdp: null)")
    uneven = [name for name, p in model.named_parameters() if p.shape[0] % world_size]
    if uneven:
        log.warning("fsdp: %d parameters do not split evenly over %d ranks (%s...); StableAdamW's per-tensor "
                    "RMS is then a mean of shard means (torch 2.7 DTensor), a slightly different LR clip than "
                    "DDP's", len(uneven), world_size, ", ".join(uneven[:3]))
    average_by_sum_on_gloo()
    return {"fsdp": FSDP2Config(**cfg.fsdp.composer_options())}


def rollback_data_seed(cfg: TrainConfig) -> int | None:
    """The data seed a rollback to the checkpoint this run resumes asked for; it must be the run's data.seed.
    Every rank reads the save folder (shared, like the checkpoint it resumes)."""
    seed = allowed_data_seed(cfg.save.folder)
    if seed is not None and seed != cfg.data.seed:
        raise ConfigError(f"data.seed: {cfg.save.folder} was rolled back with --data-seed {seed}, but data.seed is "
                          f"{cfg.data.seed}; add data.seed={seed} to the command (and keep it on later resumes)")
    return seed


def _export_after_checkpoint(callbacks: list) -> None:
    """Composer appends its CheckpointSaver after our callbacks; move the training-time export behind it, so
    that a step's export never runs before (or, when the export fails, instead of) that step's checkpoint."""
    exports = [cb for cb in callbacks if isinstance(cb, HFExport)]
    for cb in exports:
        callbacks.remove(cb)
    callbacks.extend(exports)
