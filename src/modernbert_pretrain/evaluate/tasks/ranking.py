"""Ranking metrics for one relevant document per query (the embedded code-search task), stated as the rank
of that document and scored with the evaluation's one nDCG/MRR definition (``evaluate.metrics``).
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import metrics

_POSITIVE = "+"


def rank_of_positive(scores: Sequence[float], positive: int) -> int:
    """1-based rank of ``positive`` when documents are sorted by descending score; ties count against it
    (a document scoring the same as the positive ranks before it), so constant scores never look good."""
    target = scores[positive]
    return 1 + sum(1 for i, s in enumerate(scores) if i != positive and s >= target)


def _ranked(rank: int, k: int) -> list[str]:
    """A ranked list with the single relevant document at ``rank`` (cut after k + 1 entries)."""
    return ["-"] * (min(rank, k + 1) - 1) + [_POSITIVE]


def ndcg_at_k(rank: int, k: int = 10) -> float:
    """nDCG@k with a single relevant document at ``rank``: 1 / log2(rank + 1) inside the top k, else 0."""
    return metrics.ndcg_at_k(_ranked(rank, k), {_POSITIVE}, k)


def mrr_at_k(rank: int, k: int = 10) -> float:
    return metrics.mrr_at_k(_ranked(rank, k), {_POSITIVE}, k)


def ranking_metrics(ranks: Sequence[int], k: int = 10) -> dict[str, float]:
    """Means over queries of nDCG@k, MRR@k and recall@k (hit in the top k), plus recall@1."""
    if not ranks:
        raise ValueError("no queries to score")
    n = len(ranks)
    return {f"ndcg@{k}": sum(ndcg_at_k(r, k) for r in ranks) / n,
            f"mrr@{k}": sum(mrr_at_k(r, k) for r in ranks) / n,
            f"recall@{k}": sum(r <= k for r in ranks) / n,
            "recall@1": sum(r == 1 for r in ranks) / n}
