#!/usr/bin/env python
"""Tokenize documents into MDS shards for the training loader.

    python data_prep/tokenize_to_mds.py --input <files or dirs> --output <dir> --tokenizer <name or dir>
        [--text-field text] [--workers N] [--max-seq-len L] [--overwrite] [--parts N --part I]

Inputs: .jsonl, .jsonl.gz, .jsonl.zst, .json.gz, .parquet and Hugging Face save_to_disk folders
(one document per record, text in --text-field), .txt (one document per file), folders and globs, and
Hugging Face datasets by name, streamed: hf:NAME[:CONFIG[:SPLIT]] (hf:allenai/c4:en:train; split default
train; NAME may be a local folder of data files). Each document is written as [CLS] tokens [SEP]; longer than
--max-seq-len, it is split into consecutive pieces that each fit (no token is lost). Whitespace-only
documents are skipped and counted.

With --parts N --part I, only part I of N is written, into <output>/part-0000I-of-0000N/, in
chunks that a rerun keeps: rerun a killed part to finish it, then merge every part with
data_prep/merge_mds.py <output>. The parts are balanced by input bytes (a large .jsonl is cut
between lines, a parquet file between row groups); run them on one or many machines. An hf: dataset is
split by its shards (one per data file): each shard is one chunk, dealt whole to a part.

--output may be a remote prefix (s3://bucket/prefix; gs://, oci:// and the other schemes of
mosaicml-streaming's uploader; S3_ENDPOINT_URL for an S3-compatible server): shards are uploaded as
they are finished and removed from a local staging folder (--staging, default a temporary folder)
that holds at most 4 shards, with or without --parts; resume and merge work on the remote.
"""

from __future__ import annotations

import argparse
import os
import sys

from modernbert_pretrain.data.errors import InputDataError, OutputExistsError, TokenizerLoadError
from modernbert_pretrain.data.prep.to_mds import tokenize_to_mds
from modernbert_pretrain.data.streaming_adapter import StreamingVersionError
from modernbert_pretrain.diskspace import NoSpaceLeft


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", nargs="+", required=True,
                        help="input files, folders, globs, or hf:NAME[:CONFIG[:SPLIT]] (a dataset, streamed)")
    parser.add_argument("--output", required=True,
                        help="folder or remote prefix (s3://bucket/prefix) for the shards (must hold no shards yet)")
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder or Hugging Face name")
    parser.add_argument("--text-field", default="text", help="field/column holding the text (default text)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="tokenizer processes (default: all CPUs)")
    parser.add_argument("--max-seq-len", type=int, default=8192,
                        help="most tokens per sample, [CLS]/[SEP] included (default 8192; the loader splits "
                             "further to its seq_len)")
    parser.add_argument("--shard-size", default="64mb", help="shard size limit (default 64mb)")
    parser.add_argument("--compression", default=None, help="shard compression, e.g. zstd (default none)")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in --output")
    parser.add_argument("--parts", type=int, default=None,
                        help="split the inputs into N parts balanced by bytes and write only --part")
    parser.add_argument("--part", type=int, default=None, help="which part to write, 0..N-1 (with --parts)")
    parser.add_argument("--chunk-mb", type=float, default=None,
                        help="input MB per resumable chunk of a part (default 256): the most a rerun redoes")
    parser.add_argument("--staging", default=None,
                        help="local folder for shards waiting for upload when --output is remote (default: a "
                             "temporary folder); it holds at most 4 shards")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if (args.parts is None) != (args.part is None):
        print("error: --parts and --part go together (e.g. --parts 16 --part 3)", file=sys.stderr)
        return 2
    chunk_bytes = None if args.chunk_mb is None else max(1, int(args.chunk_mb * 2**20))
    try:
        s = tokenize_to_mds(args.input, args.output, args.tokenizer, text_field=args.text_field,
                            workers=args.workers, max_seq_len=args.max_seq_len, overwrite=args.overwrite,
                            shard_size=args.shard_size, compression=args.compression, progress=not args.quiet,
                            parts=args.parts, part=args.part or 0, chunk_bytes=chunk_bytes,
                            staging=args.staging)
    except (InputDataError, TokenizerLoadError, OutputExistsError, NoSpaceLeft, ValueError,
            StreamingVersionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if s.already_complete:
        print(f"part {args.part} of {args.parts} is already complete in {s.output}: nothing to do")
        return 0
    if args.parts is not None:
        print(f"part {args.part} of {args.parts}: {s.chunks} chunk(s), {s.chunks_reused} kept from an earlier "
              f"run, {s.chunks - s.chunks_reused} written now")
    print(f"documents: {s.documents} from {s.files} file(s); empty skipped: {s.empty_documents}; "
          f"split into pieces: {s.split_documents}")
    print(f"tokens: {s.tokens} ({s.content_tokens} content) in {s.samples} samples; {s.tokens_per_s:,.0f} tokens/s "
          f"over {s.seconds:.1f} s")
    print(f"shards: {s.shards} ({s.dtype}, vocabulary {s.vocab_size}) in {s.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
