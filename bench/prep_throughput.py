#!/usr/bin/env python
"""Tokens/s of tokenize_to_mds against raw `tokenizers` and a `datasets.map` + `MDSWriter` baseline.

    python bench/prep_throughput.py [--workers 2] [--corpus-mb 32] [--input FILES ...] [--tokenizer DIR]
        [--max-seq-len 8192] [--repeats 3] [--json out.json] [--work DIR]

On the same documents (default: the embedded corpus, ``data_prep/sample_corpus.py``, written to a scratch
folder; or --input JSON-lines / parquet files) and the same tokenizer (default: a 8192-token BPE trained on
them as ``data_prep/train_tokenizer.py`` does; or --tokenizer), with W = --workers:

- ours: ``tokenize_to_mds(..., workers=W)`` end to end: reading, tokenizing, splitting at --max-seq-len,
  writing MDS shards (hashes and fingerprint included), process pool start included.
- raw: ``tokenizers.Tokenizer.encode_batch`` on the same non-empty texts, already in memory (reading
  excluded), in batches of at most 256 texts / about 1M characters (ours' batches), in one process whose
  Rust thread pool has W threads (``RAYON_NUM_THREADS=W``, ``TOKENIZERS_PARALLELISM=true``).
- baseline: what a user would write: ``datasets.load_dataset("json" | "parquet", data_files=...)``, then
  ``.map(batched=True, num_proc=W)`` with ``AutoTokenizer`` (whitespace-only documents skipped as ours
  does), then a plain ``streaming.MDSWriter`` loop writing the same ``[CLS] ... [SEP]`` samples (no
  hashes). Its datasets cache is a fresh folder per run, so nothing is reused between runs.

ours and baseline run W single-threaded processes (``RAYON_NUM_THREADS=1``, ``TOKENIZERS_PARALLELISM=false``),
raw W threads, so each uses W cores. Every run is a fresh child process and is timed inside it, imports
excluded; a figure is the median over --repeats runs. Tokens are content tokens (no [CLS]/[SEP]), counted by
each method itself. ours also runs at W = 1 and 2 for the scaling figure. The last stdout line is a JSON
object with every figure (--json writes it to a file too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

TARGETS = {"ours_over_raw": 0.8, "ours_over_baseline": 1.0}
_RAW_BATCH_DOCS, _RAW_BATCH_CHARS = 256, 1 << 20


def _run_ours(p: dict) -> dict:
    # what tokenize_to_mds imports on first use, kept out of the timing as the baseline's imports are
    from streaming import MDSWriter  # noqa: F401
    from tqdm import tqdm  # noqa: F401
    from transformers import AutoTokenizer  # noqa: F401

    from modernbert_pretrain.data.prep.to_mds import tokenize_to_mds

    started = time.perf_counter()
    s = tokenize_to_mds(p["inputs"], p["out"], p["tokenizer"], text_field=p["text_field"], workers=p["workers"],
                        max_seq_len=p["max_seq_len"], progress=False)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "tokens": s.content_tokens, "samples": s.samples, "documents": s.documents}


def _texts(p: dict) -> list[str]:
    from modernbert_pretrain.data.prep.readers import iter_documents

    return [t for path in p["inputs"] for t in iter_documents(path, p["text_field"]) if t.strip()]


def _run_raw(p: dict) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(p["tokenizer"], "tokenizer.json"))
    texts = _texts(p)
    batches, batch, chars = [], [], 0
    for text in texts:
        batch.append(text)
        chars += len(text)
        if len(batch) >= _RAW_BATCH_DOCS or chars >= _RAW_BATCH_CHARS:
            batches.append(batch)
            batch, chars = [], 0
    batches += [batch] if batch else []
    tokens = 0
    started = time.perf_counter()
    for batch in batches:
        tokens += sum(len(e) for e in tok.encode_batch(batch, add_special_tokens=False))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "tokens": tokens, "samples": 0, "documents": len(texts)}


def _run_baseline(p: dict) -> dict:
    import numpy as np
    from datasets import load_dataset
    from streaming import MDSWriter
    from transformers import AutoTokenizer

    field, chunk = p["text_field"], p["max_seq_len"] - 2
    started = time.perf_counter()  # from here on as in ours: the tokenizer's loading included
    tok = AutoTokenizer.from_pretrained(p["tokenizer"])
    dtype = np.uint16 if len(tok) <= 1 << 16 else np.uint32

    def tokenize(batch):
        texts = [t if t and t.strip() else "" for t in batch[field]]
        return {"input_ids": tok(texts, add_special_tokens=False)["input_ids"]}

    ds = load_dataset(p["builder"], data_files=p["inputs"], split="train", cache_dir=p["cache"])
    ds = ds.map(tokenize, batched=True, num_proc=p["workers"] if p["workers"] > 1 else None,
                remove_columns=ds.column_names, load_from_cache_file=False)
    tokens = samples = documents = 0
    with MDSWriter(out=p["out"], columns={"input_ids": f"ndarray:{np.dtype(dtype).name}"},
                   size_limit=1 << 26) as writer:
        for row in ds.with_format("numpy"):
            ids = row["input_ids"]
            if ids.size == 0:
                continue
            documents += 1
            tokens += int(ids.size)
            for start in range(0, ids.size, chunk):
                piece = np.concatenate(([tok.cls_token_id], ids[start:start + chunk], [tok.sep_token_id]))
                writer.write({"input_ids": piece.astype(dtype)})
                samples += 1
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "tokens": tokens, "samples": samples, "documents": documents}


_KINDS = {"ours": _run_ours, "raw": _run_raw, "baseline": _run_baseline}


def _child_env(kind: str, workers: int) -> dict[str, str]:
    threads = workers if kind == "raw" else 1
    return dict(os.environ, RAYON_NUM_THREADS=str(threads),
                TOKENIZERS_PARALLELISM="true" if kind == "raw" else "false")


def run_once(kind: str, params: dict, work: str) -> dict:
    """One measurement in a fresh child process; its output folders are removed after."""
    scratch = tempfile.mkdtemp(prefix=f"{kind}-", dir=work)
    params = dict(params, out=os.path.join(scratch, "mds"), cache=os.path.join(scratch, "cache"))
    try:
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", kind, json.dumps(params)],
                               capture_output=True, text=True, env=_child_env(kind, params["workers"]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if child.returncode:
        raise RuntimeError(f"{kind} (workers={params['workers']}) failed:\n{child.stderr[-3000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result["tokens_per_s"] = result["tokens"] / max(result["seconds"], 1e-9)
    return result


def measure(kind: str, params: dict, repeats: int, work: str, log) -> dict:
    runs = [run_once(kind, params, work) for _ in range(repeats)]
    rates = [r["tokens_per_s"] for r in runs]
    summary = {"workers": params["workers"], "tokens_per_s": statistics.median(rates), "runs_tokens_per_s": rates,
               "seconds_median": statistics.median(r["seconds"] for r in runs), "tokens": runs[0]["tokens"],
               "samples": runs[0]["samples"], "documents": runs[0]["documents"]}
    log(f"  {kind:9s} W={params['workers']}: {summary['tokens_per_s']:>12,.0f} tokens/s (median of {repeats}; "
        f"{summary['tokens']:,} tokens, {summary['seconds_median']:.2f} s)")
    return summary


def _builder(files: list[str]) -> str:
    """The datasets builder the baseline reads ``files`` with: every file JSON lines, or every file parquet."""
    from modernbert_pretrain.data.prep.readers import JSON_LINES, input_format

    formats = {input_format(f) for f in files}
    if formats <= set(JSON_LINES):
        return "json"
    if formats == {".parquet"}:
        return "parquet"
    raise ValueError(f"--input must be all JSON-lines or all parquet files (the baseline reads them with one "
                     f"datasets builder); got {sorted(str(f) for f in formats)}")


def prepare(args, work: str, log) -> tuple[list[str], str]:
    """The input files and tokenizer folder: given, or written into ``work``."""
    from modernbert_pretrain.data.prep.readers import find_input_files

    if args.input:
        files = find_input_files(args.input)
        if any(f.startswith("hf:") for f in files):
            raise ValueError("hf: inputs are not benchmarked here; pass data files")
    else:
        from modernbert_pretrain.data.prep.corpus import write_corpus

        corpus = os.path.join(work, "corpus.jsonl")
        s = write_corpus(corpus, max_bytes=int(args.corpus_mb * 2**20), progress=False)
        log(f"corpus: {s.documents:,} documents, {s.bytes / 2**20:.1f} MiB of text ({corpus})")
        files = [corpus]
    tokenizer = args.tokenizer
    if tokenizer is None:
        from modernbert_pretrain.data.prep.tokenizer_train import train_tokenizer

        tokenizer = os.path.join(work, "tokenizer")
        started = time.perf_counter()
        s = train_tokenizer(files, tokenizer, vocab_size=args.vocab_size, progress=False)
        log(f"tokenizer: {s.vocab_size} tokens, trained in {time.perf_counter() - started:.1f} s ({tokenizer})")
    return files, tokenizer


def _versions() -> dict[str, str]:
    import datasets
    import streaming
    import tokenizers
    import transformers

    return {"python": sys.version.split()[0], "tokenizers": tokenizers.__version__, "datasets": datasets.__version__,
            "streaming": streaming.__version__, "transformers": transformers.__version__}


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def run(args, work: str, log) -> dict:
    files, tokenizer = prepare(args, work, log)
    params = {"inputs": [os.path.abspath(f) for f in files], "tokenizer": os.path.abspath(tokenizer),
              "text_field": args.text_field, "max_seq_len": args.max_seq_len, "builder": _builder(files)}
    w = args.workers
    log(f"workers W={w}, {os.cpu_count()} CPUs, max_seq_len {args.max_seq_len}, repeats {args.repeats}")
    results = {kind: measure(kind, dict(params, workers=w), args.repeats, work, log)
               for kind in ("ours", "raw", "baseline")}
    for n in (1, 2):
        results[f"ours_w{n}"] = results["ours"] if n == w else \
            measure("ours", dict(params, workers=n), args.repeats, work, log)
    rate = {k: v["tokens_per_s"] for k, v in results.items()}
    ratios = {"ours_over_raw": _ratio(rate["ours"], rate["raw"]),
              "ours_over_baseline": _ratio(rate["ours"], rate["baseline"]),
              "scaling_w1_to_w2": _ratio(rate["ours_w2"], rate["ours_w1"])}
    counts = {k: results[k]["tokens"] for k in ("ours", "raw", "baseline")}
    if len(set(counts.values())) > 1:
        log(f"  note: token counts differ {counts} (ours cuts texts over 64k characters at word ends)")
    report = {"workers": w, "cpus": os.cpu_count(), "inputs": params["inputs"], "tokenizer": params["tokenizer"],
              "max_seq_len": args.max_seq_len, "repeats": args.repeats, "versions": _versions(), **results,
              "ratios": ratios, "targets": TARGETS,
              "meets_targets": {k: ratios[k] >= t for k, t in TARGETS.items()}}
    log(f"ours/raw {ratios['ours_over_raw']:.2f} (target >= {TARGETS['ours_over_raw']}), ours/baseline "
        f"{ratios['ours_over_baseline']:.2f} (target >= {TARGETS['ours_over_baseline']}), ours W=2 / W=1 "
        f"{ratios['scaling_w1_to_w2']:.2f}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="W: processes (ours, baseline) or threads (raw)")
    parser.add_argument("--input", nargs="+", default=None, help="JSON-lines or parquet files (default: corpus)")
    parser.add_argument("--corpus-mb", type=float, default=32.0, help="embedded corpus size in MiB (default 32)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: train one on the inputs)")
    parser.add_argument("--vocab-size", type=int, default=8192, help="vocabulary of the trained tokenizer")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--max-seq-len", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--json", default=None, help="also write the report to this file")
    parser.add_argument("--work", default=None, help="scratch folder, kept (default: a temporary one, removed)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PARAMS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_KINDS[args.child[0]](json.loads(args.child[1]))))
        return 0
    if args.workers < 1 or args.repeats < 1:
        parser.error("--workers and --repeats must be >= 1")
    work = args.work or tempfile.mkdtemp(prefix="prep-throughput-")
    os.makedirs(work, exist_ok=True)
    try:
        report = run(args, work, print)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
