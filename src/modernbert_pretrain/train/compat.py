"""Every place the trainer relies on Composer internals or works around a Composer behaviour, in one module.

Targets composer 0.32.1 (and wandb 0.31 for the W&B logger). Each workaround below names the upstream
behaviour it depends on; tests/test_compat.py asserts that behaviour against the installed packages, so an
upgrade that changes it fails there, in one place, instead of silently in a long run.

Two Composer behaviours are worked around elsewhere, with the upstream side pinned in the same tests:
`train/schedule.py` `TokenSchedule` sets the LR at BATCH_START because Composer steps its schedulers after a
batch but before the token clock advances; `train/callbacks.py` `MetricsFile` reads `state.total_loss_dict`,
where the trainer puts the step's rank-averaged loss.

The seam between the data package and Composer's checkpoints needs no code here, only this note:
Composer's `State` saves and restores the training loader's position only through `State._dataset_of`,
which returns `loader.dataset` when the loader is a `torch.utils.data.DataLoader` and None otherwise; it then
calls `dataset.state_dict(num_samples, from_beginning)` on save and `dataset.load_state_dict(obj)` on load.
That is the only reason `data.loader.PackedLoader` subclasses DataLoader (it never uses DataLoader's
machinery) and exposes `LoaderStateView` as its `dataset`. The data package itself imports no Composer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from composer.core import Callback, State
from composer.loggers import Logger

log = logging.getLogger(__name__)

COMPOSER_VERSIONS = ("0.32.1",)
"""Composer releases these workarounds were written and tested against."""
WANDB_VERSIONS = ("0.31.0",)
"""wandb releases the W&B patch was tested against (it applies only to releases without `Run.get_url`)."""


def check_composer_version() -> None:
    """Warn (once per process start) when another Composer than the targeted one is installed."""
    import composer

    if composer.__version__ not in COMPOSER_VERSIONS:
        log.warning("composer %s is installed; train/compat.py targets %s (run tests/test_compat.py)",
                    composer.__version__, ", ".join(COMPOSER_VERSIONS))


# ------------------------------------------------------------------------------- autoresume on shared folders
def per_node_signal_files() -> None:
    """Give each node its own signal file name.

    Upstream: `dist.get_node_signal_file_name` builds a name on global rank 0 and broadcasts it
    (`broadcast_object_list(..., src=0)`), and `Trainer._get_autoresume_checkpoint` makes local rank 0 of every
    node create and then `os.remove` that file in the save folder. On a save folder that all nodes share (how
    clusters keep checkpoints), two nodes remove the same file and one fails with FileNotFoundError at start-up.
    Appending the node rank keeps the name identical within a node and distinct across nodes."""
    from composer.utils import dist

    if getattr(dist.get_node_signal_file_name, "_per_node", False):
        return
    shared = dist.get_node_signal_file_name

    def per_node(rng=None) -> str:
        return f"{shared(rng)}_n{dist.get_node_rank()}"

    per_node._per_node = True
    per_node._upstream = shared
    dist.get_node_signal_file_name = per_node


# --------------------------------------------------------------------------------------------- W&B logger
def patch_wandb_run_url() -> None:
    """Upstream: composer 0.32.1's `WandBLogger.init` calls `wandb.run.get_url()`; wandb 0.31 has no `Run.get_url`
    any more (it became the `url` property). Restore the method as a thin alias of the property."""
    import wandb

    run_cls = wandb.sdk.wandb_run.Run
    if hasattr(run_cls, "get_url"):
        return

    def get_url(self):
        return self.url

    get_url._compat = True
    run_cls.get_url = get_url


def local_checkpoints_wandb_logger(**kwargs):
    """A `WandBLogger` that never serves checkpoints.

    Upstream: with autoresume, `Trainer._try_checkpoint_download` asks every logger destination for the latest
    checkpoint through `get_file(..., object_store=logger)` and skips a logger that raises FileNotFoundError or
    NotImplementedError. `WandBLogger.download_file` would query the W&B API (a network and a key) even for an
    offline run. Ours live in save.folder, so this logger says "not here" at once."""
    from composer.loggers import WandBLogger

    class LocalCheckpointsWandBLogger(WandBLogger):
        def download_file(self, *args, **kwargs):
            raise FileNotFoundError("checkpoints are not stored in W&B")

    return LocalCheckpointsWandBLogger(**kwargs)


# ------------------------------------------------------------------------------------ checkpoint saver
def checkpoint_saver(state: State):
    """The trainer's CheckpointSaver callback, or None."""
    from composer.callbacks import CheckpointSaver

    return next((cb for cb in state.callbacks if isinstance(cb, CheckpointSaver)), None)


def save_also_when(state: State, condition: Callable[[], bool]) -> None:
    """Make the checkpoint saver save at the next BATCH_CHECKPOINT when `condition()` holds, besides its interval.

    Upstream: Composer has no call to request a save; `CheckpointSaver.batch_checkpoint` saves when its
    `save_interval(state, event)` attribute (a callable after __init__) returns True. We wrap that attribute."""
    saver = checkpoint_saver(state)
    if saver is None:
        return
    due = saver.save_interval
    saver.save_interval = lambda s, e: condition() or due(s, e)


