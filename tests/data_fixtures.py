"""Shared, cached test data for the data-pipeline tests (a small real corpus -> tokenizer -> shards).

Built once per test session in a temporary folder: a ~1.5 MB slice of the embedded corpus, a
512-token BPE tokenizer, MDS shards split at 512 tokens into several small shards, and a synthetic
set of shards with heavy-tailed document lengths for packing/masking statistics.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from modernbert_pretrain.data import DataConfig, tokenizer_info

_ROOT = tempfile.mkdtemp(prefix="mbp-data-tests-")
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)

CORPUS_BYTES = 1_500_000
PREP_MAX_SEQ_LEN = 512


def fresh_dir(name: str) -> str:
    """A new empty folder under the session root."""
    return tempfile.mkdtemp(prefix=f"{name}-", dir=_ROOT)


@contextmanager
def own_shm():
    """Release, on exit, the shared memory of the datasets this process built inside the block, and
    nothing else: other processes' streaming jobs (a training run, a parallel test run) keep theirs."""
    from modernbert_pretrain.data.shm import release_tracked, tracked_count

    marker = tracked_count()
    try:
        yield
    finally:
        release_tracked(since=marker)


@dataclass(frozen=True)
class SmallData:
    root: str
    corpus: str
    tokenizer: str
    mds: str
    corpus_summary: object
    mds_summary: object


@lru_cache(maxsize=1)
def small_data() -> SmallData:
    from modernbert_pretrain.data.prep.corpus import write_corpus
    from modernbert_pretrain.data.prep.to_mds import tokenize_to_mds
    from modernbert_pretrain.data.prep.tokenizer_train import train_tokenizer

    root = fresh_dir("small")
    corpus = os.path.join(root, "corpus.jsonl")
    corpus_summary = write_corpus(corpus, max_bytes=CORPUS_BYTES, progress=False)
    tokenizer = os.path.join(root, "tokenizer")
    train_tokenizer([corpus], tokenizer, vocab_size=512, progress=False)
    mds = os.path.join(root, "mds")
    mds_summary = tokenize_to_mds([corpus], mds, tokenizer, workers=1, max_seq_len=PREP_MAX_SEQ_LEN,
                                  shard_size=1 << 17, progress=False)
    return SmallData(root, corpus, tokenizer, mds, corpus_summary, mds_summary)


def heavy_tailed_lengths(n: int, seq_len: int, rng: np.random.Generator) -> np.ndarray:
    """60% short (~0.1 seq_len), 30% medium (~0.5 seq_len), 10% Pareto tail beyond seq_len."""
    kind = rng.random(n)
    short = rng.lognormal(np.log(0.1 * seq_len), 0.8, n)
    medium = rng.lognormal(np.log(0.5 * seq_len), 0.5, n)
    tail = seq_len * (1 + rng.pareto(1.2, n))
    return np.clip(np.where(kind < 0.6, short, np.where(kind < 0.9, medium, tail)), 1, 16 * seq_len).astype(np.int64)


def write_mds(out: str, docs: list[np.ndarray], dtype: str = "uint16", shard_size: int = 1 << 18) -> str:
    from streaming import MDSWriter

    with MDSWriter(out=out, columns={"input_ids": f"ndarray:{dtype}"}, hashes=["sha1", "xxh64"],
                   size_limit=shard_size) as writer:
        for doc in docs:
            writer.write({"input_ids": doc.astype(dtype)})
    return out


@lru_cache(maxsize=4)
def synthetic_mds(num_docs: int = 3000, seq_len: int = 256, seed: int = 0) -> tuple[str, int]:
    """Shards of [CLS] random non-special tokens [SEP] with heavy-tailed lengths; returns (dir, tokens)."""
    info = tokenizer_info(small_data().tokenizer)
    rng = np.random.default_rng(seed)
    pool = info.replacement_ids()
    docs = []
    for length in heavy_tailed_lengths(num_docs, seq_len, rng):
        body = pool[rng.integers(0, pool.size, int(length))]
        docs.append(np.concatenate([[info.cls_id], body, [info.sep_id]]))
    out = write_mds(fresh_dir("synthetic"), docs)
    return out, int(sum(d.size for d in docs))


_SMALL = object()


def make_cfg(local: str | None | object = _SMALL, **overrides) -> DataConfig:
    """A small DataConfig over the small shards (absolute paths); ``local=None`` for ``streams``."""
    fields = dict(tokenizer=small_data().tokenizer, local=small_data().mds if local is _SMALL else local, seq_len=256,
                  device_microbatch_size=4, global_batch_size=8, packing_buffer_docs=64, seed=3)
    fields.update(overrides)
    return DataConfig(**fields)


def take(loader, steps: int) -> list[dict]:
    """The next ``steps`` batches of a loader (one iterator, not restarted)."""
    out = []
    iterator = iter(loader)
    for _ in range(steps):
        out.append(next(iterator))
    return out


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    import torch

    assert len(a) == len(b)
    for step, (x, y) in enumerate(zip(a, b)):
        assert len(x["microbatches"]) == len(y["microbatches"]), step
        for k in ("num_rows", "num_slot_tokens", "num_real_tokens"):
            assert x[k] == y[k], (step, k)
        for mx, my in zip(x["microbatches"], y["microbatches"]):
            for key in ("input_ids", "labels", "cu_seqlens"):
                assert torch.equal(mx[key], my[key]), (step, key)
            assert mx["max_seqlen"] == my["max_seqlen"]
