"""A uniform, seeded sample of documents under a document and/or byte budget, in one streaming pass.

Every document gets a key ``blake2b(seed, file, index)`` in [0, 1). The sample is the longest prefix of all
documents sorted by key whose count and UTF-8 bytes fit the budgets: a uniformly random subset, the same for
a seed whatever the file order, drawn from every input. One pass keeps it with a max-heap on the key: when a
budget is exceeded the largest key is evicted and no later document with a key at or above an evicted key is
taken, so memory stays bounded by the budget (plus one document), not by the corpus.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

_KEY_SCALE = float(1 << 64)


def document_key(seed: int, path: str, index: int) -> float:
    """The document's sampling key in [0, 1), fixed by the seed, its file path and its index in the file."""
    digest = hashlib.blake2b(f"{seed}\0{path}\0{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / _KEY_SCALE


@dataclass
class SampleCounts:
    seen_documents: int = 0
    seen_bytes: int = 0
    documents: int = 0
    """Documents in the sample."""
    bytes: int = 0
    """UTF-8 bytes of the sampled documents."""
    files_sampled: set[str] = field(default_factory=set)
    """Input files with at least one sampled document."""


def sample_documents(docs: Iterable[tuple[str, int, str]], *, seed: int, max_docs: int | None = None,
                     max_bytes: int | None = None) -> tuple[list[str], SampleCounts]:
    """Sample ``(path, index, text)`` items; returns the texts in key order and the counts."""
    heap: list[tuple[float, str, int, str, int]] = []  # (-key, path, index, text, bytes)
    threshold = 1.0
    counts = SampleCounts()
    for path, index, text in docs:
        size = len(text.encode("utf-8"))
        counts.seen_documents += 1
        counts.seen_bytes += size
        key = document_key(seed, path, index)
        if key >= threshold:
            continue
        heapq.heappush(heap, (-key, path, index, text, size))
        counts.bytes += size
        while heap and ((max_docs is not None and len(heap) > max_docs)
                        or (max_bytes is not None and counts.bytes > max_bytes)):
            neg_key, _, _, _, evicted = heapq.heappop(heap)
            threshold = min(threshold, -neg_key)
            counts.bytes -= evicted
    heap.sort(key=lambda item: -item[0])
    counts.documents = len(heap)
    counts.files_sampled = {item[1] for item in heap}
    return [item[3] for item in heap], counts


def indexed(path: str, texts: Iterable[str]) -> Iterator[tuple[str, int, str]]:
    for index, text in enumerate(texts):
        yield path, index, text
