#!/usr/bin/env python
"""Training throughput: our packed ModernBERT against transformers' ModernBertForMaskedLM, same tokens.

The command line of the benchmark; the code is the `throughput` package next to this file (its docstring
describes the data, the timing and the FLOP count) and `bench/README.md` explains the figures.

    python bench/train_throughput.py                  # on a GPU: baseline + ours, three configurations
    python bench/train_throughput.py --device cpu --tiny
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _path in (_HERE.parent / "src", _HERE):  # the project's sources, and the throughput package
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

try:
    from throughput.cli import main, parse_args
except ModuleNotFoundError as _err:  # e.g. omegaconf on a bare GPU image: say so before any work starts
    sys.exit(f"train_throughput: {_err}; install it (bench/README.md, 'Running it' lists what the script needs)")

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
