#!/usr/bin/env python
"""Evaluation throughput on the embedded tasks: examples/s for embedding (no grad, mean pooled), for the
contrastive fine-tune of code search, and for word order's zero-shot pseudo-log-likelihood scoring, with the
tasks' own lengths and batch sizes.

    python bench/eval_throughput.py [--model DIR] [--data-dir DIR] [--device cpu] [--steps 8] [--threads N]

--model defaults to the newest export in quickstart/hf; --data-dir to the corpus the tasks find by default.
The last stdout line is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _default_model() -> str:
    from modernbert_pretrain.evaluate.targets import export_folders

    root = ROOT / "quickstart" / "hf"
    folders = export_folders(root) if root.is_dir() else []
    if not folders:
        sys.exit(f"no export in {root}; run launch/quickstart.sh or pass --model")
    return str(folders[-1])


def _rate(fn, n_examples: int, repeats: int) -> float:
    fn()  # warm-up (allocations, first-call dispatch)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return n_examples * repeats / (time.perf_counter() - start)


def measure(model_dir: str, data_dir: str | None, device: str, steps: int) -> dict:
    import torch

    from modernbert_pretrain.evaluate.tasks import encoder as E
    from modernbert_pretrain.evaluate.tasks.embedded import CodeSearchSettings, code_search_data
    from modernbert_pretrain.evaluate.tasks.word_order import (
        WordOrderSettings,
        pseudo_log_likelihood,
        word_order_pairs,
    )

    cs, wo = CodeSearchSettings(), WordOrderSettings()
    train, held_out = code_search_data(data_dir, cs)
    snippets = [a for a, _ in word_order_pairs(data_dir, wo, seed=0)][:128]
    E.seed_all(0)
    tokenizer, model = E.load_encoder(model_dir, device)
    codes = [p.code for p in held_out][:128]
    out = {"model": model_dir, "device": device, "threads": torch.get_num_threads(),
           "parameters": sum(p.numel() for p in model.parameters())}
    out["embed_code_per_s"] = _rate(lambda: E.embed(model, tokenizer, codes, max_len=cs.max_len_code,
                                                     batch_size=64, device=device), len(codes), 2)
    pairs = train[: cs.batch_size * steps]
    out["contrastive_pairs_per_s"] = _rate(
        lambda: E.contrastive_finetune(model, tokenizer, [p.docstring for p in pairs], [p.code for p in pairs],
                                       steps=steps, batch_size=cs.batch_size, lr=cs.lr, scale=cs.scale,
                                       max_len_query=cs.max_len_query, max_len_doc=cs.max_len_code, seed=0,
                                       device=device), cs.batch_size * steps, 1)
    from transformers import AutoModelForMaskedLM

    mlm = AutoModelForMaskedLM.from_pretrained(model_dir, attn_implementation="sdpa").to(device).eval()
    out["word_order_texts_per_s"] = _rate(lambda: pseudo_log_likelihood(mlm, tokenizer, snippets, wo, device),
                                          len(snippets), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="exported model folder (default: newest in quickstart/hf)")
    p.add_argument("--data-dir", default=None, help="corpus folder with train.jsonl and val.jsonl")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=8, help="timed fine-tuning steps per measurement")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = measure(args.model or _default_model(), args.data_dir, args.device, args.steps)
    print(f"model {result['model']} ({result['parameters'] / 1e6:.2f}M encoder parameters), {args.device}, "
          f"{result['threads']} threads")
    print(f"  embedding (code, <= 128 tokens)             {result['embed_code_per_s']:8.1f} examples/s")
    print(f"  contrastive fine-tune (pairs, 48 + 128 tok) {result['contrastive_pairs_per_s']:8.1f} examples/s")
    print(f"  word order scoring (texts, <= 128 tok, 6 passes) {result['word_order_texts_per_s']:8.1f} examples/s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
