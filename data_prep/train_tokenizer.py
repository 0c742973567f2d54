#!/usr/bin/env python
"""Train a byte-level BPE tokenizer with ModernBERT's special tokens.

    python data_prep/train_tokenizer.py --input <jsonl ...> --output <dir> [--vocab-size 8192]

The folder loads with transformers.AutoTokenizer: [CLS] [SEP] [PAD] [MASK] [UNK], the template
"[CLS] $A [SEP]", and a vocabulary padded to a multiple of 64.
"""

from __future__ import annotations

import argparse
import sys

from modernbert_pretrain.data.errors import InputDataError
from modernbert_pretrain.data.prep.tokenizer_train import train_tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", nargs="+", required=True, help="jsonl / jsonl.gz / parquet / txt files or folders")
    parser.add_argument("--output", required=True, help="folder to save the tokenizer in")
    parser.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary before padding (default 8192)")
    parser.add_argument("--text-field", default="text", help="field/column holding the text (default text)")
    parser.add_argument("--min-frequency", type=int, default=2, help="least count of a merged pair (default 2)")
    parser.add_argument("--model-max-length", type=int, default=8192, help="saved model_max_length (default 8192)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        summary = train_tokenizer(args.input, args.output, vocab_size=args.vocab_size, text_field=args.text_field,
                                  min_frequency=args.min_frequency, model_max_length=args.model_max_length,
                                  progress=not args.quiet)
    except (InputDataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"trained on {summary.documents} documents ({summary.empty_documents} empty skipped)")
    print(f"vocabulary: {summary.vocab_size} tokens ({summary.trained_vocab} trained + {summary.padding_tokens} "
          f"padding to a multiple of 64); special ids {summary.special_ids}")
    print(f"saved to {summary.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
