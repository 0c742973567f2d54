"""Weights & Biases through Composer, offline when no API key is set."""

from __future__ import annotations

import os


def wandb_logger(project: str, run_name: str):
    import wandb
    from composer.loggers import WandBLogger

    class LocalCheckpointsWandBLogger(WandBLogger):
        """Composer's autoresume asks every logger for the latest checkpoint; ours live in save.folder,
        and asking W&B would need its API (and a network) even for an offline run."""

        def download_file(self, *args, **kwargs):
            raise FileNotFoundError("checkpoints are not stored in W&B")

    init_kwargs = {}
    if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
        init_kwargs["mode"] = "offline"  # no key: log locally, never touch the network
    run_cls = wandb.sdk.wandb_run.Run
    if not hasattr(run_cls, "get_url"):
        # composer 0.32.1 calls Run.get_url(), which recent wandb releases replaced by the `url` property.
        run_cls.get_url = lambda self: self.url
    return LocalCheckpointsWandBLogger(project=project, name=run_name, init_kwargs=init_kwargs)
