"""Synthetic packed microbatches: document lengths, rows from the trainer's packer, the trainer's masking,
and each batch in both layouts (ours: one flat stream with cu_seqlens; transformers: padded rows)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from modernbert_pretrain import ModernBertConfig
from modernbert_pretrain.data import IGNORE_INDEX, BestFitPacker, MLMMasker, TokenizerInfo
from modernbert_pretrain.model.flops import non_embedding_params, training_flops

from .configs import BenchConfig, DocDist

_DOC_KEYS = ("median", "sigma", "tail_frac", "tail_min", "tail_alpha")


def sample_lengths(rng: np.random.Generator, n: int, dist: DocDist) -> np.ndarray:
    body = rng.lognormal(math.log(dist.median), dist.sigma, n)
    tail = dist.tail_min * (1.0 + rng.pareto(dist.tail_alpha, n))
    lengths = np.where(rng.random(n) < dist.tail_frac, tail, body)
    return np.maximum(np.minimum(lengths, 1e7), dist.min_len).astype(np.int64)


class RowSource:
    """Rows of document-chunk lengths from the project's BestFitPacker (the trainer's packer, buffer of
    1024 pending pieces), fed with synthetic documents. Best fit takes the longest pieces first, so the
    first rows over-represent long documents: `warmup_rows` rows are packed and dropped before use."""

    def __init__(self, seq_len: int, dist: DocDist, rng: np.random.Generator, buffer_docs: int = 1024,
                 warmup_rows: int = 2000) -> None:
        self.seq_len, self.dist, self.rng = seq_len, dist, rng
        self._lengths: list[int] = []
        self._zero = np.zeros(1, dtype=np.int64)  # pieces only carry lengths here; tokens are drawn later
        self._ids = 0
        self.packer = BestFitPacker(seq_len, buffer_docs, self._next_doc)
        self.name = f"modernbert_pretrain BestFitPacker (buffer {buffer_docs})"
        for _ in range(warmup_rows):
            self.row()

    def _next_doc(self) -> tuple[int, np.ndarray]:
        if not self._lengths:
            self._lengths = sample_lengths(self.rng, 256, self.dist).tolist()
        self._ids += 1
        length = self._lengths.pop()
        return self._ids, np.broadcast_to(self._zero, (length,))  # a length-only view, no copy

    def row(self) -> list[int]:
        return [piece.tokens.size for piece in self.packer.next_row()]


@dataclass
class Batch:
    """One microbatch, kept in both layouts on the device."""

    row_docs: list[list[int]]
    real_tokens: int
    masked_tokens: int
    doc_lengths: np.ndarray
    ours: dict[str, Any]
    hf: dict[str, Any]
    flops: float = 0.0
    """Model FLOPs of one training step on this batch (modernbert_pretrain.model.flops)."""


def token_info(cfg: ModernBertConfig) -> tuple[TokenizerInfo, int, int]:
    """The model's special ids as the masker's tokenizer info, and the id range [lo, hi) that synthetic
    document bodies draw from (clear of every special id)."""
    special = {cfg.cls_token_id, cfg.sep_token_id, cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id}
    if cfg.mask_token_id is not None:
        special.add(cfg.mask_token_id)
    lo, hi = (max(special) + 1, cfg.vocab_size) if max(special) < cfg.vocab_size // 2 else (0, min(special))
    mask_id = cfg.mask_token_id if cfg.mask_token_id is not None else lo
    special.add(mask_id)
    info = TokenizerInfo(name="synthetic", vocab_size=cfg.vocab_size, special_ids=tuple(sorted(special)),
                         mask_id=mask_id, cls_id=cfg.cls_token_id, sep_id=cfg.sep_token_id,
                         pad_id=cfg.pad_token_id)
    return info, lo, hi


def _fill_rows(row_docs: list[list[int]], seq: int, cfg: ModernBertConfig, lo: int, hi: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Padded token rows, each document [CLS] body [SEP]. Returns (ids, attention_mask), both (rows, seq)."""
    ids = np.full((len(row_docs), seq), cfg.pad_token_id, dtype=np.int64)
    attn = np.zeros((len(row_docs), seq), dtype=np.int64)
    for r, docs in enumerate(row_docs):
        pos = 0
        for length in docs:
            body = rng.integers(lo, hi, length)
            body[0], body[-1] = cfg.cls_token_id, cfg.sep_token_id
            ids[r, pos:pos + length] = body
            attn[r, pos:pos + length] = 1
            pos += length
    return ids, attn


