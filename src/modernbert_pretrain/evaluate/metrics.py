"""Downstream metrics: GLUE's classification/regression scores and ranking scores for retrieval.

Classification and correlation come from scikit-learn and scipy; nothing downloads metric code. The ranking
metrics follow trec_eval's definitions (linear gain, log2 discount, cut at k), so graded BEIR qrels score as
BEIR reports them and binary qrels score as Sentence Transformers' InformationRetrievalEvaluator does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def accuracy(labels: Sequence[int], preds: Sequence[int]) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(labels, preds))


def f1_binary(labels: Sequence[int], preds: Sequence[int]) -> float:
    """F1 of the positive class (label 1), as GLUE reports it for MRPC and QQP; 0.0 when nothing is predicted
    positive and nothing is positive."""
    from sklearn.metrics import f1_score

    return float(f1_score(labels, preds, pos_label=1, average="binary", zero_division=0.0))


def mcc(labels: Sequence[int], preds: Sequence[int]) -> float:
    """Matthews correlation (CoLA); scikit-learn returns 0.0 when a row or column of the confusion matrix is
    empty (e.g. a constant prediction)."""
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, preds))


def _constant(values: np.ndarray) -> bool:
    return values.size < 2 or bool(np.all(values == values[0]))


def pearson(labels: Sequence[float], preds: Sequence[float]) -> float:
    """Pearson's r; 0.0 when either side is constant (undefined), matching MCC's convention above, so that a
    collapsed regressor scores 0 instead of NaN in result rows."""
    from scipy.stats import pearsonr

    a, b = np.asarray(labels, dtype=np.float64), np.asarray(preds, dtype=np.float64)
    if _constant(a) or _constant(b):
        return 0.0
    return float(pearsonr(a, b).statistic)


def spearman(labels: Sequence[float], preds: Sequence[float]) -> float:
    """Spearman's rho (ties get average ranks); 0.0 when either side is constant."""
    from scipy.stats import spearmanr

    a, b = np.asarray(labels, dtype=np.float64), np.asarray(preds, dtype=np.float64)
    if _constant(a) or _constant(b):
        return 0.0
    return float(spearmanr(a, b).statistic)


# ------------------------------------------------------------------------------------------------ ranking
def _grades(relevant: Mapping[str, float] | Iterable[str]) -> dict[str, float]:
    if isinstance(relevant, Mapping):
        return {doc: float(g) for doc, g in relevant.items() if g > 0}
    return {doc: 1.0 for doc in relevant}


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, float] | Iterable[str], k: int = 10) -> float:
    """nDCG@k of one ranked list of document ids. ``relevant``: a set of ids (grade 1) or {id: grade};
    grades <= 0 count as not relevant. DCG = sum over ranks r=1..k of grade / log2(r + 1); the ideal DCG sorts
    every judged grade. 0.0 when nothing is relevant."""
    grades = _grades(relevant)
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    if idcg == 0:
        return 0.0
    dcg = sum(grades.get(doc, 0.0) / math.log2(r + 2) for r, doc in enumerate(ranked[:k]))
    return dcg / idcg


def mrr_at_k(ranked: Sequence[str], relevant: Mapping[str, float] | Iterable[str], k: int = 10) -> float:
    """Reciprocal rank of the first relevant id within the top k, else 0.0."""
    grades = _grades(relevant)
    for r, doc in enumerate(ranked[:k]):
        if doc in grades:
            return 1.0 / (r + 1)
    return 0.0


def ranking_scores(rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, float]],
                   k: int = 10) -> dict[str, float]:
    """Mean nDCG@k and MRR@k over the queries that have at least one relevant document (queries without one
    cannot be scored and are left out, as BEIR's evaluators do); ``queries`` says how many were scored."""
    scored = [q for q in rankings if _grades(qrels.get(q, {}))]
    if not scored:
        raise ValueError("no ranked query has a relevant document in the qrels; nothing to score")
    ndcg = [ndcg_at_k(rankings[q], qrels[q], k) for q in scored]
    mrr = [mrr_at_k(rankings[q], qrels[q], k) for q in scored]
    return {f"ndcg@{k}": float(np.mean(ndcg)), f"mrr@{k}": float(np.mean(mrr)), "queries": float(len(scored))}
