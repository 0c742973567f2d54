"""Composer callbacks: loader state in checkpoints, run metadata, and per-step metrics."""

from __future__ import annotations

import logging
import resource
import time
from typing import Any

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from ..constants import IGNORE_INDEX

log = logging.getLogger(__name__)


class RunInfo(Callback):
    """Carries what a checkpoint needs to be understood later: the model config, the resolved
    training config, the tokenizer and the phase. Export and tiling read it back."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = dict(info)

    def state_dict(self) -> dict[str, Any]:
        from ..checkpoints import encode_run_info

        return encode_run_info(self.info)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from ..checkpoints import decode_run_info

        state = decode_run_info(state)
        # The running config is authoritative; keep the checkpoint's under `resumed_from`. The prior (tokens seen
        # before the run) was fixed when the run started: a resumed run has none of its own and keeps the saved one.
        if "prior" in state and "prior" not in self.info:
            self.info["prior"] = state["prior"]
        self.info.setdefault("resumed_from", state)


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak of known accelerators (for MFU); None when unknown (CPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    table = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "B200": 2250e12}
    for key, value in table.items():
        if key in name:
            return value
    return None


class TrainMetrics(Callback):
    """Per-step: real tokens/s, MFU, packing efficiency, global batch size, tokens seen, LR, memory."""

    def __init__(self, model_config) -> None:
        from ..model.flops import non_embedding_params

        self.model_config = model_config
        self.n_params = non_embedding_params(model_config)
        self.peak = peak_flops(torch.device("cuda")) if torch.cuda.is_available() else None
        self._t0 = None

    def before_train_batch(self, state: State, logger: Logger) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()

    def after_train_batch(self, state: State, logger: Logger) -> None:
        if self._t0 is None:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - self._t0
        from ..model.flops import training_flops

        stats = self._batch_stats(state.batch)
        flops = training_flops(self.model_config, stats["lengths"], stats["masked"], self.n_params)
        totals = torch.tensor([stats["real"], stats["slots"], stats["rows"], stats["masked"], flops],
                              dtype=torch.float64, device="cuda" if torch.cuda.is_available() else "cpu")
        dist.all_reduce(totals, reduce_operation="SUM")
        real, slots, rows, masked, flops = totals.tolist()
        metrics = {
            "throughput/real_tokens_per_s": real / elapsed,
            "data/packing_efficiency": real / max(slots, 1),
            "data/global_batch_size": rows,
            "data/masked_fraction": masked / max(real, 1),
            "time/tokens_seen": int(state.timestamp.token.value),
            "lr": state.optimizers[0].param_groups[0]["lr"],
        }
        per_device = flops / elapsed / dist.get_world_size()  # FLOP count: model/flops.py
        metrics["throughput/model_tflops_per_s_per_device"] = per_device / 1e12
        if self.peak:
            metrics["throughput/mfu"] = per_device / self.peak
        if torch.cuda.is_available():
            metrics["memory/peak_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
        else:
            metrics["memory/max_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        logger.log_metrics(metrics)

    @staticmethod
    def _batch_stats(batch: dict) -> dict:
        real = slots = rows = masked = 0
        lengths = []
        for mb in batch["microbatches"]:
            cu = mb["cu_seqlens"].detach().to("cpu", torch.int64)
            doc = (cu[1:] - cu[:-1]).tolist()
            lengths.extend(doc)
            real += sum(doc)
            slots += int(mb["num_slot_tokens"])
            rows += int(mb["num_rows"])
            masked += int(mb["num_masked"]) if "num_masked" in mb else int((mb["labels"] != IGNORE_INDEX).sum())
        return {"real": real, "slots": slots, "rows": rows, "masked": masked, "lengths": lengths}


class HFExport(Callback):
    """Writes a Hugging Face folder (config, safetensors, tokenizer, metadata) at an interval, on rank 0.

    It exports the in-memory weights, so it needs no checkpoint read-back: one safetensors write of the
    model (about 600 MB for base in fp32), far shorter than the interval."""

    def __init__(self, folder: str, interval: str, *, tokenizer: str, phase: str, train_config: dict,
                 dtype: str = "float32") -> None:
        from composer.utils.misc import create_interval_scheduler

        self.folder = folder
        self.interval = interval
        self.tokenizer = tokenizer
        self.phase = phase
        self.train_config = train_config
        self.dtype = dtype
        self._due = create_interval_scheduler(interval, include_end_of_training=True)
        self.exported: list[str] = []
        self.failed: list[int] = []
        """Steps whose export hit a full disk (logged; training went on)."""

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        from composer.core import Event

        if self._due(state, Event.BATCH_CHECKPOINT):
            self._export(state)

    def fit_end(self, state: State, logger: Logger) -> None:
        # The interval scheduler treats the last batch as due; export it if batch_checkpoint did not.
        stamp = int(state.timestamp.batch.value)
        if stamp in self.failed:
            return
        if not any(path.endswith(f"/step{stamp}-tok{int(state.timestamp.token.value)}") for path in self.exported):
            self._export(state)

    def _export(self, state: State) -> None:
        if dist.get_global_rank() != 0:
            return
        from pathlib import Path

        from ..checkpoints import cumulative
        from ..export import DTYPES, ExportNoSpace, write_folder

        model = state.model.module.model if hasattr(state.model, "module") else state.model.model
        step, tokens = int(state.timestamp.batch.value), int(state.timestamp.token.value)
        info = next((cb.info for cb in state.callbacks if isinstance(cb, RunInfo)),
                    {"phase": self.phase, "train_config": self.train_config})
        meta = {"phase": self.phase, "step": step, "tokens_seen": tokens, **cumulative(info, step, tokens),
                "lr": float(state.optimizers[0].param_groups[0]["lr"]), "tokenizer": self.tokenizer,
                "train_config": self.train_config, "checkpoint": None}
        try:
            folder, _ = write_folder(model, meta, Path(self.folder), dtype=DTYPES[self.dtype], tokenizer=self.tokenizer,
                                     tokenizer_field="data.tokenizer")
        except ExportNoSpace as err:
            # The step's checkpoint is already saved (the export runs after it): a month-long run must not stop
            # for a copy that `python -m modernbert_pretrain.export` can write later.
            log.error("training-time export skipped, training goes on: %s; export this step later from its "
                      "checkpoint with python -m modernbert_pretrain.export", err)
            self.failed.append(step)
            return
        self.exported.append(str(folder))


class MetricsFile(Callback):
    """Appends one JSON line per step (rank 0): batch (1-based), tokens after it, the step's loss (token-weighted
    over microbatches and ranks), the LR it used and the global batch size. Handy for plots, golden-loss checks and comparing resumed runs."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._pending: dict | None = None

    def after_train_batch(self, state: State, logger: Logger) -> None:
        # The LR was set for this step at its start and is not changed before the next one.
        self._pending = {"lr": float(state.optimizers[0].param_groups[0]["lr"])}

    def batch_end(self, state: State, logger: Logger) -> None:
        import json
        from pathlib import Path

        if self._pending is None or dist.get_global_rank() != 0:
            return
        # Composer's sample clock already sums every rank's rows: the step's global batch size.
        rows = int(state.timestamp.sample.value) - int(state.previous_timestamp.sample.value)
        record = {"batch": int(state.timestamp.batch.value), "tokens": int(state.timestamp.token.value),
                  "loss": self.step_loss(state), "lr": self._pending["lr"], "global_batch_size": rows}
        self._pending = None
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    @staticmethod
    def step_loss(state: State) -> float:
        """The step's loss: Composer's total over microbatches, each weighted by its share of the masked tokens
        (accumulate_train_batch_on_tokens), summed over ranks and divided by the world size, which makes it the
        mean over every masked token of the global batch. `state.loss` is only the last microbatch's."""
        return float(state.total_loss_dict["loss/train/total"])


class ReleaseRunLock(Callback):
    """Releases the run's lock (train/runlock.py) when the trainer closes."""

    def __init__(self, lock) -> None:
        self.lock = lock

    def close(self, state, logger) -> None:
        self.lock.release()
