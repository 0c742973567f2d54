"""Tokenize documents into MDS shards the loader reads.

Every document becomes ``[CLS] tokens [SEP]``. A document with more than ``max_seq_len - 2``
tokens is split into consecutive pieces of at most that many content tokens, each wrapped in
[CLS] ... [SEP]: every token is kept, in order, in consecutive samples. Empty documents (only
whitespace) are skipped and counted. The ``input_ids`` column uses the smallest unsigned dtype that
holds the vocabulary (``uint16`` below 65,536 tokens). Each shard records sha1 and xxh64 hashes so
``validate_hash`` and ``data_prep/validate_dataset.py`` can check it; ``tokenizer_fingerprint.json``
beside ``index.json`` records the tokenizer, which the loader compares with ``data.tokenizer``.

Reading and writing happen in this process in input order; tokenization runs in ``workers``
processes with a bounded number of batches in flight, so the output does not depend on the
worker count.
"""

from __future__ import annotations

import glob
import os
import re
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from modernbert_pretrain.data.errors import (
    InputDataError,
    OutputExistsError,
    RemoteStorageError,
    TokenizerLoadError,
)
from modernbert_pretrain.data.fingerprint import FINGERPRINT_NAME, fingerprint_of, write_fingerprint
from modernbert_pretrain.data.prep.hf_input import is_hf
from modernbert_pretrain.data.prep.readers import InputUnit, find_input_files, iter_unit_documents
from modernbert_pretrain.data.prep.remote import STAGED_SHARDS, RemoteStore, is_remote, open_store
from modernbert_pretrain.data.shards import INDEX_NAME, SHARD_HASHES, TOKEN_COLUMN, token_dtype
from modernbert_pretrain.data.streaming_adapter import (
    check_version,
    writer_shard_count,
    writer_staging_dir,
    writer_upload_failed,
)
from modernbert_pretrain.diskspace import no_space, out_of_space

PIECE_CHARS = 1 << 16
"""Longest text piece one tokenizer call sees (~16k tokens); longer documents are cut at word ends."""
BATCH_CHARS = 1 << 20
"""Characters per ``encode_batch`` call, beside ``batch_docs``: encoding holds ~150-240 bytes per
input character (measured on 10 and 50 MB documents, see ``tokenize_to_mds``)."""
_LAST_WORD_END = re.compile(r".*\S(?=\s)", re.DOTALL)
_SHARD_GLOBS = (INDEX_NAME, FINGERPRINT_NAME, "shard.*.mds", "shard.*.mds.*")
_worker_tokenizer = None


@dataclass
class MdsSummary:
    output: str
    files: int
    documents: int
    """Non-empty documents written."""
    empty_documents: int
    """Documents skipped because they hold only whitespace."""
    split_documents: int
    """Documents longer than ``max_seq_len`` (written as several consecutive samples)."""
    samples: int
    tokens: int
    """All tokens written, [CLS]/[SEP] included."""
    content_tokens: int
    seconds: float
    shards: int
    dtype: str
    vocab_size: int
    chunks: int = 0
    """Chunks of this part (``parts`` runs only)."""
    chunks_reused: int = 0
    """Chunks found complete from an earlier, interrupted run and kept (``parts`` runs only)."""
    already_complete: bool = False
    """The part was complete before this run: nothing was written."""

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def existing_shard_files(output_dir: str) -> list[str]:
    found: set[str] = set()
    for pattern in _SHARD_GLOBS:
        found.update(glob.glob(os.path.join(output_dir, pattern)))
    return sorted(found)


