"""The loader the trainer iterates, its resumable state, and the factories that build it.

Each item is one optimizer step of this rank::

    {"microbatches": [mb0, mb1, ...], "num_rows": int, "num_slot_tokens": int, "num_real_tokens": int}

with each microbatch in the model's unpadded form (see ``collate.make_microbatch``). The training
loader never ends (epochs roll over inside the source): bound training by tokens or steps. The
evaluation loader makes one pass with a fixed batch size, the same batches every pass.

``PackedLoader`` subclasses ``torch.utils.data.DataLoader`` only so that Composer's ``State``
finds ``loader.dataset`` and saves/restores its ``state_dict`` in checkpoints; it never uses the
DataLoader machinery itself. That seam is described, and its upstream side tested, with the other
Composer dependencies in ``train/compat.py`` (this package imports no Composer).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from modernbert_pretrain.data.config import DataConfig
from modernbert_pretrain.data.errors import ResumeStateError
from modernbert_pretrain.data.fingerprint import check_stream_tokenizers
from modernbert_pretrain.data.pipeline import BatchPipeline
from modernbert_pretrain.data.source import RankLayout
from modernbert_pretrain.data.tokenizer_info import TokenizerInfo, resolve_config, tokenizer_info
from modernbert_pretrain.data.warmup import BatchSizeWarmup

log = logging.getLogger(__name__)


@dataclass
class PipelineSpec:
    """Everything needed to build a rank's pipeline (picklable, for the background process)."""

    cfg: DataConfig
    info: TokenizerInfo
    layout: RankLayout
    schedule: BatchSizeWarmup
    finite: bool
    kind: str

    def build(self) -> BatchPipeline:
        return BatchPipeline(self.cfg, self.info, self.layout, self.schedule, finite=self.finite, kind=self.kind)


class LoaderStateView(IterableDataset):
    """``loader.dataset``: the hooks Composer's State calls on checkpoint save and load.

    Composer calls ``state_dict(num_samples, from_beginning)`` on every rank and writes rank 0's
    result, then hands that same object to ``load_state_dict`` on every rank. So the saved object
    holds the states of all ranks (gathered when torch.distributed is initialized) and each rank
    restores its own. ``num_samples`` is ignored: the loader counts its own steps.
    """

    def __init__(self, loader: PackedLoader) -> None:
        self._loader = loader

    def __iter__(self):
        return iter(self._loader)

    def state_dict(self, num_samples: int = 0, from_beginning: bool = True) -> dict[str, Any]:
        del num_samples, from_beginning
        return self._loader.state_dict_all_ranks()

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        self._loader.load_state_dict(obj)


class PackedLoader(DataLoader):
    """Iterable of optimizer steps with exact, constant-time resume."""

    def __init__(self, spec: PipelineSpec, *, num_workers: int = 0, prefetch_steps: int = 2) -> None:
        super().__init__(LoaderStateView(self), batch_size=None, num_workers=0)
        self.spec = spec
        self.background = num_workers == 1
        self.prefetch_steps = prefetch_steps
        self.pipeline: BatchPipeline | None = None if self.background else spec.build()
        # Background mode builds the pipeline here too (all ranks together, as streaming's setup
        # expects) but never reads with it: each worker process starts from a fork of it.
        self._template: BatchPipeline | None = spec.build() if self.background else None
        self._state: dict[str, Any] | None = None  # background mode: state after the last yielded step
        self._worker = None
        self.reseed: int | None = None
        """A data seed that a saved state of another seed may be resumed with (set for a rollback with another
        data seed): the epoch and position are kept, the order from there on is that of this seed."""
        self.metrics: dict[str, Any] = {}
        """After each step: step, tokens_seen, global_batch_size, packing_efficiency (this step),
        packing_efficiency_total (cumulative), real/slot token totals, epoch, empty docs skipped."""

    # ---- facts ---------------------------------------------------------------------------------

    @property
    def schedule(self) -> BatchSizeWarmup:
        """Global batch size as a function of slot tokens (shared by all ranks)."""
        return self.spec.schedule

    @property
    def step(self) -> int:
        if self.pipeline is not None:
            return self.pipeline.step
        return int(self._state["step"]) if self._state else 0

    @property
    def tokens_seen(self) -> int:
        """Global slot-token clock: sequences x seq_len over all ranks, after the last step."""
        if self.pipeline is not None:
            return self.pipeline.tokens_seen
        return int(self._state["tokens_seen"]) if self._state else 0

    def __len__(self) -> int:
        raise TypeError("PackedLoader has no length: the training loader is endless, evaluation is one pass")

    # ---- iteration -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.background:
            return self._iter_background()
        return self._iter_in_process()

    def _iter_in_process(self) -> Iterator[dict[str, Any]]:
        pipeline = self.pipeline
        if self.spec.finite:
            pipeline.reset()
        while True:
            batch = pipeline.next_step()
            if batch is None:
                return
            self.metrics = dict(pipeline.last_metrics)
            yield batch

    def _iter_background(self) -> Iterator[dict[str, Any]]:
        from modernbert_pretrain.data.background import BackgroundBuilder

        self._stop_worker()
        start = None if self.spec.finite else self._state
        self._worker = worker = BackgroundBuilder(self.spec, self._template, start, self.prefetch_steps)
        try:
            for batch, state, metrics in worker:
                if not self.spec.finite:
                    self._state = state
                self.metrics = metrics
                yield batch
        finally:
            worker.stop()

    def _stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def close(self) -> None:
        """Stop the background process (if any) and the shard prefetch threads."""
        self._stop_worker()
        for pipeline in (self.pipeline, self._template):
            if pipeline is not None:
                pipeline.close()

    # ---- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """This rank's state after the last yielded step (plain Python, no tensors)."""
        if self.pipeline is not None:
            return self.pipeline.state_dict()
        if self._state is None:
            layout = self.spec.layout
            return {"version": 1, "kind": self.spec.kind, "rank": layout.rank, "world_size": layout.world_size,
                    "fresh": True}
        return self._state

    def state_dict_all_ranks(self) -> dict[str, Any]:
        """``{"ranks": [state of rank 0, state of rank 1, ...]}`` (a collective when distributed)."""
        mine = self.state_dict()
        world = self.spec.layout.world_size
        if world == 1:
            return {"ranks": [mine]}
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise RuntimeError("state_dict_all_ranks with world_size > 1 needs torch.distributed initialized")
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, mine)
        return {"ranks": gathered}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict()`` or ``state_dict_all_ranks()``; reads only the packer's buffer."""
        layout = self.spec.layout
        if "ranks" in state:
            ranks = state["ranks"]
            if len(ranks) != layout.world_size:
                raise ResumeStateError(
                    f"checkpoint holds loader states of {len(ranks)} ranks, this run has {layout.world_size}; "
                    f"exact data resume needs the same world size"
                )
            state = ranks[layout.rank]
        state = self._reseeded(state)
        if state.get("fresh"):
            if (state["rank"], state["world_size"]) != (layout.rank, layout.world_size):
                raise ResumeStateError(f"loader state of rank {state['rank']}/{state['world_size']} given to "
                                       f"rank {layout.rank}/{layout.world_size}")
            if self.pipeline is not None:
                self.pipeline.reset()
            self._state = None
            return
        if self.pipeline is not None:
            self.pipeline.load_state_dict(state)
        else:
            self._state = state

    def _reseeded(self, state: dict[str, Any]) -> dict[str, Any]:
        """The state with its recorded data seed replaced by `reseed` (a copy; the state as it was otherwise)."""
        order = ((state.get("source") or {}).get("fingerprint") or {}).get("order")
        if self.reseed is None or not order or order[0] == self.reseed:
            return state
        state = copy.deepcopy(state)
        state["source"]["fingerprint"]["order"][0] = self.reseed
        log.warning("data: resuming the position of a state saved with data seed %s in the order of data seed %s",
                    order[0], self.reseed)
        return state

    def __del__(self) -> None:
        try:
            self._stop_worker()
        except Exception:
            pass