def wrap_checkpoint_save(state: State, on_error: Callable[[State, BaseException], None]) -> None:
    """Call `on_error(state, err)` when the checkpoint saver's save raises (it may raise a clearer error itself).

    Upstream: `CheckpointSaver.batch_checkpoint` and `epoch_checkpoint` write through the private method
    `self._save_checkpoint(state, logger)`, and Composer offers no hook around a failed save. We wrap that
    method once per saver."""
    saver = checkpoint_saver(state)
    if saver is None or getattr(saver, "_save_wrapped", False):
        return
    save = saver._save_checkpoint

    def guarded(state: State, logger: Logger):
        try:
            return save(state, logger)
        except Exception as err:
            on_error(state, err)
            raise

    saver._save_checkpoint = guarded
    saver._save_wrapped = True


# -------------------------------------------------------------------------------------- optimizer step
def wrap_optimizer_step(optimizer, allow: Callable[[], bool], on_refused: Callable[[], None]) -> None:
    """Run `allow()` between the last backward of a step and the optimizer update; skip the update when False.

    Upstream: `Trainer._train_batch` calls `optimizer.step(closure=...)` on each of `state.optimizers` (the
    closure runs every microbatch's forward and backward), or runs the microbatches and then `optimizer.step()`;
    no event fires between the last backward and the update, so a callback cannot veto a step. We replace the
    optimizer's bound `step`."""
    step = optimizer.step

    def guarded_step(closure=None):
        # Run the closure first (the microbatches), so that `allow` sees this step's gradients.
        loss = closure() if closure is not None else None
        if allow():
            step()
        else:
            on_refused()
        return loss

    optimizer.step = guarded_step


# ------------------------------------------------------------------------------------------ trainer start-up
def cheap_cpu_model() -> None:
    """Name the CPU from /proc/cpuinfo instead of a child Python process.

    Upstream: every `Trainer.__init__` calls `collect_env.get_composer_env_dict()` to log Composer's version,
    and that dict's `get_cpu_model()` calls `cpuinfo.get_cpu_info()`, which runs `python cpuinfo.py --json` in a
    subprocess: 1.1 s per rank per start on this project's 2-core CI machine (cProfile of a 2-step smoke run:
    1.14 of its 11 s), for a name the trainer then discards. The replacement keeps the function's contract (a
    string; 'CPU' when unknown)."""
    from composer.utils import collect_env

    if collect_env.get_cpu_model is _cpu_model_name:
        return
    _cpu_model_name.upstream = collect_env.get_cpu_model
    collect_env.get_cpu_model = _cpu_model_name


def _cpu_model_name() -> str:
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() or "CPU"
    except OSError:
        pass
    return platform.processor() or "CPU"


_cpu_model_name.upstream = None
"""The function it replaced, once it has (tests/test_compat.py pins that one's behaviour)."""


# ------------------------------------------------------------------------------- FSDP2 on gloo (CPU ranks)
def average_by_sum_on_gloo() -> None:
    """Let DTensor averages (``Partial("avg")``) run on gloo process groups as a sum divided by the group size.

    Upstream: torch 2.7's DTensor reduces a pending average with ``all_reduce``/``reduce_scatter`` and
    ``ReduceOp.AVG``, which NCCL has and gloo refuses ("Cannot use ReduceOp.AVG with Gloo"). Under FSDP2 the
    optimizer sees sharded DTensors, and StableAdamW's per-tensor RMS (``.mean()``) produces exactly such an
    average, in every step and in torch.distributed.checkpoint's optimizer-state init, so FSDP on CPU ranks
    stopped at the first step. A sum divided by the group size is the same average; groups on any other
    backend (NCCL) keep the upstream path untouched."""
    import torch.distributed as tdist
    from torch.distributed.tensor.placement_types import Partial

    if getattr(Partial._reduce_value, "_gloo_avg", False):
        return
    reduce_value, reduce_shard_value = Partial._reduce_value, Partial._reduce_shard_value

    def on_gloo(placement, mesh, mesh_dim) -> bool:
        return placement.reduce_op == "avg" and tdist.get_backend(mesh.get_group(mesh_dim)) == "gloo"

    def _reduce_value(self, tensor, mesh, mesh_dim):
        if on_gloo(self, mesh, mesh_dim):
            return reduce_value(Partial("sum"), tensor, mesh, mesh_dim) / mesh.size(mesh_dim)
        return reduce_value(self, tensor, mesh, mesh_dim)

    def _reduce_shard_value(self, tensor, mesh, mesh_dim, shard_spec):
        if on_gloo(self, mesh, mesh_dim):
            return reduce_shard_value(Partial("sum"), tensor, mesh, mesh_dim, shard_spec) / mesh.size(mesh_dim)
        return reduce_shard_value(self, tensor, mesh, mesh_dim, shard_spec)

    _reduce_value._gloo_avg = _reduce_shard_value._gloo_avg = True
    Partial._reduce_value, Partial._reduce_shard_value = _reduce_value, _reduce_shard_value


# --------------------------------------------------------------------------------------------- RNG on resume
class RngResume(Callback):
    """Restores the RNG state (dropout masks) of a resumed run at its first batch.

    Upstream: `Trainer._train_loop` restores a checkpoint's RNG state only when `batch_in_epoch == 0` or while it
    spins the dataloader forward; a loader that resumes itself mid-epoch (ours never replays) would continue
    with a fresh RNG, and a resumed run would no longer match an uninterrupted one bit for bit."""

    def __init__(self) -> None:
        self._pending = None

    def state_dict(self) -> dict[str, Any]:
        from composer.utils import reproducibility

        return {"rng": reproducibility.get_rng_state()}  # one entry per rank (a collective)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state.get("rng")

    def batch_start(self, state: State, logger: Logger) -> None:
        if self._pending is not None:
            from composer.utils import reproducibility

            reproducibility.load_rng_state(self._pending)
            self._pending = None
