"""The per-rank batch builder: source -> best-fit packer -> masking -> microbatches.

``BatchPipeline.next_step()`` builds one optimizer step for this rank and advances the step count
and the global slot-token clock. Its ``state_dict()`` after a step describes exactly the batches
built so far, so a pipeline restored from it builds the same following batches. It has no
threads of its own; the loader runs it in the training process or in one background process.
"""

from __future__ import annotations

from typing import Any

from modernbert_pretrain.data.collate import make_microbatch
from modernbert_pretrain.data.config import DataConfig
from modernbert_pretrain.data.errors import ResumeStateError
from modernbert_pretrain.data.masking import MLMMasker
from modernbert_pretrain.data.packing import BestFitPacker
from modernbert_pretrain.data.source import RESUME_FIX, RankLayout, ShardSource
from modernbert_pretrain.data.tokenizer_info import TokenizerInfo
from modernbert_pretrain.data.warmup import BatchSizeWarmup

STATE_VERSION = 1


class BatchPipeline:
    """Builds the steps of one rank. ``finite=True``: one pass over the data (evaluation)."""

    def __init__(self, cfg: DataConfig, info: TokenizerInfo, layout: RankLayout, schedule: BatchSizeWarmup,
                 *, finite: bool, kind: str) -> None:
        self.cfg, self.info, self.layout, self.schedule = cfg, info, layout, schedule
        self.finite, self.kind = finite, kind
        self.source = ShardSource(cfg, layout=layout, vocab_size=info.vocab_size, finite=finite)
        self.masker = MLMMasker(info, cfg.mask_prob, mask_token_prob=cfg.mask_token_prob,
                                random_token_prob=cfg.random_token_prob, seed=cfg.seed)
        self.reset()

    def reset(self) -> None:
        """Back to the first step of the first epoch (a fresh evaluation pass)."""
        self.source.epoch, self.source.cursor, self.source._ids = 0, 0, None
        self.packer = BestFitPacker(self.cfg.seq_len, self.cfg.packing_buffer_docs, self.source.next_doc)
        self.step = 0
        self.tokens_seen = 0
        self.real_tokens = 0
        self.slot_tokens = 0
        self.last_metrics: dict[str, Any] = {}

    def _microbatch_rows(self):
        return [self.packer.next_row() for _ in range(self.cfg.device_microbatch_size)]

    def next_step(self) -> dict[str, Any] | None:
        """This rank's next optimizer step, or None when a finite pass is over."""
        cfg, layout = self.cfg, self.layout
        global_batch = self.schedule.batch_size_at(self.tokens_seen)
        num_microbatches = global_batch // layout.world_size // cfg.device_microbatch_size
        microbatches = []
        for index in range(num_microbatches):
            rows = self._microbatch_rows()
            if self.finite:
                rows = [row for row in rows if row]
                if not rows:
                    break
            microbatches.append(make_microbatch(rows, seq_len=cfg.seq_len, masker=self.masker, step=self.step,
                                                rank=layout.rank, index=index))
        if not microbatches:
            return None
        batch = {
            "microbatches": microbatches,
            "num_rows": sum(mb["num_rows"] for mb in microbatches),
            "num_slot_tokens": sum(mb["num_slot_tokens"] for mb in microbatches),
            "num_real_tokens": sum(mb["num_real_tokens"] for mb in microbatches),
        }
        self._advance(global_batch, batch)
        return batch

    def _advance(self, global_batch: int, batch: dict[str, Any]) -> None:
        self.step += 1
        self.tokens_seen += global_batch * self.cfg.seq_len
        self.real_tokens += batch["num_real_tokens"]
        self.slot_tokens += batch["num_slot_tokens"]
        self.last_metrics = {
            "seq_len": self.cfg.seq_len,
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "global_batch_size": global_batch,
            "packing_efficiency": batch["num_real_tokens"] / batch["num_slot_tokens"],
            "packing_efficiency_total": self.real_tokens / max(self.slot_tokens, 1),
            "real_tokens_total": self.real_tokens,
            "slot_tokens_total": self.slot_tokens,
            "epoch": self.source.epoch,
            "empty_docs_skipped": self.source.empty_docs,
            "pending_pieces": self.packer.pending,
        }

    # ---- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain Python (ints, lists, strings): pickles and serializes to JSON."""
        packer = self.packer.state_dict()
        packer["pieces"] = packer["pieces"].tolist()
        return {
            "version": STATE_VERSION,
            "kind": self.kind,
            "rank": self.layout.rank,
            "world_size": self.layout.world_size,
            "seq_len": self.cfg.seq_len,
            "batch_sizes": self._batch_sizes(),
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "real_tokens": self.real_tokens,
            "slot_tokens": self.slot_tokens,
            "source": self.source.state_dict(),
            "packer": packer,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ResumeStateError(f"loader state version {state.get('version')!r}, expected {STATE_VERSION}")
        if state.get("kind") != self.kind:
            raise ResumeStateError(f"loader state of a {state.get('kind')!r} loader given to a {self.kind!r} loader")
        if (state["rank"], state["world_size"]) != (self.layout.rank, self.layout.world_size):
            raise ResumeStateError(
                f"loader state of rank {state['rank']}/{state['world_size']} given to rank "
                f"{self.layout.rank}/{self.layout.world_size}; exact resume needs the same world size"
            )
        saved_seq_len = state.get("seq_len")  # absent in states saved before it was recorded
        if saved_seq_len is not None and int(saved_seq_len) != self.cfg.seq_len:
            raise ResumeStateError(
                f"cannot resume the data loader: data.seq_len is {self.cfg.seq_len}, the checkpoint was saved with "
                f"{saved_seq_len}; {RESUME_FIX}"
            )
        self._check_batch_sizes(state.get("batch_sizes"))
        self.reset()
        self.source.load_state_dict(state["source"])
        self.packer.load_state_dict(state["packer"], self.source.read)
        self.step, self.tokens_seen = int(state["step"]), int(state["tokens_seen"])
        self.real_tokens, self.slot_tokens = int(state["real_tokens"]), int(state["slot_tokens"])

    def _batch_sizes(self) -> dict[str, int | None]:
        """The settings of the batch-size schedule: with seq_len they map steps to tokens."""
        cfg, start = self.cfg, self.cfg.batch_size_warmup_start
        return {"global_batch_size": cfg.global_batch_size, "batch_size_warmup_start": start,
                "batch_size_warmup_tokens": int(cfg.batch_size_warmup_tokens) if start else 0}

    def _check_batch_sizes(self, saved: dict[str, int | None] | None) -> None:
        """Another schedule under the restored token clock would change every later step's batch and the step
        count (the metrics, save/eval intervals in batches): refused like a changed seq_len."""
        if saved is None:  # absent in states saved before it was recorded
            return
        mine = self._batch_sizes()
        changed = [f"data.{key} is {value}, the checkpoint was saved with {saved.get(key)}"
                   for key, value in mine.items() if saved.get(key) != value]
        if changed:
            raise ResumeStateError(f"cannot resume the data loader: {'; '.join(changed)}; {RESUME_FIX}")

    def close(self, release_shared_memory: bool = False) -> None:
        self.source.close(release_shared_memory)