# ---- factories ------------------------------------------------------------------------------------


def batch_size_schedule(cfg: DataConfig, world_size: int) -> BatchSizeWarmup:
    """The global batch-size schedule of ``cfg`` on ``world_size`` ranks (warmup or constant)."""
    cfg.check_world_size(world_size)
    granularity = cfg.device_microbatch_size * world_size
    start = cfg.warmup_start_at(world_size)
    if start is None:
        return BatchSizeWarmup.constant(cfg.global_batch_size, cfg.seq_len, granularity)
    if start != cfg.batch_size_warmup_start:
        log.warning("data.batch_size_warmup_start=%d is not whole microbatches (%d x world size %d): the warmup "
                    "starts at %d sequences%s", cfg.batch_size_warmup_start, cfg.device_microbatch_size,
                    world_size, start, " (no warmup: that is the full batch)" if start == cfg.global_batch_size
                    else "")
    return BatchSizeWarmup(start, cfg.global_batch_size, int(cfg.batch_size_warmup_tokens), cfg.seq_len, granularity)


def _spec(cfg: DataConfig, rank: int, world_size: int, config_dir: str | None, *, finite: bool,
          kind: str) -> PipelineSpec:
    if not isinstance(cfg, DataConfig):
        raise TypeError(f"expected a DataConfig, got {type(cfg).__name__}; use DataConfig.from_dict")
    layout = RankLayout.from_args(rank, world_size)
    resolved = resolve_config(cfg, config_dir)
    if finite:
        resolved = resolved.with_overrides(batch_size_warmup_start=None)
    schedule = batch_size_schedule(resolved, world_size)
    check_stream_tokenizers(resolved)
    return PipelineSpec(resolved, tokenizer_info(resolved.tokenizer), layout, schedule, finite, kind)


def build_train_loader(cfg: DataConfig, *, rank: int, world_size: int,
                       config_dir: str | None = None) -> PackedLoader:
    """Endless loader of training steps for one rank, with batch-size warmup if configured.

    ``config_dir`` is the directory relative paths in ``cfg`` are taken from (the YAML's folder).
    """
    spec = _spec(cfg, rank, world_size, config_dir, finite=False, kind="train")
    return PackedLoader(spec, num_workers=cfg.num_workers, prefetch_steps=cfg.prefetch_steps)


def build_eval_loader(cfg: DataConfig, *, rank: int, world_size: int,
                      config_dir: str | None = None) -> PackedLoader:
    """One pass over held-out data at ``global_batch_size`` (no warmup); identical every pass.

    Ranks may end after different numbers of steps (Composer stops all ranks at the first end).
    """
    spec = _spec(cfg, rank, world_size, config_dir, finite=True, kind="eval")
    return PackedLoader(spec, num_workers=cfg.num_workers, prefetch_steps=cfg.prefetch_steps)


def config_dir_of(path: str) -> str:
    """Directory of a config file: what relative data paths in it are relative to (as train.py sees it)."""
    from modernbert_pretrain.configfile import config_dir

    return str(config_dir(path))