def _ours_layout(row_docs: list[list[int]], seq: int, inputs: np.ndarray, labels: np.ndarray,
                 attn: np.ndarray, static_shapes: bool) -> dict[str, Any]:
    """One flat stream with document boundaries; with static shapes each row's padding tail is one more
    document without labels, so every batch has rows * seq tokens."""
    seg: list[int] = []
    for docs in row_docs:
        seg += docs
        if static_shapes and sum(docs) < seq:
            seg.append(seq - sum(docs))
    keep = slice(None) if static_shapes else attn.reshape(-1) == 1
    cu = np.concatenate([[0], np.cumsum(seg)]).astype(np.int32)
    return {
        "input_ids": torch.from_numpy(inputs.reshape(-1)[keep]),
        "labels": torch.from_numpy(labels.reshape(-1)[keep]),
        "cu_seqlens": torch.from_numpy(cu),
        "max_seqlen": int(max(seg)),  # compiled runs pass seq_len instead (one value, no recompiles)
    }


def make_batch(rows: int, source: RowSource, cfg: ModernBertConfig, masker: MLMMasker, index: int,
               rng: np.random.Generator, static_shapes: bool, device: torch.device) -> Batch:
    seq = source.seq_len
    _, lo, hi = token_info(cfg)
    row_docs = [source.row() for _ in range(rows)]
    ids, attn = _fill_rows(row_docs, seq, cfg, lo, hi, rng)
    flat_inputs, flat_labels = masker(ids.reshape(-1), step=index, rank=0, index=0)  # padding is special
    inputs, labels = flat_inputs.reshape(ids.shape), flat_labels.reshape(ids.shape)
    ours = _ours_layout(row_docs, seq, inputs, labels, attn, static_shapes)
    hf = {"input_ids": torch.from_numpy(inputs), "attention_mask": torch.from_numpy(attn),
          "labels": torch.from_numpy(labels)}
    doc_lengths = np.array([n for docs in row_docs for n in docs], dtype=np.int64)
    return Batch(row_docs, int(attn.sum()), int((labels != IGNORE_INDEX).sum()), doc_lengths,
                 {k: v.to(device) if torch.is_tensor(v) else v for k, v in ours.items()},
                 {k: v.to(device) for k, v in hf.items()})


def doc_dist(args, bc: BenchConfig) -> DocDist:
    """The configuration's document lengths with any --doc-* overrides."""
    over = {k: getattr(args, f"doc_{k}") for k in _DOC_KEYS}
    return dataclasses.replace(bc.docs, **{k: v for k, v in over.items() if v is not None})


def pool_stats(pool: list[Batch], rows: int, seq_len: int, n_params: int) -> dict:
    lengths = np.concatenate([b.doc_lengths for b in pool])
    real = sum(b.real_tokens for b in pool)
    return {
        "rows": rows, "seq_len": seq_len, "batches": len(pool),
        "packing_efficiency": real / (len(pool) * rows * seq_len),
        "docs_per_row": len(lengths) / (len(pool) * rows),
        "doc_len_mean": float(lengths.mean()), "doc_len_p50": float(np.percentile(lengths, 50)),
        "doc_len_p90": float(np.percentile(lengths, 90)), "doc_len_max": int(lengths.max()),
        "token_weighted_doc_len": float((lengths ** 2).sum() / lengths.sum()),
        "mflop_per_real_token": sum(b.flops for b in pool) / real / 1e6,
        "non_embedding_params": n_params,
    }


def build_pool(args, bc: BenchConfig, cfg: ModernBertConfig, rows: int, static: bool,
               device: torch.device) -> tuple[list[Batch], dict]:
    """args.batches distinct microbatches on the device, each with its FLOP count, and their statistics."""
    dist = doc_dist(args, bc)
    rng = np.random.default_rng(args.seed)
    source = RowSource(bc.seq_len, dist, rng)
    masker = MLMMasker(token_info(cfg)[0], args.mask_prob, seed=args.seed)
    n_params = non_embedding_params(cfg)
    pool = []
    for i in range(args.batches):
        batch = make_batch(rows, source, cfg, masker, i, rng, static, device)
        batch.flops = training_flops(cfg, batch.doc_lengths, batch.masked_tokens, n_params)
        pool.append(batch)
    stats = pool_stats(pool, rows, bc.seq_len, n_params)
    stats.update({"packer": source.name, "doc_dist": dataclasses.asdict(dist)})
    return pool, stats
