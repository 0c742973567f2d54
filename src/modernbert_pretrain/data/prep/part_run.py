"""Write one part of a multi-part conversion, resumably (layout and plan: ``parts.py``).

A rerun of a finished part writes nothing. A rerun of an interrupted part (any signal, SIGKILL
included) keeps every chunk whose ``done.json`` exists and rewrites the others from scratch, so it
redoes at most the one chunk that was being written (``chunk_bytes`` of input, plus the rest of a
line, row group or unsplittable file that crosses its end). Chunk contents depend only on the plan,
so the finished part is identical to an uninterrupted run. A folder written for another plan
(other inputs, options, part count or tokenizer) is refused, never mixed in.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from modernbert_pretrain.data.errors import PartsError
from modernbert_pretrain.data.fingerprint import FINGERPRINT_NAME, fingerprint_of
from modernbert_pretrain.data.prep.parts import (
    COMPLETE_NAME,
    DONE_NAME,
    PLAN_NAME,
    PLAN_VERSION,
    chunk_name,
    make_plan,
    merge_indexes,
    part_folders,
    part_name,
)
from modernbert_pretrain.data.prep.remote import LocalStore, RemoteStore, open_store
from modernbert_pretrain.data.prep.to_mds import (
    MdsSummary,
    _Encoder,
    _Writing,
    new_counts,
    summary_of,
    tokenizer_name,
    write_units,
)
from modernbert_pretrain.data.shards import INDEX_NAME

Store = LocalStore | RemoteStore


def _check_root(store: Store, parts: int, plan_sha: str, mine: str, overwrite: bool) -> None:
    """Refuse an output root holding a single-run dataset, or parts of another plan (but for this part's own
    folder ``mine`` when ``overwrite`` replaces it)."""
    root = store.where()
    if not store.remote and os.path.exists(root) and not os.path.isdir(root):
        raise PartsError(f"output {root} exists and is not a directory")
    loose = [n for n in store.names() if n.startswith("shard.")]
    if loose:
        raise PartsError(f"output {root} holds the shards of a single-run conversion "
                         f"({loose[0]}); choose another --output for a --parts run")
    for name, (_, n) in part_folders(store.subfolders()).items():
        if overwrite and name == mine:
            continue
        if n != parts:
            raise PartsError(f"output {root} holds {name}, a part of a {n}-part plan, but this run has --parts "
                             f"{parts}; use --parts {n}, or delete the part folders of the other plan, or choose "
                             f"another --output")
        plan = store.read_json(f"{name}/{PLAN_NAME}")
        if plan is not None and plan.get("plan_sha256") != plan_sha:
            fix = "pass --overwrite to redo this part" if name == mine else "delete the part folders and start again"
            raise PartsError(f"{store.where(name)} was written for another plan (other inputs, options or "
                             f"tokenizer); run every part with the same arguments as before, or {fix}")


def _check_folder(store: Store, folder: str, plan_record: dict, overwrite: bool) -> dict | None:
    """The folder's complete record when it is already complete for this plan; refuse a foreign folder."""
    if overwrite:
        store.remove(folder)
    if not store.names(folder):
        return None
    where = store.where(folder)
    for name in (COMPLETE_NAME, PLAN_NAME):
        record = store.read_json(f"{folder}/{name}")
        if record is None:
            continue
        if record.get("tokenizer_sha256") != plan_record["tokenizer_sha256"]:
            raise PartsError(f"{where} was written with another tokenizer ({record.get('tokenizer_name')}); "
                             f"run with --tokenizer {record.get('tokenizer_name')}, or pass --overwrite to "
                             f"redo this part")
        if record.get("plan_sha256") != plan_record["plan_sha256"]:
            raise PartsError(f"{where} was written for another plan (other inputs, options or part count); run "
                             f"with the same arguments as before, or pass --overwrite to redo this part")
        return record if name == COMPLETE_NAME else None
    raise PartsError(f"{where} holds files but no {PLAN_NAME} (not written by this tool, or from an older "
                     f"version); delete it or pass --overwrite, then run this part again")


def _write_chunk(store: Store, units, folder: str, how: _Writing, encoder: _Encoder, bar) -> dict[str, int]:
    """Write one chunk from scratch (its shards uploaded when the store is remote); ``done.json`` last."""
    store.reset_folder(folder)  # a chunk interrupted before its done.json: redone whole
    counts = new_counts()
    write_units(units, store.writer_out(folder), how, encoder, counts, bar)
    store.write_json(f"{folder}/{DONE_NAME}", {"counts": counts, "units": [u.to_json() for u in units]})
    return counts


