#!/usr/bin/env python
"""Check every shard of an MDS dataset: presence, size, hashes, header and columns.

    python data_prep/validate_dataset.py <dir> [--hash xxh64 ...] [--no-hash]

Finds every index.json under <dir> (the dataset or its split folders), reports each problem with
the shard's file name, and exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from modernbert_pretrain.data.shards import validate_mds_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="MDS dataset folder")
    parser.add_argument("--hash", action="append", default=None,
                        help="hash algorithm to check (repeatable; default: every hash index.json records)")
    parser.add_argument("--no-hash", action="store_true", help="check sizes and headers only")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    algos = [] if args.no_hash else args.hash
    with tqdm(desc="validate", unit="shard", disable=args.quiet) as bar:
        def on_shard(path, problems):
            bar.update(1)
            for problem in problems:
                tqdm.write(f"PROBLEM {problem.path}: {problem.problem}")

        report = validate_mds_dataset(args.root, algos=algos, on_shard=on_shard)
    for problem in report.problems:
        if problem.path.endswith("index.json") or report.indexes == 0:
            print(f"PROBLEM {problem.path}: {problem.problem}")
    print(f"{report.indexes} index file(s), {report.shards} shards, {report.samples} samples, "
          f"{report.bytes / 2**20:.1f} MiB; problems: {len(report.problems)}")
    print("OK" if report.ok else "FAILED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
