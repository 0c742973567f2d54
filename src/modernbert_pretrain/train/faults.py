"""Guards for long runs: preemption (SIGTERM), non-finite losses, and recovery of a half-written save."""

from __future__ import annotations

import logging
import signal
from typing import Any

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from .compat import save_also_when, wrap_optimizer_step

log = logging.getLogger(__name__)


class Preempted(RuntimeError):  # noqa: N818 - an outcome, not an error
    """The run saved a checkpoint after SIGTERM and stopped; run the same command again to resume."""


class NonFiniteLoss(RuntimeError):
    """The loss (and so the gradients) became NaN or Inf at a step; the last good checkpoint is kept."""


class Preemption(Callback):
    """On SIGTERM (what SLURM sends before it kills a job), save a checkpoint at the next step boundary
    and stop cleanly. All ranks agree on the step: the flag is reduced across ranks after every step."""

    def __init__(self, signals=(signal.SIGTERM,)) -> None:
        self.signals = signals
        self.requested = False
        self.preempted = False
        self._previous: dict[int, Any] = {}

    def _on_signal(self, signum, frame) -> None:
        self.requested = True

    def fit_start(self, state: State, logger: Logger) -> None:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        save_also_when(state, lambda: self.preempted)

    def batch_end(self, state: State, logger: Logger) -> None:
        flag = torch.tensor([1 if self.requested else 0], dtype=torch.int32,
                            device="cuda" if torch.cuda.is_available() and dist.is_initialized() else "cpu")
        dist.all_reduce(flag, reduce_operation="MAX")
        if int(flag.item()):
            self.preempted = True  # the checkpoint saver, which runs next, saves this step

    def before_dataloader(self, state: State, logger: Logger) -> None:
        if self.preempted:
            raise Preempted(f"stopped after step {int(state.timestamp.batch.value)} on SIGTERM; its checkpoint "
                            "is saved, run the same command again to resume")

    def fit_end(self, state: State, logger: Logger) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class NonFiniteGuard(Callback):
    """Checks the gradients before every optimizer step. NaN/Inf (a non-finite loss makes them so):
    `stop` raises at that step, leaving the last good checkpoint as it is; `skip` drops the batch (no
    optimizer step, no weight decay) and counts it."""

    def __init__(self, policy: str = "stop") -> None:
        if policy not in ("stop", "skip"):
            raise ValueError(f"non-finite policy must be 'stop' or 'skip', got {policy!r}")
        self.policy = policy
        self.skipped = 0

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped = int(state.get("skipped", 0))

    def fit_start(self, state: State, logger: Logger) -> None:
        for optimizer in state.optimizers:
            self._wrap(optimizer, state, logger)

    def _wrap(self, optimizer, state: State, logger: Logger) -> None:
        def finite() -> bool:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True

        def refused() -> None:
            batch = int(state.timestamp.batch.value) + 1
            if self.policy == "stop":
                raise NonFiniteLoss(f"non-finite loss/gradients at step {batch} (tokens seen "
                                    f"{int(state.timestamp.token.value)}); the weights were not updated and the "
                                    "last good checkpoint is kept. Lower the LR, check the data, or set "
                                    "nonfinite_loss: skip")
            self.skipped += 1
            log.warning("non-finite loss at step %d: batch skipped (%d so far)", batch, self.skipped)
            optimizer.zero_grad(set_to_none=True)
            logger.log_metrics({"train/skipped_nonfinite_batches": self.skipped})

        wrap_optimizer_step(optimizer, finite, refused)
