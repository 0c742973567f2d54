"""Best-fit packing and MLM masking, each on its own (no shards)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch

from modernbert_pretrain.data import IGNORE_INDEX, BestFitPacker, MLMMasker, TokenizerInfo, make_microbatch
from tests.data_fixtures import heavy_tailed_lengths

VOCAB = 1000
SPECIALS = (0, 1, 2, 3, 4, 997, 998, 999)  # specials at both ends, like padded vocabularies
INFO = TokenizerInfo(name="test", vocab_size=VOCAB, special_ids=SPECIALS, mask_id=3, cls_id=0, sep_id=1, pad_id=2)


def make_docs(n: int, seq_len: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(5, 997, int(length)).astype(np.uint16) for length in heavy_tailed_lengths(n, seq_len, rng)]


class finite_source:  # noqa: N801 (used like a function)
    """next_doc() over docs[start:], with sample id = index in docs; ``position`` is the cursor."""

    def __init__(self, docs, start: int = 0):
        self.docs, self.position = docs, start

    def __call__(self):
        if self.position >= len(self.docs):
            return None
        self.position += 1
        return self.position - 1, self.docs[self.position - 1]


def test_packing_keeps_every_token_and_respects_seq_len():
    seq_len = 128
    docs = make_docs(800, seq_len)
    packer = BestFitPacker(seq_len, 64, finite_source(docs))
    pieces = defaultdict(list)
    while row := packer.next_row():
        assert sum(p.tokens.size for p in row) <= seq_len
        for p in row:
            assert 1 <= p.tokens.size <= seq_len
            pieces[p.sample_id].append(p)
    assert packer.exhausted and packer.pending == 0
    assert sorted(pieces) == list(range(len(docs)))
    for sample_id, parts in pieces.items():
        parts.sort(key=lambda p: p.start)
        assert np.array_equal(np.concatenate([p.tokens for p in parts]), docs[sample_id])
    assert any(len(parts) > 1 for parts in pieces.values())  # long documents were split, not cut


def test_packing_efficiency_on_heavy_tailed_lengths():
    seq_len = 1024
    docs = make_docs(6000, seq_len, seed=1)
    packer = BestFitPacker(seq_len, 1024, finite_source(docs))
    rows = [packer.next_row() for _ in range(3000)]  # stop well before the source runs dry
    assert not packer.exhausted
    real = sum(p.tokens.size for row in rows for p in row)
    assert real / (len(rows) * seq_len) >= 0.99


def test_packer_state_restores_the_same_rows():
    docs = make_docs(500, 64, seed=2)
    source = finite_source(docs)
    first = BestFitPacker(64, 32, source)
    for _ in range(40):
        first.next_row()
    state = first.state_dict()
    reads = []

    def read(sample_id):
        reads.append(sample_id)
        return docs[sample_id]

    # the restored packer's source resumes where the first one's source stood
    second = BestFitPacker(64, 32, finite_source(docs, start=source.position))
    second.load_state_dict(state, read)
    assert len(reads) == len(set(state["pieces"][:, 0].tolist())) <= 32
    for _ in range(60):
        a, b = first.next_row(), second.next_row()
        assert [(p.sample_id, p.start) for p in a] == [(p.sample_id, p.start) for p in b]
        assert all(np.array_equal(x.tokens, y.tokens) for x, y in zip(a, b))


def masked(ids: np.ndarray, **kwargs):
    masker = MLMMasker(INFO, kwargs.pop("mask_prob", 0.3), seed=kwargs.pop("seed", 11), **kwargs)
    return masker(ids, step=5, rank=1, index=2)


def test_mask_rate_and_80_10_10_split():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, 400_000).astype(np.int64)
    inputs, labels = masked(ids)
    special = np.isin(ids, SPECIALS)
    chosen = labels != IGNORE_INDEX
    assert np.array_equal(labels[chosen], ids[chosen])
    assert abs(chosen.sum() / (~special).sum() - 0.3) < 0.005
    as_mask = chosen & (inputs == INFO.mask_id)
    kept = chosen & (inputs == ids)
    randomized = chosen & ~as_mask & ~kept
    n = chosen.sum()
    # a random draw equal to the original counts as "kept": expected share 0.1 + 0.1 / 992
    assert abs(as_mask.sum() / n - 0.8) < 0.01
    assert abs(randomized.sum() / n - 0.1 * (1 - 1 / 992)) < 0.01
    assert abs(kept.sum() / n - 0.1 * (1 + 1 / 992)) < 0.01
    assert np.array_equal(inputs[~chosen], ids[~chosen])


def test_special_tokens_are_never_masked_nor_drawn():
    rng = np.random.default_rng(1)
    ids = np.where(rng.random(300_000) < 0.5, rng.choice(SPECIALS, 300_000), rng.integers(5, 997, 300_000))
    inputs, labels = masked(ids, mask_prob=0.9, mask_token_prob=0.0, random_token_prob=1.0)
    special = np.isin(ids, SPECIALS)
    assert (labels[special] == IGNORE_INDEX).all() and np.array_equal(inputs[special], ids[special])
    replaced = (labels != IGNORE_INDEX) & (inputs != ids)
    assert replaced.sum() > 100_000
    assert not np.isin(inputs[replaced], SPECIALS).any()
    # replacements cover the whole non-special vocabulary, not just ids seen in the batch
    assert np.unique(inputs[replaced]).size == VOCAB - len(SPECIALS)


def test_masks_are_a_function_of_seed_step_rank_and_microbatch():
    ids = np.random.default_rng(2).integers(5, 997, 5000).astype(np.int64)
    masker = MLMMasker(INFO, 0.3, seed=7)
    a = masker(ids, step=3, rank=0, index=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, masker(ids, step=3, rank=0, index=1)))
    for other in ({"step": 4, "rank": 0, "index": 1}, {"step": 3, "rank": 1, "index": 1},
                  {"step": 3, "rank": 0, "index": 0}):
        assert not np.array_equal(a[1], masker(ids, **other)[1])
    assert not np.array_equal(a[1], MLMMasker(INFO, 0.3, seed=8)(ids, step=3, rank=0, index=1)[1])


def test_microbatch_form():
    docs = make_docs(200, 64, seed=3)
    packer = BestFitPacker(64, 16, finite_source(docs))
    rows = [packer.next_row() for _ in range(4)]
    mb = make_microbatch(rows, seq_len=64, masker=MLMMasker(INFO, 0.3), step=0, rank=0, index=0)
    lengths = [p.tokens.size for row in rows for p in row]
    assert mb["input_ids"].dtype == mb["labels"].dtype == torch.long
    assert mb["cu_seqlens"].dtype == torch.int32
    assert mb["cu_seqlens"].tolist() == np.concatenate([[0], np.cumsum(lengths)]).tolist()
    assert mb["input_ids"].shape == mb["labels"].shape == (sum(lengths),)
    assert mb["max_seqlen"] == max(lengths) <= 64
    assert (mb["num_rows"], mb["num_slot_tokens"], mb["num_real_tokens"]) == (4, 256, sum(lengths))
    assert mb["num_masked"] == int((mb["labels"] != IGNORE_INDEX).sum())


def test_masker_rejects_bad_rates():
    with pytest.raises(ValueError, match="mask_prob"):
        MLMMasker(INFO, 1.0)
    with pytest.raises(ValueError, match="sum to at most 1"):
        MLMMasker(INFO, 0.3, mask_token_prob=0.9, random_token_prob=0.2)
