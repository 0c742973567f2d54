#!/usr/bin/env python
"""Merge the parts of a `tokenize_to_mds.py --parts N` run into one dataset at its output folder.

    python data_prep/merge_mds.py <output>      # a folder, or a remote prefix such as s3://bucket/prefix

Writes <output>/index.json over every part's shards and the tokenizer fingerprint beside it.
Refuses (exit 2), naming the part, when a part is missing or unfinished, or when parts disagree
on the tokenizer, the token dtype or the plan.
"""

from __future__ import annotations

import argparse
import sys

from modernbert_pretrain.data.errors import PartsError, RemoteStorageError
from modernbert_pretrain.data.prep.merge import merge_parts
from modernbert_pretrain.data.streaming_adapter import StreamingVersionError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="the --output folder (or remote prefix, s3://bucket/prefix) of the parts")
    args = parser.parse_args(argv)
    try:
        s = merge_parts(args.output)
    except (PartsError, RemoteStorageError, StreamingVersionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"merged {s.parts} part(s): {s.shards} shards, {s.samples} samples, {s.tokens} tokens in {s.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
