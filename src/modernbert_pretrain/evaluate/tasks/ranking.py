"""Ranking metrics for one relevant document per query (the embedded code-search task).

Kept here, small and self-contained, so the embedded tasks do not depend on the GLUE/retrieval metrics module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def rank_of_positive(scores: Sequence[float], positive: int) -> int:
    """1-based rank of ``positive`` when documents are sorted by descending score; ties count against it
    (a document scoring the same as the positive ranks before it), so constant scores never look good."""
    target = scores[positive]
    return 1 + sum(1 for i, s in enumerate(scores) if i != positive and s >= target)


def ndcg_at_k(rank: int, k: int = 10) -> float:
    """nDCG@k with a single relevant document: 1 / log2(rank + 1) inside the top k, else 0 (the ideal DCG is 1)."""
    return 1.0 / math.log2(rank + 1) if rank <= k else 0.0


def mrr_at_k(rank: int, k: int = 10) -> float:
    return 1.0 / rank if rank <= k else 0.0


def ranking_metrics(ranks: Sequence[int], k: int = 10) -> dict[str, float]:
    """Means over queries of nDCG@k, MRR@k and recall@k (hit in the top k), plus recall@1."""
    if not ranks:
        raise ValueError("no queries to score")
    n = len(ranks)
    return {f"ndcg@{k}": sum(ndcg_at_k(r, k) for r in ranks) / n,
            f"mrr@{k}": sum(mrr_at_k(r, k) for r in ranks) / n,
            f"recall@{k}": sum(r <= k for r in ranks) / n,
            "recall@1": sum(r == 1 for r in ranks) / n}
