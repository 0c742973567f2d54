"""Guards for long runs: preemption (SIGTERM), non-finite losses, and recovery of a half-written save."""

from __future__ import annotations

import logging
import shutil
import signal
from pathlib import Path
from typing import Any

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from ..checkpoints import LATEST
from ..diskspace import NoSpaceLeft, out_of_space
from .compat import save_also_when, wrap_checkpoint_save, wrap_optimizer_step

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
    optimizer step, no weight decay) and counts it, up to `max_skipped` steps in a row: the next one in that row
    raises like `stop`. `check_finished` refuses a run whose last step was skipped."""

    def __init__(self, policy: str = "stop", max_skipped: int = 5) -> None:
        if policy not in ("stop", "skip"):
            raise ValueError(f"non-finite policy must be 'stop' or 'skip', got {policy!r}")
        self.policy = policy
        self.max_skipped = max_skipped
        self.skipped = 0
        self.consecutive = 0
        """Skipped steps since the last step that updated the weights (saved in checkpoints, so a resumed run
        keeps counting)."""

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped = int(state.get("skipped", 0))
        self.consecutive = int(state.get("consecutive", 0))

    def fit_start(self, state: State, logger: Logger) -> None:
        for optimizer in state.optimizers:
            self._wrap(optimizer, state, logger)

    def _wrap(self, optimizer, state: State, logger: Logger) -> None:
        def finite() -> bool:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            ok = bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True
            if ok:
                self.consecutive = 0
            return ok

        def refused() -> None:
            batch = int(state.timestamp.batch.value) + 1
            tokens = int(state.timestamp.token.value)
            if self.policy == "stop":
                raise NonFiniteLoss(f"non-finite loss/gradients at step {batch} (tokens seen {tokens}); the weights "
                                    "were not updated and the last good checkpoint is kept. Lower the LR, check the "
                                    "data, or set nonfinite_loss: skip")
            if self.consecutive >= self.max_skipped:
                raise NonFiniteLoss(f"non-finite loss/gradients at step {batch} (tokens seen {tokens}), after "
                                    f"{self.consecutive} skipped steps in a row (nonfinite_max_skipped="
                                    f"{self.max_skipped}): the weights are likely broken. The last good checkpoint "
                                    f"is kept; {_BROKEN_FIX}")
            self.skipped += 1
            self.consecutive += 1
            log.warning("non-finite loss at step %d: batch skipped (%d so far, %d in a row of at most %d)", batch,
                        self.skipped, self.consecutive, self.max_skipped)
            optimizer.zero_grad(set_to_none=True)
            logger.log_metrics({"train/skipped_nonfinite_batches": self.skipped})

        wrap_optimizer_step(optimizer, finite, refused)

    def check_finished(self, state: State) -> None:
        """At the end of a run: its last step must have updated the weights, or it is not complete."""
        if self.consecutive:
            raise NonFiniteLoss(f"the last {self.consecutive} step(s) of the run, up to step "
                                f"{int(state.timestamp.batch.value)}, were all skipped (non-finite loss): the run is "
                                f"not marked complete. {_BROKEN_FIX}")


_BROKEN_FIX = ("Roll back to an earlier checkpoint (python -m modernbert_pretrain.train.rollback <save.folder> "
               "<checkpoint>), lower the LR or check the data, then run the same command again")


class SaveSpaceGuard(Callback):
    """Turns a checkpoint save that fills the disk into one message: "no space left on device", the folder,
    the free space and the space one checkpoint needs (the size of the last one, else an estimate)."""

    def __init__(self, folder: str, estimate_bytes: int) -> None:
        self.folder = Path(folder)
        self.estimate_bytes = estimate_bytes

    def fit_start(self, state: State, logger: Logger) -> None:
        wrap_checkpoint_save(state, self._on_save_error)

    def _on_save_error(self, state: State, err: BaseException) -> None:
        kind = out_of_space(err)
        if kind is None or kind == "writer" and not self._short_of_space():
            return  # not a full disk: the original error propagates
        raise NoSpaceLeft(self.message(int(state.timestamp.batch.value))) from err

    def _short_of_space(self) -> bool:
        """A writer failure is a full disk only when the folder has less room than one checkpoint."""
        try:
            return shutil.disk_usage(self.folder).free < self.needed_bytes()
        except OSError:
            return False

    def needed_bytes(self) -> int:
        latest = self.folder / LATEST
        if latest.is_symlink() and latest.exists():
            return max(latest.stat().st_size, self.estimate_bytes)
        return self.estimate_bytes

    def message(self, step: int) -> str:
        free = shutil.disk_usage(self.folder).free if self.folder.exists() else 0
        latest = self.folder / LATEST
        committed = latest.resolve().name if latest.is_symlink() and latest.exists() else "none yet"
        return (f"no space left on device while saving the checkpoint of step {step} to {self.folder}: "
                f"{free / 2**30:.2f} GiB free, one checkpoint needs about {self.needed_bytes() / 2**30:.2f} GiB. "
                f"The last complete checkpoint ({committed}) is intact; free space or lower save.keep, then run "
                "the same command again to resume (the partial file is removed at start-up)")
