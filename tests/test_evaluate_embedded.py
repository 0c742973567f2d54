"""The embedded tasks on the test corpus: examples only from held-out documents, a bag-of-words scorer at chance
on word order, determinism per seed, the random-init reference, and a pretrained tiny checkpoint (the smoke
recipe's phase 1, conftest's pretrained_smoke) beating random init on code search and on word order."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from modernbert_pretrain.evaluate.random_init import write_random_init
from modernbert_pretrain.evaluate.tasks import RunArgs, TaskError
from modernbert_pretrain.evaluate.tasks import corpus as C
from modernbert_pretrain.evaluate.tasks.embedded import (
    CodeSearchSettings,
    code_search_data,
    run_code_search,
)
from modernbert_pretrain.evaluate.tasks.word_order import (
    WordOrderSettings,
    bow_pair_accuracy,
    run_word_order,
    word_order_pairs,
    word_shuffled,
)

SMALL_CS = CodeSearchSettings(steps=3, batch_size=8, train_pairs=64, eval_queries=40)
SMALL_WO = WordOrderSettings(pairs=60, stride=3)


@pytest.fixture(scope="module")
def random_model(smoke_workdir, tmp_path_factory):
    """A random-init tiny model folder with the smoke tokenizer."""
    from transformers import AutoTokenizer

    from modernbert_pretrain.model import ModernBertConfig, ModernBertForMaskedLM

    like = tmp_path_factory.mktemp("like")
    torch.manual_seed(0)
    ModernBertForMaskedLM(ModernBertConfig.from_preset("tiny")).save_pretrained(like)
    AutoTokenizer.from_pretrained(smoke_workdir / "tokenizer").save_pretrained(like)
    return write_random_init(like, tmp_path_factory.mktemp("random"), seed=0)


def _args(model, data_dir, seed=0, **kw):
    return RunArgs(model_dir=str(model), seed=seed, hparams={}, data_dir=str(data_dir), work_dir="/unused", **kw)


# ----------------------------------------------------------------------------- the pretrained model
# First in this file, which runs first (conftest.LONG_FIRST): under pytest-xdist a worker is given its next file
# once at most 2 tests of its current one are left, so the ~9-minute pretraining must start while the short
# tests below still wait behind it; otherwise a whole file would queue behind the pretraining.
CS_TEST = replace(CodeSearchSettings(), eval_queries=200)


@pytest.mark.slow
def test_pretrained_checkpoint_beats_random_init_on_code_search(pretrained_smoke, eval_corpus, tmp_path):
    baseline = write_random_init(pretrained_smoke, tmp_path, seed=0)
    trained = run_code_search(_args(pretrained_smoke, eval_corpus, seed=0), CS_TEST)
    random_init = run_code_search(_args(baseline, eval_corpus, seed=0), CS_TEST)
    assert trained["ndcg@10"] > random_init["ndcg@10"] + 0.05, (trained, random_init)


@pytest.mark.slow
def test_pretrained_checkpoint_beats_random_init_on_word_order(pretrained_smoke, eval_corpus, tmp_path):
    baseline = write_random_init(pretrained_smoke, tmp_path, seed=0)
    trained = run_word_order(_args(pretrained_smoke, eval_corpus, seed=0), WordOrderSettings())
    random_init = run_word_order(_args(baseline, eval_corpus, seed=0), WordOrderSettings())
    assert trained["bow_accuracy"] == 0.5
    assert trained["accuracy"] > random_init["accuracy"] + 0.15, (trained, random_init)


# ----------------------------------------------------------------------------- data
def _texts(path: Path) -> set[str]:
    return {json.loads(x)["text"] for x in path.read_text().splitlines()}


def test_code_search_examples_come_from_held_out_documents_only(eval_corpus):
    train, held_out = code_search_data(str(eval_corpus), CodeSearchSettings())
    assert len(held_out) >= 100 and len(train) >= 500
    train_docs = "\n".join(C.squash(t) for t in _texts(eval_corpus / "train.jsonl"))
    val_code = dict(C.read_code(eval_corpus / "val.jsonl"))
    for pair in held_out:
        # the function comes from a held-out document and its body occurs in no training document
        document = val_code[pair.source.rsplit(":", 1)[0]]
        assert all(line.strip() in document for line in pair.code.splitlines())
        assert C.squash(pair.original) not in train_docs
        assert pair.docstring not in pair.code  # the docstring was removed from the body
        assert not pair.code.startswith(" ")
    assert not {p.code for p in train} & {p.code for p in held_out}


def test_function_pairs_remove_the_docstring_and_skip_one_liners():
    src = ('def f(a):\n    """Add one to a number."""\n    b = a + 1\n    return b\n\n'
           'def g():\n    """Too short a body."""\n    return 1\n\n'
           'def h(): """Same line as code."""; return 2\n\n'
           'class K:\n    @staticmethod\n    def m(x):\n        """Square the value x."""\n        y = x * x\n'
           '        return y\n')
    pairs = C.function_pairs([("code:x.py", src)])
    assert pairs[1].original == ('    @staticmethod\n    def m(x):\n        """Square the value x."""\n'
                                 '        y = x * x\n        return y')
    assert [(p.source, p.docstring, p.code) for p in pairs] == [
        ("code:x.py:f", "Add one to a number.", "def f(a):\n    b = a + 1\n    return b"),
        ("code:x.py:m", "Square the value x.", "@staticmethod\ndef m(x):\n    y = x * x\n    return y"),
    ]


def test_word_order_pairs_hold_the_same_words_so_bag_of_words_is_at_chance(eval_corpus):
    pairs = word_order_pairs(str(eval_corpus), WordOrderSettings(), seed=0)
    assert len(pairs) >= 50
    for original, shuffled in pairs:
        assert original != shuffled
        assert sorted(original.split()) == sorted(shuffled.split())
        assert [len(x) - len(x.lstrip()) for x in original.split("\n")] == \
            [len(x) - len(x.lstrip()) for x in shuffled.split("\n")]
    assert bow_pair_accuracy(pairs) == 0.5
    # a pair whose bags differ would count for a bag-of-words scorer
    assert bow_pair_accuracy([("a b", "a c"), ("a b", "b a")]) == 0.75


def test_word_shuffle_keeps_indentation_and_words():
    import random

    rng = random.Random(0)
    snippet = "def f(a, b):\n    return a + b"
    out = word_shuffled(snippet, rng)
    assert out != snippet
    assert [sorted(x.split()) for x in out.split("\n")] == [sorted(x.split()) for x in snippet.split("\n")]
    assert out.split("\n")[1].startswith("    ")
    assert word_shuffled("x\n    y", rng) == "x\n    y"  # nothing to reorder


def test_too_small_a_corpus_or_a_wrong_data_dir_is_a_task_error(tmp_path):
    with pytest.raises(TaskError, match="no train.jsonl and val.jsonl"):
        C.locate_corpus(str(tmp_path))
    (tmp_path / "train.jsonl").write_text("")
    (tmp_path / "val.jsonl").write_text(json.dumps({"text": "x = 1\n", "source": "code:x.py"}) + "\n")
    with pytest.raises(TaskError, match="only 0 documented functions"):
        code_search_data(str(tmp_path), CodeSearchSettings())


def test_corpus_build_is_the_quickstart_split(tmp_path):
    lines = [json.dumps({"text": f"doc {i}", "source": "text:x"}) + "\n" for i in range(1, 121)]
    (tmp_path / "all.jsonl").write_text("".join(lines))
    C.split_holdout(tmp_path / "all.jsonl", tmp_path)
    val = (tmp_path / "val.jsonl").read_text().splitlines(keepends=True)
    assert val == [lines[49], lines[99]]  # awk 'NR % 50 == 0'
    assert len((tmp_path / "train.jsonl").read_text().splitlines()) == 118


# ----------------------------------------------------------------------------- runs
def test_random_init_folder_matches_the_size_and_loads_in_transformers(random_model, tmp_path):
    from transformers import AutoModel

    meta = json.loads((random_model / "training_metadata.json").read_text())
    assert meta["phase"] == "random-init" and meta["tokens_seen"] == 0
    like = Path(meta["random_init_of"])
    assert json.loads((random_model / "config.json").read_text()) == json.loads((like / "config.json").read_text())
    assert write_random_init(like, random_model.parent, seed=0) == random_model  # written once
    other = write_random_init(like, tmp_path, seed=1)
    a = AutoModel.from_pretrained(random_model).state_dict()
    b = AutoModel.from_pretrained(other).state_dict()
    assert a.keys() == b.keys() and not torch.equal(a["embeddings.tok_embeddings.weight"],
                                                    b["embeddings.tok_embeddings.weight"])


def test_code_search_is_deterministic_per_seed(random_model, eval_corpus):
    first = run_code_search(_args(random_model, eval_corpus, seed=0), SMALL_CS)
    assert run_code_search(_args(random_model, eval_corpus, seed=0), SMALL_CS) == first
    assert run_code_search(_args(random_model, eval_corpus, seed=1), SMALL_CS) != first
    assert first["queries"] == 40 and 0.0 <= first["ndcg@10"] <= 1.0


def test_word_order_is_deterministic_per_seed(random_model, eval_corpus):
    first = run_word_order(_args(random_model, eval_corpus, seed=0), SMALL_WO)
    assert run_word_order(_args(random_model, eval_corpus, seed=0), SMALL_WO) == first
    assert 0 < first["pairs"] <= 60 and 0.0 <= first["accuracy"] <= 1.0
    assert run_word_order(_args(random_model, eval_corpus, seed=1), SMALL_WO) != first  # other shuffles


def test_word_order_scores_only_masked_positions_with_the_same_result_as_the_whole_model(random_model, eval_corpus):
    """The head and decoder run on the masked positions alone; a model without that structure runs whole.
    Both give the same scores, bit for bit."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from modernbert_pretrain.evaluate.tasks.word_order import pseudo_log_likelihood

    tokenizer = AutoTokenizer.from_pretrained(random_model)
    model = AutoModelForMaskedLM.from_pretrained(random_model, attn_implementation="sdpa").eval()
    texts = [x for pair in word_order_pairs(str(eval_corpus), SMALL_WO, seed=0)[:12] for x in pair]
    calls = []

    def whole(**kwargs):  # an MLM with no model/head/decoder attributes: only its forward
        calls.append(kwargs["input_ids"].shape)
        return model(**kwargs)

    sparse = pseudo_log_likelihood(model, tokenizer, texts, SMALL_WO, "cpu")
    dense = pseudo_log_likelihood(whole, tokenizer, texts, SMALL_WO, "cpu")
    assert len(calls) == SMALL_WO.stride  # one batch, every pass through the whole model
    assert torch.equal(sparse, dense)
    assert sparse.shape == (24,) and bool((sparse < 0).all())
