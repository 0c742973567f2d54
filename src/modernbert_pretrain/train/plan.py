"""The --dry-run plan: what a config will do, computed without data, checkpoints or a GPU."""

from __future__ import annotations

from typing import Any

from ..config import TrainConfig
from ..model import ModernBertForMaskedLM


def count_params(cfg: TrainConfig) -> int:
    import torch

    with torch.device("meta"):
        return ModernBertForMaskedLM(cfg.model_config(), init=False).num_parameters()


def total_steps(cfg: TrainConfig, world_size: int) -> int:
    from ..data import batch_size_schedule

    return batch_size_schedule(cfg.data, world_size).steps_for(cfg.max_tokens)


def tokens_trained(cfg: TrainConfig, world_size: int) -> int:
    """Tokens the run really trains: it stops at the first step boundary at or past max_tokens."""
    from ..data import batch_size_schedule

    schedule = batch_size_schedule(cfg.data, world_size)
    return schedule.tokens_after(schedule.steps_for(cfg.max_tokens))


def make_plan(cfg: TrainConfig, world_size: int = 1) -> dict[str, Any]:
    data, opt, sched = cfg.data, cfg.optimizer, cfg.scheduler
    model_cfg = cfg.model_config()
    decay = None
    if sched.decay is not None:
        decay = {"shape": sched.decay.shape, "tokens": sched.decay_span(cfg.max_tokens),
                 "final_lr_fraction": sched.decay.final_lr_fraction}
    return {
        "max_tokens": int(cfg.max_tokens),
        "seq_len": data.seq_len,
        "global_batch_size": data.global_batch_size,
        "device_microbatch_size": data.device_microbatch_size,
        "lr": opt.lr,
        "weight_decay": opt.weight_decay,
        "betas": list(opt.betas),
        "eps": opt.eps,
        "warmup_tokens": int(sched.warmup_tokens),
        "batch_size_warmup": ({"start": data.warmup_start_at(world_size),
                               "tokens": int(data.batch_size_warmup_tokens)}
                              if data.batch_size_warmup_start else None),
        "decay": decay,
        "lr_drops": [{"at_tokens": int(d.at_tokens), "lr_fraction": d.lr_fraction} for d in sched.drops],
        "rope_theta_global": model_cfg.global_rope_theta,
        "rope_theta_local": model_cfg.local_rope_theta,
        "mask_prob": data.mask_prob,
        "steps": total_steps(cfg, world_size),
        "tokens_trained": tokens_trained(cfg, world_size),
        "world_size": world_size,
        "load_from": None if cfg.load_from is None else cfg.load_from.path,
        "load_weights_only": None if cfg.load_from is None else cfg.load_from.weights_only,
        "init_from": None if cfg.init_from is None else {"path": cfg.init_from.path, "mode": cfg.init_from.mode},
        "model": {"preset": cfg.model.preset, "params": count_params(cfg)},
        "run_name": cfg.run_name,
        "save_folder": cfg.save.folder,
    }