def prepare_output(output_dir: str, overwrite: bool) -> None:
    """Refuse a directory that holds shards unless ``overwrite``; then require it empty."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise OutputExistsError(f"output {output_dir} exists and is not a directory")
    shards = existing_shard_files(output_dir) if os.path.isdir(output_dir) else []
    if shards and not overwrite:
        raise OutputExistsError(
            f"output directory {output_dir} already holds shards ({len(shards)} files, e.g. "
            f"{os.path.basename(shards[0])}); pass --overwrite to replace them or choose another --output"
        )
    for path in shards:
        os.remove(path)
    if os.path.isdir(output_dir):
        others = sorted(os.listdir(output_dir))
        if others:
            raise OutputExistsError(
                f"output directory {output_dir} holds other files ({', '.join(others[:5])}); use an empty "
                f"or new directory"
            )
    os.makedirs(output_dir, exist_ok=True)


def _init_worker(tokenizer_json: str) -> None:
    global _worker_tokenizer
    from tokenizers import Tokenizer

    _worker_tokenizer = Tokenizer.from_str(tokenizer_json)


def _encode(texts: list[str]) -> list[np.ndarray]:
    """Content token ids of each text (no special tokens). Each (n_i,) int64."""
    encodings = _worker_tokenizer.encode_batch(texts, add_special_tokens=False)
    return [np.asarray(e.ids, dtype=np.int64) for e in encodings]


def text_pieces(text: str, max_chars: int) -> Iterator[str]:
    """``text`` in consecutive pieces of at most ``max_chars`` characters; joined, they are ``text``.

    Each cut is placed just before a whitespace character that follows a non-whitespace one (the
    end of a word), where byte-level BPE (ours, ModernBERT's) and WordPiece pre-tokenizers split
    anyway, so the pieces' tokens are the document's tokens. A stretch of ``max_chars`` characters
    without such a place is cut at ``max_chars``: no text is lost, but the tokens at that cut may
    differ from the whole document's.
    """
    start = 0
    while len(text) - start > max_chars:
        end = start + max_chars
        word_end = _LAST_WORD_END.match(text, start, end + 1)  # the cut's whitespace may sit at ``end``
        cut = word_end.end() if word_end is not None else end
        yield text[start:cut]
        start = cut
    yield text[start:]


def _batches(units: Sequence[InputUnit], text_field: str, batch_docs: int,
             counts: dict[str, int]) -> Iterator[list[tuple[bool, str]]]:
    """Batches of ``(last piece of its document, text piece)``, each at most ``batch_docs`` pieces
    or about ``BATCH_CHARS`` characters: what one ``encode_batch`` call holds in memory."""
    piece_chars, batch_chars = PIECE_CHARS, BATCH_CHARS
    batch: list[tuple[bool, str]] = []
    chars = 0
    for unit in units:
        for text in iter_unit_documents(unit, text_field):
            if not text.strip():
                counts["empty"] += 1
                continue
            pieces = text_pieces(text, piece_chars)
            piece = next(pieces)
            for following in pieces:
                batch.append((False, piece))
                chars += len(piece)
                piece = following
                if chars >= batch_chars:
                    yield batch
                    batch, chars = [], 0
            batch.append((True, piece))
            chars += len(piece)
            if len(batch) >= batch_docs or chars >= batch_chars:
                yield batch
                batch, chars = [], 0
    if batch:
        yield batch


def split_document(ids: np.ndarray, cls_id: int, sep_id: int, max_seq_len: int, dtype: np.dtype) -> list[np.ndarray]:
    """[CLS] ids [SEP], split into consecutive pieces of at most ``max_seq_len`` tokens each."""
    chunk = max_seq_len - 2
    pieces = []
    for start in range(0, ids.size, chunk):
        piece = np.empty(min(chunk, ids.size - start) + 2, dtype=dtype)  # (len + 2,)
        piece[0], piece[-1] = cls_id, sep_id
        piece[1:-1] = ids[start:start + chunk]
        pieces.append(piece)
    return pieces


class _Encoder:
    """Encodes batches in order; with workers > 1 in a process pool kept for its whole life, with at most
    2 x workers batches in flight."""

    def __init__(self, workers: int, tokenizer_json: str) -> None:
        self.workers, self.tokenizer_json, self.pool = workers, tokenizer_json, None

    def __enter__(self) -> _Encoder:
        if self.workers <= 1:
            _init_worker(self.tokenizer_json)
        else:
            import multiprocessing as mp

            self.pool = mp.get_context("spawn").Pool(self.workers, initializer=_init_worker,
                                                     initargs=(self.tokenizer_json,))
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()

    def encode(self, batches: Iterator[list[tuple[bool, str]]]) -> Iterator[list[tuple[bool, np.ndarray]]]:
        if self.pool is None:
            for batch in batches:
                yield list(zip([last for last, _ in batch], _encode([text for _, text in batch])))
            return
        pending: deque = deque()
        for batch in batches:
            lasts = [last for last, _ in batch]
            pending.append((lasts, self.pool.apply_async(_encode, ([text for _, text in batch],))))
            if len(pending) >= 2 * self.workers:
                lasts, result = pending.popleft()
                yield list(zip(lasts, result.get()))
        while pending:
            lasts, result = pending.popleft()
            yield list(zip(lasts, result.get()))


class _DocumentChunker:
    """Writes each document's tokens, arriving piece by piece, as ``[CLS] chunk [SEP]`` samples.

    Chunks are the ones ``split_document`` makes of the whole document, emitted as soon as they
    are full, so memory holds less than one chunk plus one piece of a document.
    """

    def __init__(self, write, cls_id: int, sep_id: int, max_seq_len: int, dtype: np.dtype,
                 counts: dict[str, int]) -> None:
        self.write, self.cls_id, self.sep_id, self.dtype, self.counts = write, cls_id, sep_id, dtype, counts
        self.chunk = max_seq_len - 2
        self.pending: list[np.ndarray] = []
        self.pending_size = self.doc_tokens = self.doc_samples = 0

    def _emit(self, size: int) -> None:
        ids = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]  # (pending_size,)
        sample = np.empty(size + 2, dtype=self.dtype)  # (size + 2,)
        sample[0], sample[-1] = self.cls_id, self.sep_id
        sample[1:-1] = ids[:size]
        self.write(sample)
        rest = ids[size:]
        self.pending, self.pending_size = ([rest] if rest.size else []), int(rest.size)
        self.doc_samples += 1

    def add(self, ids: np.ndarray, last: bool) -> bool:
        """Take the next piece of the current document; True when it ended a document."""
        if ids.size:
            self.pending.append(ids)
            self.pending_size += int(ids.size)
            self.doc_tokens += int(ids.size)
        while self.pending_size >= self.chunk:
            self._emit(self.chunk)
        if not last:
            return False
        if self.pending_size:
            self._emit(self.pending_size)
        counts = self.counts
        if self.doc_tokens == 0:
            counts["empty"] += 1
        else:
            counts["docs"] += 1
            counts["split"] += self.doc_samples > 1
            counts["samples"] += self.doc_samples
            counts["content"] += self.doc_tokens
            counts["tokens"] += self.doc_tokens + 2 * self.doc_samples
        self.doc_tokens = self.doc_samples = 0
        return True


def _load(tokenizer: str):
    from modernbert_pretrain.data.tokenizer_info import load_tokenizer

    tok = load_tokenizer(tokenizer)
    if tok.cls_token_id is None or tok.sep_token_id is None:
        raise TokenizerLoadError(f"tokenizer {tokenizer!r} lacks a cls or sep token ([CLS]/[SEP])")
    return tok


def _remove_partial(output_dir: str) -> None:
    for path in existing_shard_files(output_dir):
        os.remove(path)


@dataclass
class _Writing:
    """What every folder written in one run shares: the tokenizer's facts and the writer's options."""

    tok: object
    dtype: np.dtype
    max_seq_len: int
    text_field: str
    batch_docs: int
    shard_size: int | str
    compression: str | None
    sample_delay: float = 0.0
    """Test-only pause after each sample (``MODERNBERT_PREP_TEST_SAMPLE_DELAY``), to kill a part mid-chunk."""


def new_counts() -> dict[str, int]:
    return {"empty": 0, "docs": 0, "split": 0, "samples": 0, "tokens": 0, "content": 0}


def _wait_for_uploads(writer) -> None:
    """Hold the writer until fewer than ``STAGED_SHARDS`` finished shards wait in staging for their upload, so
    the next one flushed makes at most ``STAGED_SHARDS``."""
    staging = writer_staging_dir(writer)
    while not writer_upload_failed(writer):
        staged = sum(name.startswith("shard.") for name in os.listdir(staging))
        if staged < STAGED_SHARDS:
            return
        time.sleep(0.02)


def write_units(units: Sequence[InputUnit], out: str | tuple[str, str], how: _Writing, encoder: _Encoder,
                counts: dict[str, int], bar) -> None:
    """Tokenize ``units`` into MDS shards in ``out`` (which must not hold shards); adds to ``counts``.

    ``out`` is a folder, or ``(staging folder, remote URL)``: each finished shard is then uploaded and
    removed from staging, and staging never holds more than ``STAGED_SHARDS`` shards. On any error the
    writer's pending jobs are cancelled and the exception propagates: the caller decides what to do with
    the partial folder.
    """
    from streaming import MDSWriter

    remote = isinstance(out, tuple)
    if remote:
        check_version()
    writer = MDSWriter(out=out, columns={TOKEN_COLUMN: f"ndarray:{how.dtype.name}"}, hashes=list(SHARD_HASHES),
                       size_limit=how.shard_size, compression=how.compression,
                       **({"max_workers": STAGED_SHARDS} if remote else {}))
    delay, flushed = how.sample_delay, [0]

    def write(sample: np.ndarray) -> None:
        writer.write({TOKEN_COLUMN: sample})
        if remote and writer_shard_count(writer) != flushed[0]:
            flushed[0] = writer_shard_count(writer)
            _wait_for_uploads(writer)
        if delay:
            time.sleep(delay)

    try:
        chunker = _DocumentChunker(write, how.tok.cls_token_id, how.tok.sep_token_id, how.max_seq_len, how.dtype,
                                   counts)
        for encoded in encoder.encode(_batches(units, how.text_field, how.batch_docs, counts)):
            bar.update(sum(chunker.add(ids, last) for last, ids in encoded))
        writer.finish()
    except BaseException as err:
        writer.cancel_future_jobs()
        if remote and writer_upload_failed(writer) and isinstance(err, Exception):
            raise RemoteStorageError(f"uploading shards to {out[1]} failed (the log above names the error); check "
                                     f"the bucket and credentials, then run again") from err
        raise


def tokenizer_name(tokenizer: str) -> str:
    return os.path.abspath(tokenizer) if os.path.isdir(tokenizer) else tokenizer


def summary_of(output_dir: str, files: int, counts: dict[str, int], seconds: float, shards: int, how: _Writing,
               **extra) -> MdsSummary:
    return MdsSummary(output=output_dir, files=files, documents=counts["docs"], empty_documents=counts["empty"],
                      split_documents=counts["split"], samples=counts["samples"], tokens=counts["tokens"],
                      content_tokens=counts["content"], seconds=seconds, shards=shards, dtype=how.dtype.name,
                      vocab_size=len(how.tok), **extra)


def tokenize_to_mds(inputs: Sequence[str], output_dir: str, tokenizer: str, *, text_field: str = "text",
                    workers: int = 1, max_seq_len: int = 8192, overwrite: bool = False,
                    shard_size: int | str = 1 << 26, compression: str | None = None,
                    batch_docs: int = 256, progress: bool = True, parts: int | None = None, part: int = 0,
                    chunk_bytes: int | None = None, staging: str | None = None) -> MdsSummary:
    """Tokenize ``inputs`` (files or directories) into MDS shards in ``output_dir``.

    ``output_dir`` may be a remote URL (``s3://bucket/prefix``, any scheme streaming uploads to): shards
    are then written into a private folder under ``staging`` (default: the system's temporary folder),
    uploaded as they are finished and removed, so at most ``STAGED_SHARDS`` shards are staged at once.

    With ``parts`` set, write only part ``part`` of ``parts`` into its own resumable sub-folder of
    ``output_dir`` (see ``data/prep/parts.py``; ``merge_parts`` joins them); without, write every
    input into ``output_dir`` itself and remove the partial shards on any error.

    Memory does not grow with a document's length: long documents are tokenized in word-aligned
    pieces (``text_pieces``) and chunks are written as they fill. Measured with
    ``python bench/tokenize_memory.py --mb 50`` (one 50.1 MB document, 8192-token BPE, workers=1):
    peak RSS 7,429 MiB (156x the document) when the whole document was one ``encode_batch`` call,
    1,138 MiB after, of which ~820 MiB is the process's footprint with a 0.4 MB document
    (``--mb 0.2``); same 12,350,128 tokens in 1,508 samples.
    """
    from tqdm import tqdm

    if max_seq_len < 3:
        raise ValueError(f"max_seq_len={max_seq_len} must be >= 3 ([CLS] + one token + [SEP])")
    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    if parts is not None and parts < 1:
        raise ValueError(f"--parts {parts} must be >= 1")
    if parts is not None and not 0 <= part < parts:
        raise ValueError(f"--part {part} must be in 0..{parts - 1} for --parts {parts}")
    files = find_input_files(inputs)
    tok = _load(tokenizer)
    how = _Writing(tok, token_dtype(len(tok)), max_seq_len, text_field, batch_docs, shard_size, compression,
                   float(os.environ.get("MODERNBERT_PREP_TEST_SAMPLE_DELAY", "0") or 0))
    if parts is not None:
        from modernbert_pretrain.data.prep.part_run import run_part
        from modernbert_pretrain.data.prep.parts import DEFAULT_CHUNK_BYTES

        return run_part(files, output_dir, tokenizer, how, workers=workers, parts=parts, part=part,
                        chunk_bytes=chunk_bytes or DEFAULT_CHUNK_BYTES, overwrite=overwrite, progress=progress,
                        staging=staging)
    if is_remote(output_dir):
        return _remote_run(files, output_dir, tokenizer, how, workers, overwrite, progress, staging)
    prepare_output(output_dir, overwrite)
    counts = new_counts()
    started = time.perf_counter()
    try:
        with tqdm(desc="tokenize", unit="doc", disable=not progress) as bar, \
                _Encoder(workers, tok.backend_tokenizer.to_str()) as encoder:
            write_units([InputUnit(f, "whole", 0, 0) for f in files], output_dir, how, encoder, counts, bar)
        if counts["docs"] == 0:
            raise InputDataError(
                f"no documents to write: {len(files)} input file(s) hold "
                f"{'only empty documents' if counts['empty'] else 'no documents'} ({', '.join(files[:3])})"
            )
        write_fingerprint(output_dir, fingerprint_of(tok, tokenizer_name(tokenizer)))
    except BaseException as err:
        _remove_partial(output_dir)
        if isinstance(err, Exception) and out_of_space(err) == "errno":
            # A token covers at least one byte of text: the input's size bounds the token count (but for the
            # [CLS]/[SEP] of each sample).
            needed = None if any(is_hf(f) for f in files) else sum(os.path.getsize(f) for f in files) * how.dtype.itemsize
            raise no_space("while writing shards", output_dir, needed, "The partial shards were removed; free "
                           "space or choose another --output, then run it again", bound="up to about") from err
        raise
    shards = len([p for p in existing_shard_files(output_dir) if os.path.basename(p).startswith("shard.")])
    return summary_of(output_dir, len(files), counts, time.perf_counter() - started, shards, how)


def _remote_shards(store: RemoteStore) -> list[str]:
    names = store.names()
    return [n for n in names if n in (INDEX_NAME, FINGERPRINT_NAME) or n.startswith("shard.")]


def _prepare_remote(store: RemoteStore, overwrite: bool) -> None:
    """``prepare_output`` for a remote prefix: refuse shards (or remove them with ``overwrite``) and others."""
    shards = _remote_shards(store)
    if shards and not overwrite:
        raise OutputExistsError(f"output {store.root} already holds shards ({len(shards)} objects, e.g. "
                                f"{shards[0]}); pass --overwrite to replace them or choose another --output")
    if shards:
        store.remove(*shards)
    others = store.names()
    if others:
        raise OutputExistsError(f"output {store.root} holds other objects ({', '.join(others[:5])}); use an empty "
                                f"or new prefix")


def _remote_run(files: list[str], output: str, tokenizer: str, how: _Writing, workers: int, overwrite: bool,
                progress: bool, staging: str | None) -> MdsSummary:
    """The single-run conversion into a remote prefix, staged through a bounded local folder."""
    from tqdm import tqdm

    store = open_store(output, staging)
    counts = new_counts()
    started = time.perf_counter()
    try:
        _prepare_remote(store, overwrite)  # a refusal here leaves the prefix as it was
    except BaseException:
        store.close()
        raise
    try:
        with tqdm(desc="tokenize", unit="doc", disable=not progress) as bar, \
                _Encoder(workers, how.tok.backend_tokenizer.to_str()) as encoder:
            write_units([InputUnit(f, "whole", 0, 0) for f in files], store.writer_out(""), how, encoder, counts,
                        bar)
        if counts["docs"] == 0:
            raise InputDataError(f"no documents to write: {len(files)} input file(s) hold "
                                 f"{'only empty documents' if counts['empty'] else 'no documents'} "
                                 f"({', '.join(files[:3])})")
        store.write_json(FINGERPRINT_NAME, fingerprint_of(how.tok, tokenizer_name(tokenizer)))
        shards = sum(n.startswith("shard.") for n in store.names())
    except BaseException:
        try:
            partial = _remote_shards(store)
            if partial:
                store.remove(*partial)
        except RemoteStorageError:
            pass  # the error below is the one to report; a rerun refuses the partial shards, naming them
        raise
    finally:
        store.close()
    return summary_of(store.root, len(files), counts, time.perf_counter() - started, shards, how)
