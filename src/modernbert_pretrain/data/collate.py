"""Stage 4: rows of pieces -> one unpadded microbatch in the model's input form.

The microbatch is a flat stream: the pieces of all rows concatenated (no padding), with
``cu_seqlens`` marking document boundaries; ``num_masked`` counts the positions with a label. The
model takes
``model(input_ids=..., labels=..., cu_seqlens=..., max_seqlen=...)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from modernbert_pretrain.data.masking import IGNORE_INDEX, MLMMasker
from modernbert_pretrain.data.packing import Piece


def flatten_rows(rows: list[list[Piece]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate rows. Returns (ids (total,) int64, lengths (num_docs,) int64)."""
    pieces = [p.tokens for row in rows for p in row]
    if not pieces:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lengths = np.fromiter((t.size for t in pieces), dtype=np.int64, count=len(pieces))
    ids = np.concatenate(pieces).astype(np.int64)  # uint16/uint32 pieces -> (total,) int64
    return ids, lengths


def make_microbatch(rows: list[list[Piece]], *, seq_len: int, masker: MLMMasker, step: int, rank: int,
                    index: int) -> dict[str, Any]:
    """Flatten, mask and convert one microbatch of ``len(rows)`` rows."""
    ids, lengths = flatten_rows(rows)
    inputs, labels = masker(ids, step=step, rank=rank, index=index)
    cu_seqlens = np.zeros(lengths.size + 1, dtype=np.int32)  # (num_docs + 1,)
    np.cumsum(lengths, out=cu_seqlens[1:])
    return {
        "input_ids": torch.from_numpy(inputs),  # (total,) long
        "labels": torch.from_numpy(labels),  # (total,) long, IGNORE_INDEX where not masked
        "cu_seqlens": torch.from_numpy(cu_seqlens),  # (num_docs + 1,) int32
        "max_seqlen": int(lengths.max()) if lengths.size else 0,
        "num_rows": len(rows),
        "num_real_tokens": int(ids.size),
        "num_slot_tokens": len(rows) * seq_len,
        "num_masked": int((labels != IGNORE_INDEX).sum()),  # saves the trainer a device sync
    }
