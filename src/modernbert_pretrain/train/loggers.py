"""Weights & Biases through Composer, offline when no API key is set."""

from __future__ import annotations

import os

from .compat import local_checkpoints_wandb_logger, patch_wandb_run_url


def wandb_logger(project: str, run_name: str):
    init_kwargs = {}
    if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
        init_kwargs["mode"] = "offline"  # no key: log locally, never touch the network
    patch_wandb_run_url()
    return local_checkpoints_wandb_logger(project=project, name=run_name, init_kwargs=init_kwargs)
