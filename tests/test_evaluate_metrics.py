"""Metric functions against values worked out by hand (the arithmetic is in the comments)."""

import math

import pytest

from modernbert_pretrain.evaluate import metrics

LABELS = [1, 0, 1, 1, 0]
PREDS = [1, 0, 0, 1, 1]  # TP=2 (rows 0, 3), TN=1 (row 1), FN=1 (row 2), FP=1 (row 4)


def test_accuracy_f1_mcc_by_hand():
    assert metrics.accuracy(LABELS, PREDS) == pytest.approx(3 / 5)
    # precision = 2/3, recall = 2/3 -> F1 = 2/3
    assert metrics.f1_binary(LABELS, PREDS) == pytest.approx(2 / 3)
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2)
    assert metrics.mcc(LABELS, PREDS) == pytest.approx(1 / 6)
    assert metrics.mcc([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert metrics.mcc([0, 1, 0, 1], [1, 1, 1, 1]) == 0.0  # constant prediction: undefined -> 0


def test_f1_is_of_the_positive_class():
    # all-negative prediction: no true positives -> F1 0, although accuracy is 3/5
    assert metrics.f1_binary([0, 0, 0, 1, 1], [0, 0, 0, 0, 0]) == 0.0
    # flipping which class is positive changes F1: labels [0,0,1], preds [0,1,1] -> P=1/2, R=1 -> 2/3
    assert metrics.f1_binary([0, 0, 1], [0, 1, 1]) == pytest.approx(2 / 3)


def test_pearson_and_spearman_by_hand():
    x, y = [1, 2, 3, 4], [2, 4, 6, 9]
    # dx = -1.5 -.5 .5 1.5 ; dy = -3.25 -1.25 .75 3.75 ; sum dx*dy = 11.5 ; sum dx^2 = 5 ; sum dy^2 = 26.75
    assert metrics.pearson(x, y) == pytest.approx(11.5 / math.sqrt(5 * 26.75))
    assert metrics.spearman(x, y) == pytest.approx(1.0)
    # ties get average ranks: preds [1, 3, 2, 2] -> ranks [1, 4, 2.5, 2.5]; dy = -1.5 1.5 0 0
    # sum dx*dy = 2.25 - 0.75 = 1.5 ; sum dy^2 = 4.5 -> rho = 1.5 / sqrt(5 * 4.5)
    assert metrics.spearman(x, [1, 3, 2, 2]) == pytest.approx(1.5 / math.sqrt(22.5))
    assert metrics.spearman(x, [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_correlation_of_a_constant_is_zero_not_nan():
    assert metrics.pearson([1, 2, 3], [0.5, 0.5, 0.5]) == 0.0
    assert metrics.spearman([1, 2, 3], [0.5, 0.5, 0.5]) == 0.0


def test_ndcg_binary_and_graded_by_hand():
    # relevant d1 at rank 2, d2 at rank 3: DCG = 1/log2(3) + 1/log2(4); ideal = 1/log2(2) + 1/log2(3)
    got = metrics.ndcg_at_k(["d3", "d1", "d2", "d5"], {"d1", "d2"})
    assert got == pytest.approx((1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3)))
    # graded: d2 (grade 1) before d1 (grade 2): DCG = 1 + 2/log2(3); ideal = 2 + 1/log2(3)
    got = metrics.ndcg_at_k(["d2", "d1"], {"d1": 2, "d2": 1})
    assert got == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert metrics.ndcg_at_k(["d1", "d2"], {"d1": 2, "d2": 1}) == pytest.approx(1.0)
    assert metrics.ndcg_at_k(["d1"], {"d1": 0}) == 0.0  # grade 0 is not relevant


def test_cutoff_at_k():
    ranked = [f"x{i}" for i in range(10)] + ["hit"]
    assert metrics.ndcg_at_k(ranked, {"hit"}) == 0.0 and metrics.mrr_at_k(ranked, {"hit"}) == 0.0
    assert metrics.ndcg_at_k(ranked, {"hit"}, k=11) == pytest.approx(1 / math.log2(12))
    # ideal DCG is cut at k too: 12 relevant docs, all ranked first -> 1.0
    many = [f"r{i}" for i in range(12)]
    assert metrics.ndcg_at_k(many, set(many)) == pytest.approx(1.0)


def test_mrr_by_hand():
    assert metrics.mrr_at_k(["a", "b", "c"], {"c", "b"}) == pytest.approx(1 / 2)
    assert metrics.mrr_at_k(["a", "b", "c"], {"c"}) == pytest.approx(1 / 3)
    assert metrics.mrr_at_k(["a", "b"], {"z"}) == 0.0


def test_ranking_scores_average_over_judged_queries():
    rankings = {"q1": ["a", "b"], "q2": ["b", "a"], "q3": ["a", "b"]}
    qrels = {"q1": {"a": 1}, "q2": {"a": 1}, "q3": {}}  # q3 has no relevant doc: left out
    out = metrics.ranking_scores(rankings, qrels)
    # q1: nDCG 1, RR 1 ; q2: nDCG 1/log2(3), RR 1/2
    assert out["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert out["mrr@10"] == pytest.approx(0.75)
    assert out["queries"] == 2
    with pytest.raises(ValueError, match="no ranked query has a relevant document"):
        metrics.ranking_scores({"q3": ["a"]}, qrels)


def test_agrees_with_sentence_transformers_evaluator_on_binary_qrels():
    """Our ranking functions and the standard evaluator used by the retrieval tasks score the same rankings
    identically (binary relevance, k=10)."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    docs = [f"d{i}" for i in range(15)]
    relevant = {"q0": {"d0", "d7"}, "q1": {"d12"}, "q2": {"d3", "d4", "d5"}}
    orders = {"q0": docs[::-1], "q1": docs, "q2": docs[3:] + docs[:3]}
    evaluator = InformationRetrievalEvaluator({q: q for q in relevant}, {d: d for d in docs}, relevant,
                                             write_csv=False)
    results = [[{"corpus_id": d, "score": float(len(docs) - r)} for r, d in enumerate(orders[q])]
               for q in evaluator.queries_ids]
    theirs = evaluator.compute_metrics(results)
    ours = metrics.ranking_scores(orders, {q: dict.fromkeys(v, 1) for q, v in relevant.items()})
    assert ours["ndcg@10"] == pytest.approx(theirs["ndcg@k"][10])
    assert ours["mrr@10"] == pytest.approx(theirs["mrr@k"][10])
    assert 0 < ours["ndcg@10"] < 1  # the fixture is neither perfect nor empty