def _finish_part(store: Store, folder: str, indexes: list, fingerprint: dict, record: dict) -> None:
    """Part-level index and fingerprint, then the completion record last."""
    store.write_json(f"{folder}/{INDEX_NAME}", merge_indexes(indexes))
    store.write_json(f"{folder}/{FINGERPRINT_NAME}", fingerprint)
    store.write_json(f"{folder}/{COMPLETE_NAME}", record)


def _plan_record(files: Sequence[str], tokenizer: str, how: _Writing, parts: int, part: int,
                 chunk_bytes: int) -> tuple[dict, list, dict]:
    """This part's ``plan.json`` record, its chunks' units and the tokenizer fingerprint."""
    plan = make_plan(files, parts, chunk_bytes)
    fingerprint = fingerprint_of(how.tok, tokenizer_name(tokenizer))
    settings = {"max_seq_len": how.max_seq_len, "text_field": how.text_field, "shard_size": str(how.shard_size),
                "compression": how.compression, "tokenizer_sha256": fingerprint["sha256"]}
    my_chunks = plan.chunks[part]
    record = {"version": PLAN_VERSION, "plan_sha256": plan.sha256(settings), "part": part, "parts": parts,
              "settings": settings, "tokenizer_sha256": fingerprint["sha256"],
              "tokenizer_name": fingerprint["name"], "dtype": how.dtype.name,
              "chunks": [[u.to_json() for u in c] for c in my_chunks]}
    return record, my_chunks, fingerprint


def _write_chunks(store: Store, folder: str, my_chunks: list, how: _Writing, workers: int, desc: str,
                  progress: bool) -> tuple[dict[str, int], int]:
    """Write every chunk without a ``done.json``; the summed counts and how many chunks were kept."""
    from tqdm import tqdm

    totals, reused = new_counts(), 0
    with tqdm(desc=desc, unit="doc", disable=not progress) as bar, \
            _Encoder(workers, how.tok.backend_tokenizer.to_str()) as encoder:
        for index, units in enumerate(my_chunks):
            chunk = f"{folder}/{chunk_name(index)}"
            record = store.read_json(f"{chunk}/{DONE_NAME}")
            if record is not None:
                reused += 1
                counts = record["counts"]
            else:
                counts = _write_chunk(store, units, chunk, how, encoder, bar)
            for key in totals:
                totals[key] += counts[key]
    return totals, reused


def run_part(files: Sequence[str], root: str, tokenizer: str, how: _Writing, *, workers: int, parts: int,
             part: int, chunk_bytes: int, overwrite: bool, progress: bool,
             staging: str | None = None) -> MdsSummary:
    """Write (or finish) part ``part`` of ``parts`` of ``files`` under ``root`` (a folder or a remote URL,
    staged through ``staging``)."""
    started = time.perf_counter()
    plan_record, my_chunks, fingerprint = _plan_record(files, tokenizer, how, parts, part, chunk_bytes)
    store = open_store(root, staging)
    try:
        folder = part_name(part, parts)
        _check_root(store, parts, plan_record["plan_sha256"], folder, overwrite)
        done = _check_folder(store, folder, plan_record, overwrite)
        if done is not None:
            return summary_of(store.where(folder), len(files), done["counts"], time.perf_counter() - started,
                              done["shards"], how, chunks=done["chunks"], chunks_reused=done["chunks"],
                              already_complete=True)
        if store.read_json(f"{folder}/{PLAN_NAME}") is None:
            store.write_json(f"{folder}/{PLAN_NAME}", plan_record)
        totals, reused = _write_chunks(store, folder, my_chunks, how, workers, f"part {part}/{parts}", progress)
        names = [chunk_name(c) for c in range(len(my_chunks))]
        indexes = [(name, store.read_json(f"{folder}/{name}/{INDEX_NAME}")) for name in names]
        shards = sum(len(index["shards"]) for _, index in indexes)
        complete = {key: value for key, value in plan_record.items() if key != "chunks"}
        complete.update(counts=totals, shards=shards, chunks=len(my_chunks),
                        inputs=[u for c in plan_record["chunks"] for u in c])
        _finish_part(store, folder, indexes, fingerprint, complete)
    finally:
        store.close()
    return summary_of(store.where(folder), len(files), totals, time.perf_counter() - started, shards, how,
                      chunks=len(my_chunks), chunks_reused=reused)
