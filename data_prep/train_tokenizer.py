#!/usr/bin/env python
"""Train a byte-level BPE tokenizer with ModernBERT's special tokens.

    python data_prep/train_tokenizer.py --input <jsonl ...> --output <dir> [--vocab-size 8192]
        [--max-docs 1M] [--max-bytes 2G] [--seed 0]

On a big corpus, --max-docs/--max-bytes train on a uniform, seeded sample of the documents of all inputs,
read in one pass with only the sample held in memory. Without them every document is used.

The folder loads with transformers.AutoTokenizer: [CLS] [SEP] [PAD] [MASK] [UNK], the template
"[CLS] $A [SEP]", and a vocabulary padded to a multiple of 64.
"""

from __future__ import annotations

import argparse
import sys

from modernbert_pretrain.data.errors import InputDataError
from modernbert_pretrain.data.prep.tokenizer_train import train_tokenizer
from modernbert_pretrain.schema import read_count


def _budget(flag: str):
    def parse(value: str) -> int:
        count = read_count(value)
        if count is None or count < 1:
            raise argparse.ArgumentTypeError(f"{flag} {value!r}: expected a positive count such as 500000, "
                                             "10M or 1G (K/M/G/T = 10^3/10^6/10^9/10^12)")
        return count
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", nargs="+", required=True,
                        help="jsonl / jsonl.gz / parquet / txt files or folders, or hf:NAME[:CONFIG[:SPLIT]] (a "
                             "Hugging Face dataset, streamed)")
    parser.add_argument("--output", required=True, help="folder to save the tokenizer in")
    parser.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary before padding (default 8192)")
    parser.add_argument("--text-field", default="text", help="field/column holding the text (default text)")
    parser.add_argument("--min-frequency", type=int, default=2, help="least count of a merged pair (default 2)")
    parser.add_argument("--model-max-length", type=int, default=8192, help="saved model_max_length (default 8192)")
    parser.add_argument("--max-docs", type=_budget("--max-docs"), default=None,
                        help="train on a uniform sample of at most this many documents (e.g. 1M; default: all)")
    parser.add_argument("--max-bytes", type=_budget("--max-bytes"), default=None,
                        help="train on a uniform sample of at most this many UTF-8 bytes of text (e.g. 2G, "
                             "held in memory; default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --max-docs/--max-bytes sample (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        summary = train_tokenizer(args.input, args.output, vocab_size=args.vocab_size, text_field=args.text_field,
                                  min_frequency=args.min_frequency, model_max_length=args.model_max_length,
                                  progress=not args.quiet, max_docs=args.max_docs, max_bytes=args.max_bytes,
                                  seed=args.seed)
    except (InputDataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if summary.sample is not None:
        s = summary.sample
        print(f"sampled {s.documents} of {s.seen_documents} documents, {s.bytes} of {s.seen_bytes} bytes, "
              f"from {len(s.files_sampled)} input files (seed {args.seed})")
    print(f"trained on {summary.documents} documents ({summary.empty_documents} empty skipped)")
    print(f"vocabulary: {summary.vocab_size} tokens ({summary.trained_vocab} trained + {summary.padding_tokens} "
          f"padding to a multiple of 64); special ids {summary.special_ids}")
    print(f"saved to {summary.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
