#!/usr/bin/env python
"""Write the embedded default corpus (the Python standard library as code and natural language).

    python data_prep/sample_corpus.py <out.jsonl> [--max-bytes N]

Each line is {"text": ..., "source": "code:<file>" | "docstring:<file>:<name>" | "text:<file>"}.
Deterministic for a given Python installation.
"""

from __future__ import annotations

import argparse
import sys

from modernbert_pretrain.data.config import parse_count
from modernbert_pretrain.data.errors import DataConfigError
from modernbert_pretrain.data.prep.corpus import DEFAULT_MAX_BYTES, stdlib_dir, write_corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="JSON-lines file to write")
    parser.add_argument("--max-bytes", default=str(DEFAULT_MAX_BYTES),
                        help=f"stop before this many bytes of text (default {DEFAULT_MAX_BYTES}; suffixes K/M ok)")
    parser.add_argument("--stdlib", default=None, help=f"library folder to read (default {stdlib_dir()})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        max_bytes = parse_count(args.max_bytes, "--max-bytes")
    except DataConfigError as err:
        parser.error(str(err))
    summary = write_corpus(args.output, max_bytes=max_bytes, root=args.stdlib, progress=not args.quiet)
    kinds = ", ".join(f"{n} {k}" for k, n in summary.by_kind.items())
    print(f"wrote {summary.documents} documents ({kinds}), {summary.bytes / 2**20:.1f} MiB to {summary.output}")
    print(f"files read: {summary.files_read}; not UTF-8 (left out): {len(summary.files_not_utf8)}; "
          f"docstrings not extracted (syntax): {len(summary.files_not_parsed)}; "
          f"stopped at --max-bytes: {'yes' if summary.reached_limit else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
