"""Retrieval task family: a tiny exported folder, a 30-document BEIR folder and a few dozen local pairs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from modernbert_pretrain.evaluate import metrics, retrieval
from modernbert_pretrain.evaluate.retrieval import retrieval_tasks
from modernbert_pretrain.evaluate.tasks.base import RunArgs, TaskError

from .test_evaluate_glue import WORDS, sentence, tiny_model_folder


def write_beir(folder: Path, docs: int = 30, seed: int = 0) -> Path:
    """docs documents; query i asks for document i (and for document i+1 when i is a multiple of 5)."""
    rng = random.Random(seed)
    (folder / "qrels").mkdir(parents=True)
    texts = [sentence(rng) for _ in range(docs)]
    (folder / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": f"title {WORDS[i % len(WORDS)]}", "text": t}) + "\n"
        for i, t in enumerate(texts)))
    queries = {f"q{i}": " ".join(texts[i].split()[:3]) for i in range(0, docs, 2)}
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    rows = ["query-id\tcorpus-id\tscore"]
    for q in queries:
        i = int(q[1:])
        rows.append(f"{q}\td{i}\t1")
        if i % 5 == 0:
            rows.append(f"{q}\td{i + 1}\t2")
    (folder / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # transformers prints a notice on stdout when this module is first imported with WANDB_MODE=offline (which
    # conftest sets); import it here so the stdout checks below see only what the tasks print.
    import transformers.integrations.integration_utils  # noqa: F401

    return tiny_model_folder(tmp_path_factory.mktemp("retrieval-model"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("beir")
    write_beir(root / "tiny-a", seed=0)
    write_beir(root / "tiny-b", seed=1)
    return root


@pytest.fixture
def settings(tmp_path):
    """A settings file whose pair file is given relative to the YAML's own folder."""
    rng = random.Random(7)
    folder = tmp_path / "cfg"
    folder.mkdir()
    pairs = [{"query": sentence(rng), "answer": sentence(rng)} for _ in range(40)]
    (folder / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    path = folder / "retrieval.yaml"
    path.write_text("datasets: [tiny-a, tiny-b]\npairs: {local: pairs.jsonl, max_pairs: 32}\nlrs: [1.0e-3]\n"
                    "batch_size: 8\nmax_seq_length: 32\neval_batch_size: 16\n")
    return path


@pytest.fixture(autouse=True)
def no_cached_encoder():
    retrieval._CACHE.clear()
    yield
    retrieval._CACHE.clear()


def _spec(settings_path, name="retrieval/tiny-a"):
    return {t.name: t for t in retrieval_tasks(str(settings_path))}[name]


def _args(model_dir, data_dir, tmp_path, seed=0, hparams=None):
    work = tmp_path / f"work-{seed}-{len(list(tmp_path.iterdir()))}"
    return RunArgs(model_dir=str(model_dir), seed=seed, hparams=hparams or {"lr": 1e-3}, data_dir=str(data_dir),
                   work_dir=str(work))


def test_shipped_settings_are_nanobeir():
    tasks = retrieval_tasks()
    assert len(tasks) == 13 and {"retrieval/nanobeir-scifact", "retrieval/nanobeir-nfcorpus"} <= {t.name for t in tasks}
    assert all(t.family == "retrieval" and t.metric == "ndcg@10" and t.grid for t in tasks)
    settings = retrieval.load_retrieval_settings()
    assert settings.pairs.hub_dataset == "sentence-transformers/natural-questions" and settings.pairs.local is None


def test_run_returns_ranking_metrics(model_dir, data_dir, settings, tmp_path, capfd):
    result = _spec(settings).run(_args(model_dir, data_dir, tmp_path))
    assert capfd.readouterr().out == ""  # stdout belongs to the runner (tables, the quickstart's last line)
    assert set(result) == {"ndcg@10", "mrr@10", "recall@10", "map@100", "queries", "corpus"}
    assert result["queries"] == 15 and result["corpus"] == 30
    assert all(0 <= result[k] <= 1 for k in ("ndcg@10", "mrr@10", "recall@10", "map@100"))


def test_same_seed_same_scores_and_one_fine_tune_per_checkpoint(model_dir, data_dir, settings, tmp_path,
                                                                  monkeypatch):
    calls = []
    real = retrieval.finetune_encoder

    def counting(*args, **kwargs):
        calls.append(args[0].seed)
        return real(*args, **kwargs)

    monkeypatch.setattr(retrieval, "finetune_encoder", counting)
    a = _spec(settings).run(_args(model_dir, data_dir, tmp_path, seed=3))
    first = retrieval._CACHE[next(iter(retrieval._CACHE))]
    _spec(settings, "retrieval/tiny-b").run(_args(model_dir, data_dir, tmp_path, seed=3))
    assert calls == [3]  # the second dataset reused the fine-tuned encoder
    retrieval._CACHE.clear()
    b = _spec(settings).run(_args(model_dir, data_dir, tmp_path, seed=3))
    assert calls == [3, 3] and a == b
    retrieval._CACHE.clear()
    _spec(settings).run(_args(model_dir, data_dir, tmp_path, seed=4))
    other = retrieval._CACHE[next(iter(retrieval._CACHE))]
    probe = ["the cat sat on the mat", "a bird sings"]
    assert not np.allclose(first.encode(probe), other.encode(probe))  # another seed, another fine-tune


def test_fine_tune_changes_the_encoder(model_dir, data_dir, settings, tmp_path):
    zero_shot = settings.parent / "zero.yaml"
    zero_shot.write_text(settings.read_text().replace("max_pairs: 32", "max_pairs: 0"))
    args = _args(model_dir, data_dir, tmp_path)
    settings_a = retrieval.load_retrieval_settings(str(zero_shot))
    settings_b = retrieval.load_retrieval_settings(str(settings))
    base = retrieval.finetune_encoder(args, settings_a, 1e-3)
    tuned = retrieval.finetune_encoder(args, settings_b, 1e-3)
    probe = ["the cat sat on the mat"]
    assert not np.allclose(base.encode(probe), tuned.encode(probe))


def test_evaluator_scores_match_our_ranking_metrics(model_dir, data_dir, settings):
    """The standard evaluator's nDCG@10/MRR@10 equal ours computed from an explicit cosine ranking."""
    opts = retrieval.load_retrieval_settings(str(settings))
    model = retrieval.build_encoder(str(model_dir), opts.max_seq_length, "cpu")
    data = retrieval.load_beir("tiny-a", str(data_dir), opts)
    got = retrieval.score_beir(model, data, batch_size=16)
    ids = list(data.corpus)
    docs = model.encode([data.corpus[i] for i in ids], normalize_embeddings=True)
    rankings = {}
    for q, text in data.queries.items():
        sims = docs @ model.encode([text], normalize_embeddings=True)[0]
        rankings[q] = [ids[i] for i in np.argsort(-sims, kind="stable")]
    binary = {q: dict.fromkeys((d for d, g in docs_.items() if g > 0), 1) for q, docs_ in data.qrels.items()}
    ours = metrics.ranking_scores(rankings, binary)
    assert got["ndcg@10"] == pytest.approx(ours["ndcg@10"], abs=1e-6)
    assert got["mrr@10"] == pytest.approx(ours["mrr@10"], abs=1e-6)
    assert got["queries"] == ours["queries"] == 15


def test_local_beir_reads_titles_and_graded_qrels(data_dir):
    data = retrieval.load_local_beir(data_dir / "tiny-a", "tiny-a", "test")
    assert len(data.corpus) == 30 and len(data.queries) == 15
    assert data.corpus["d0"].startswith(f"title {WORDS[0]} ")
    assert data.qrels["q0"] == {"d0": 1, "d1": 2} and data.qrels["q2"] == {"d2": 1}


def test_missing_beir_folder_and_files_name_the_path(model_dir, data_dir, settings, tmp_path):
    with pytest.raises(TaskError, match=f"retrieval/tiny-a: BEIR folder {tmp_path / 'none' / 'tiny-a'} does not exist"):
        _spec(settings).run(_args(model_dir, tmp_path / "none", tmp_path))
    broken = write_beir(tmp_path / "broken" / "tiny-a")
    (broken / "qrels" / "test.tsv").unlink()
    with pytest.raises(TaskError, match=f"missing {broken / 'qrels' / 'test.tsv'}"):
        _spec(settings).run(_args(model_dir, tmp_path / "broken", tmp_path))
    (broken / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tnot-a-doc\t1\n")
    with pytest.raises(TaskError, match="no query has a relevant document in the corpus"):
        _spec(settings).run(_args(model_dir, tmp_path / "broken", tmp_path))


def test_no_hub_source_for_a_local_only_name(model_dir, settings, tmp_path):
    spec = _spec(settings)
    with pytest.raises(TaskError, match="retrieval/tiny-a: no Hub source .*pass --data-dir"):
        spec.run(RunArgs(model_dir=str(model_dir), seed=0, hparams={}, data_dir=None, work_dir=str(tmp_path / "w")))


def test_missing_pair_file_and_bad_settings(model_dir, data_dir, settings, tmp_path):
    (settings.parent / "pairs.jsonl").unlink()
    with pytest.raises(TaskError, match=f"pair file {settings.parent / 'pairs.jsonl'} does not exist"):
        _spec(settings).run(_args(model_dir, data_dir, tmp_path))
    bad = tmp_path / "bad.yaml"
    bad.write_text("pairs: {max_pair: 3}\n")
    with pytest.raises(TaskError, match="unknown key 'max_pair'; did you mean 'max_pairs'"):
        retrieval_tasks(str(bad))
    with pytest.raises(TaskError, match=r"unknown hyper-parameter\(s\) \['batch'\]"):
        _spec(settings).run(_args(model_dir, data_dir, tmp_path, hparams={"batch": 3}))
