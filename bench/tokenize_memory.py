#!/usr/bin/env python
"""Peak memory of tokenize_to_mds on one large document.

    python bench/tokenize_memory.py [--mb 50] [--tokenizer DIR] [--max-seq-len 8192] [--work DIR]

Writes one document of about --mb megabytes (the embedded corpus repeated, as one .txt file),
then runs tokenize_to_mds on it in a child process (workers=1) and prints the child's peak
resident memory (ru_maxrss), its ratio to the document size, the tokens written and the time.
Without --tokenizer, a 8192-token BPE is trained on a 2 MB slice of the corpus first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

_CHILD = """
import json, sys
from modernbert_pretrain.data.prep.to_mds import tokenize_to_mds
s = tokenize_to_mds([sys.argv[1]], sys.argv[2], sys.argv[3], workers=1, max_seq_len=int(sys.argv[4]), progress=False)
print(json.dumps({"tokens": s.tokens, "samples": s.samples}))
"""


def make_document(path: str, megabytes: float, work: str) -> int:
    from modernbert_pretrain.data.prep.corpus import write_corpus
    from modernbert_pretrain.data.prep.readers import iter_documents

    corpus = os.path.join(work, "corpus.jsonl")
    if not os.path.exists(corpus):
        write_corpus(corpus, max_bytes=2_000_000, progress=False)
    texts = list(iter_documents(corpus, "text"))
    target, written = int(megabytes * 1e6), 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            for text in texts:
                f.write(text + "\n\n")
                written += len(text.encode("utf-8")) + 2
                if written >= target:
                    break
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=50.0, help="document size in MB (default 50)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: train a small one)")
    parser.add_argument("--max-seq-len", type=int, default=8192)
    parser.add_argument("--work", default=None, help="scratch folder (default: a new temporary one)")
    args = parser.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="tokenize-memory-")
    os.makedirs(work, exist_ok=True)
    tokenizer = args.tokenizer
    if tokenizer is None:
        tokenizer = os.path.join(work, "tokenizer")
        if not os.path.isdir(tokenizer):
            from modernbert_pretrain.data.prep.tokenizer_train import train_tokenizer

            make_document(os.path.join(work, "seed.txt"), 0.1, work)
            train_tokenizer([os.path.join(work, "corpus.jsonl")], tokenizer, vocab_size=8192, progress=False)
    doc = os.path.join(work, "doc.txt")
    size = make_document(doc, args.mb, work)
    out = tempfile.mkdtemp(prefix="mds-", dir=work)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(os.path.dirname(__file__), "..", "src"),
                                                       os.environ.get("PYTHONPATH", "")]))
    started = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", _CHILD, doc, out, tokenizer, str(args.max_seq_len)],
                           capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if child.returncode:
        print(child.stderr, file=sys.stderr)
        return 1
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux reports KiB
    result = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"document {size / 1e6:.1f} MB -> {result['tokens']:,} tokens in {result['samples']:,} samples, "
          f"{seconds:.1f} s; peak RSS {peak / 2**20:,.0f} MiB = {peak / size:.1f}x the document")
    return 0


if __name__ == "__main__":
    sys.exit(main())
