#!/usr/bin/env python
"""Throughput of the loader's CPU stages, in real tokens per second of one process.

    python bench/loader_throughput.py [--seq-len 1024] [--tokens 50M] [--shards DIR --tokenizer DIR]

1. Synthetic documents held in memory, so the figures exclude reading: a heavy-tailed mix (many
   short, some long, a tail far beyond seq_len) and a short-only mix (the most pieces per row): best-fit packing alone, then packing + masking +
   collation into microbatches (what a loader process does per step besides reading).
2. With --shards and --tokenizer: raw reading of those MDS shards through the source stage, and
   the whole training loader (reading + packing + masking).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from modernbert_pretrain.data import (
    BestFitPacker,
    DataConfig,
    MLMMasker,
    TokenizerInfo,
    build_train_loader,
    make_microbatch,
    parse_count,
)
from modernbert_pretrain.data.source import RankLayout, ShardSource
from modernbert_pretrain.data.tokenizer_info import resolve_config, tokenizer_info


def heavy_tailed_lengths(n: int, seq_len: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths: 60% short (lognormal ~ 0.1 seq_len), 30% medium (~ seq_len / 2), 10% Pareto tail."""
    kind = rng.random(n)
    short = rng.lognormal(np.log(0.1 * seq_len), 0.8, n)
    medium = rng.lognormal(np.log(0.5 * seq_len), 0.5, n)
    tail = seq_len * (1 + rng.pareto(1.2, n))
    lengths = np.where(kind < 0.6, short, np.where(kind < 0.9, medium, tail))
    return np.clip(lengths, 3, 64 * seq_len).astype(np.int64)


def short_lengths(n: int, seq_len: int, rng: np.random.Generator) -> np.ndarray:
    """Only short documents (lognormal, median 0.1 seq_len): the most pieces per row, the worst case."""
    return np.clip(rng.lognormal(np.log(0.1 * seq_len), 0.8, n), 3, seq_len).astype(np.int64)


MIXES = {"heavy-tailed": heavy_tailed_lengths, "short-only": short_lengths}


def synthetic_docs(n: int, seq_len: int, vocab: int, seed: int = 0, mix: str = "heavy-tailed"):
    rng = np.random.default_rng(seed)
    lengths = MIXES[mix](n, seq_len, rng)
    flat = rng.integers(5, vocab, int(lengths.sum()), dtype=np.uint16)  # ids 0-4 are special
    ends = np.cumsum(lengths)
    docs = np.split(flat, ends[:-1])
    return docs, int(lengths.sum())


def doc_stream(docs):
    """Endless next_doc() over the pool, with distinct sample ids."""
    state = {"i": 0}

    def next_doc():
        i = state["i"]
        state["i"] += 1
        return i, docs[i % len(docs)]

    return next_doc


def synthetic_info(vocab: int) -> TokenizerInfo:
    return TokenizerInfo(name="synthetic", vocab_size=vocab, special_ids=(0, 1, 2, 3, 4), mask_id=3, cls_id=0,
                         sep_id=1, pad_id=2)


def bench_synthetic(seq_len: int, rows_per_mb: int, target_tokens: int, buffer_docs: int, vocab: int,
                    mix: str) -> None:
    docs, pool_tokens = synthetic_docs(20_000, seq_len, vocab, mix=mix)
    lengths = np.array([d.size for d in docs])
    print(f"synthetic {mix} pool: {len(docs)} docs, {pool_tokens / 1e6:.1f}M tokens; length p50 "
          f"{np.median(lengths):.0f}, "
          f"p90 {np.percentile(lengths, 90):.0f}, p99 {np.percentile(lengths, 99):.0f}, max {lengths.max()}; "
          f"{(lengths > seq_len).mean():.1%} longer than seq_len={seq_len}")
    masker = MLMMasker(synthetic_info(vocab), 0.3, seed=17)
    for label, with_masking in (("packing only", False), ("packing + masking + collation", True)):
        packer = BestFitPacker(seq_len, buffer_docs, doc_stream(docs))
        for _ in range(rows_per_mb * 4):  # fill the buffer before timing
            packer.next_row()
        real = slots = step = 0
        started = time.perf_counter()
        while real < target_tokens:
            rows = [packer.next_row() for _ in range(rows_per_mb)]
            if with_masking:
                mb = make_microbatch(rows, seq_len=seq_len, masker=masker, step=step, rank=0, index=0)
                real += mb["num_real_tokens"]
            else:
                real += sum(p.tokens.size for row in rows for p in row)
            slots += rows_per_mb * seq_len
            step += 1
        seconds = time.perf_counter() - started
        print(f"  {label:32s} {real / seconds / 1e6:7.2f}M tokens/s   packing efficiency {real / slots:.4f}   "
              f"({real / 1e6:.0f}M tokens, {seconds:.1f} s)")


def bench_shards(shards: str, tokenizer: str, seq_len: int, rows_per_mb: int, target_tokens: int,
                 buffer_docs: int) -> None:
    cfg = DataConfig(tokenizer=tokenizer, local=os.path.abspath(shards), seq_len=seq_len,
                     device_microbatch_size=rows_per_mb, global_batch_size=rows_per_mb, packing_buffer_docs=buffer_docs)
    cfg = resolve_config(cfg, os.getcwd())
    info = tokenizer_info(cfg.tokenizer)
    source = ShardSource(cfg, layout=RankLayout(0, 1, 1), vocab_size=info.vocab_size)
    tokens = docs = 0
    started = time.perf_counter()
    while tokens < target_tokens:
        _, ids = source.next_doc()
        tokens += ids.size
        docs += 1
    seconds = time.perf_counter() - started
    source.close(release_shared_memory=True)
    print(f"  {'raw read (source stage)':32s} {tokens / seconds / 1e6:7.2f}M tokens/s   {docs / seconds:,.0f} docs/s")
    loader = build_train_loader(cfg, rank=0, world_size=1)
    real = slots = 0
    started = time.perf_counter()
    for batch in loader:
        real += batch["num_real_tokens"]
        slots += batch["num_slot_tokens"]
        if real >= target_tokens:
            break
    seconds = time.perf_counter() - started
    loader.close()
    print(f"  {'whole loader (read+pack+mask)':32s} {real / seconds / 1e6:7.2f}M tokens/s   packing efficiency "
          f"{real / slots:.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--rows", type=int, default=32, help="rows per microbatch (default 32)")
    parser.add_argument("--tokens", default="50M", help="real tokens per measurement (default 50M)")
    parser.add_argument("--buffer-docs", type=int, default=1024, help="packer buffer (default 1024)")
    parser.add_argument("--vocab", type=int, default=50368, help="synthetic vocabulary size (default 50368)")
    parser.add_argument("--shards", default=None, help="MDS folder to also measure reading")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder of --shards")
    args = parser.parse_args(argv)
    target = parse_count(args.tokens, "--tokens")
    print(f"seq_len {args.seq_len}, {args.rows} rows per microbatch, buffer {args.buffer_docs} docs, "
          f"{os.cpu_count()} CPUs, numpy {np.__version__}")
    for mix in MIXES:
        bench_synthetic(args.seq_len, args.rows, target, args.buffer_docs, args.vocab, mix)
    if args.shards:
        if not args.tokenizer:
            parser.error("--shards needs --tokenizer")
        print(f"shards {args.shards}:")
        bench_shards(args.shards, args.tokenizer, args.seq_len, args.rows, target, args.buffer_docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
