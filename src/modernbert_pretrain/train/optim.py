"""StableAdamW with no weight decay on norms and biases, and phase-change hygiene."""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..config import OptimizerConfig

log = logging.getLogger(__name__)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight matrices and embeddings decay; LayerNorm weights and every bias do not."""
    decay, no_decay = [], []
    seen = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if isinstance(module, nn.LayerNorm) or name == "bias":
                no_decay.append(param)
            else:
                decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    from optimi import StableAdamW

    on_cuda = next(model.parameters()).is_cuda
    # optimi picks its Triton kernel whenever triton imports, and that fails without a GPU driver.
    return StableAdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
        weight_decay=cfg.weight_decay, decouple_lr=True, max_lr=cfg.lr, kahan_sum=cfg.kahan_sum,
        triton=None if on_cuda else False,
    )


def apply_phase_hyperparameters(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig) -> None:
    """After loading an earlier phase's optimizer state, set every hyperparameter from this phase's YAML.

    torch's load_state_dict copies the old phase's lr, weight_decay, betas, eps and (optimi's) max_lr
    into the param groups; decoupled weight decay scales with lr / max_lr, so a stale max_lr silently
    changes the decay. Only the moments are kept."""
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr
        group["initial_lr"] = cfg.lr
        group["max_lr"] = cfg.lr
        if "beta1" in group:  # optimi stores the betas separately
            group["beta1"], group["beta2"] = cfg.betas
        else:
            group["betas"] = tuple(cfg.betas)
        group["eps"] = cfg.eps
        group["weight_decay"] = cfg.weight_decay if group.get("name") != "no_decay" else 0.0
        if "kahan_sum" in group and cfg.kahan_sum is not None:
            group["kahan_sum"] = cfg.kahan_sum
