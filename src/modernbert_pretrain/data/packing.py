"""Stage 2: greedy best-fit packing of documents into rows of ``seq_len`` slots.

The packer keeps a buffer of pending pieces grouped by length. To fill a row it repeatedly takes
the longest pending piece that still fits (a bisect over the sorted distinct lengths: O(log L) per
piece), until nothing fits; then it tops the buffer up from the source. A document longer than
``seq_len`` enters the buffer as consecutive pieces of at most ``seq_len`` tokens, so no token is
ever dropped. Within one length, pieces leave in arrival order, which makes the packing a pure
function of the input order and lets the buffer be saved as references (sample id, start, length)
and rebuilt exactly by re-reading those few samples.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from modernbert_pretrain.data.errors import ResumeStateError

DocFn = Callable[[], tuple[int, np.ndarray] | None]


class Piece(NamedTuple):
    """A document or a consecutive part of one (at most ``seq_len`` tokens)."""

    seq: int
    """Arrival number in the buffer (orders pieces of equal length)."""
    sample_id: int
    start: int
    tokens: np.ndarray
    """Shape (length,): a view into the document's tokens."""


class BestFitPacker:
    """Fills rows from a buffer of pending pieces, best fit first."""

    def __init__(self, seq_len: int, buffer_docs: int, next_doc: DocFn) -> None:
        if seq_len < 1 or buffer_docs < 1:
            raise ValueError(f"seq_len={seq_len} and buffer_docs={buffer_docs} must be >= 1")
        self.seq_len = seq_len
        self.buffer_docs = buffer_docs
        self.next_doc = next_doc
        self._buckets: dict[int, deque[Piece]] = {}
        self._lengths: list[int] = []  # sorted distinct lengths with pending pieces
        self._pending = 0
        self._next_seq = 0
        self.exhausted = False
        """True once the source returned None (finite sources only)."""

    @property
    def pending(self) -> int:
        """Pieces waiting in the buffer."""
        return self._pending

    def _insert(self, piece: Piece) -> None:
        length = piece.tokens.size
        bucket = self._buckets.get(length)
        if bucket is None:
            bucket = self._buckets[length] = deque()
            insort(self._lengths, length)
        bucket.append(piece)
        self._pending += 1

    def _add_doc(self, sample_id: int, tokens: np.ndarray) -> None:
        for start in range(0, tokens.size, self.seq_len):
            self._insert(Piece(self._next_seq, sample_id, start, tokens[start:start + self.seq_len]))
            self._next_seq += 1

    def _top_up(self) -> None:
        while self._pending < self.buffer_docs and not self.exhausted:
            doc = self.next_doc()
            if doc is None:
                self.exhausted = True
                return
            self._add_doc(*doc)

    def next_row(self) -> list[Piece]:
        """Pieces of the next row, longest first; total length <= seq_len. Empty when drained."""
        self._top_up()
        row: list[Piece] = []
        remaining = self.seq_len
        lengths, buckets = self._lengths, self._buckets
        while lengths:
            i = bisect_right(lengths, remaining) - 1
            if i < 0:
                break
            length = lengths[i]
            bucket = buckets[length]
            row.append(bucket.popleft())
            if not bucket:
                del buckets[length]
                del lengths[i]
            remaining -= length
        self._pending -= len(row)
        return row

    # ---- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Pending pieces as (sample id, start, length) in arrival order, plus counters."""
        pieces = sorted((p for bucket in self._buckets.values() for p in bucket), key=lambda p: p.seq)
        refs = np.array([(p.sample_id, p.start, p.tokens.size) for p in pieces], dtype=np.int64).reshape(-1, 3)
        return {"pieces": refs, "next_seq": self._next_seq, "exhausted": self.exhausted,
                "seq_len": self.seq_len}

    def load_state_dict(self, state: dict[str, Any], read: Callable[[int], np.ndarray]) -> None:
        """Rebuild the buffer, reading each referenced sample once with ``read(sample_id)``."""
        if int(state["seq_len"]) != self.seq_len:
            raise ResumeStateError(f"packer state was saved with seq_len={state['seq_len']}, now {self.seq_len}")
        refs = np.asarray(state["pieces"], dtype=np.int64).reshape(-1, 3)
        self._buckets, self._lengths, self._pending = {}, [], 0
        docs: dict[int, np.ndarray] = {}
        for order, (sample_id, start, length) in enumerate(refs.tolist()):
            if sample_id not in docs:
                docs[sample_id] = read(sample_id)
            tokens = docs[sample_id][start:start + length]
            if tokens.size != length:
                raise ResumeStateError(f"sample {sample_id} is shorter than the saved piece {start}+{length}")
            self._insert(Piece(order, sample_id, start, tokens))  # only the relative order matters
        self._next_seq = int(state["next_seq"])
        self.exhausted = bool(state["exhausted"])
