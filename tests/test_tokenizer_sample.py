"""train_tokenizer --max-docs/--max-bytes: a bounded, seeded, uniform sample of all inputs."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from modernbert_pretrain.data.prep.doc_sample import indexed, sample_documents
from modernbert_pretrain.data.prep.readers import find_input_files, iter_documents
from tests.test_data_scripts import load_script

DOCS_PER_FILE = 300


@pytest.fixture()
def inputs(tmp_path):
    """Three inputs (two .jsonl, one .jsonl.gz) of varied-length documents tagged with their file."""
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "tokens", "encoder", "corpus", "sample", "merge", "byte"]
    paths = []
    for n, name in enumerate(["a.jsonl", "b.jsonl", "c.jsonl.gz"]):
        lines = [json.dumps({"text": f"file{n} doc{i} " + " ".join(rng.choices(words, k=rng.randint(5, 60)))})
                 for i in range(DOCS_PER_FILE)]
        path = tmp_path / name
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "wt") as f:
            f.write("\n".join(lines) + "\n")
        paths.append(str(path))
    return paths


def _sample(paths, **kwargs):
    docs = (item for path in find_input_files(paths) for item in indexed(path, iter_documents(path)))
    return sample_documents(docs, **kwargs)


def test_sample_respects_budgets(inputs):
    texts, counts = _sample(inputs, seed=1, max_docs=100)
    assert len(texts) == counts.documents == 100 and counts.seen_documents == 3 * DOCS_PER_FILE

    everything = [t for p in inputs for t in iter_documents(p)]
    largest = max(len(t.encode()) for t in everything)
    budget = sum(len(t.encode()) for t in everything) // 4
    texts, counts = _sample(inputs, seed=1, max_bytes=budget)
    sampled = sum(len(t.encode()) for t in texts)
    assert sampled == counts.bytes and budget - largest < sampled <= budget
    assert counts.seen_bytes == sum(len(t.encode()) for t in everything)

    texts, counts = _sample(inputs, seed=1, max_docs=50, max_bytes=budget)
    assert len(texts) == 50 and counts.bytes <= budget


def test_sample_is_seeded(inputs):
    first, _ = _sample(inputs, seed=3, max_docs=60)
    again, _ = _sample(list(reversed(inputs)), seed=3, max_docs=60)
    other, _ = _sample(inputs, seed=4, max_docs=60)
    assert first == again
    assert set(first) != set(other)


def test_sample_draws_from_every_input(inputs):
    texts, counts = _sample(inputs, seed=0, max_docs=90)
    assert counts.files_sampled == set(find_input_files(inputs))
    per_file = [sum(t.startswith(f"file{n} ") for t in texts) for n in range(3)]
    # Uniform over 900 documents: each file expects 30 of 90; 10 is > 4 standard deviations below.
    assert min(per_file) >= 10, per_file


def test_tokenizer_from_sample_loads_and_encodes(inputs, tmp_path, capsys):
    from transformers import AutoTokenizer

    out = str(tmp_path / "tok")
    script = load_script("train_tokenizer.py")
    assert script.main(["--input", *inputs, "--output", out, "--vocab-size", "320", "--max-docs", "120",
                        "--max-bytes", "1M", "--seed", "5", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"sampled 120 of {3 * DOCS_PER_FILE} documents" in printed and "from 3 input files" in printed
    assert "trained on 120 documents" in printed
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("file1 alpha beta gamma")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and len(ids) > 2
    assert tok.decode(ids, skip_special_tokens=True) == "file1 alpha beta gamma"


@pytest.mark.parametrize("flag,value", [("--max-docs", "0"), ("--max-bytes", "lots"), ("--max-bytes", "-5")])
def test_bad_budget_exits_2(inputs, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        load_script("train_tokenizer.py").main(["--input", *inputs, "--output", str(tmp_path / "t"), flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag} {value!r}" in err and "10M" in err


def test_budget_below_every_document_is_refused(inputs, tmp_path, capsys):
    code = load_script("train_tokenizer.py").main(["--input", *inputs, "--output", str(tmp_path / "t"),
                                                   "--max-bytes", "3", "--quiet"])
    assert code == 2 and "max_bytes=3" in capsys.readouterr().err
