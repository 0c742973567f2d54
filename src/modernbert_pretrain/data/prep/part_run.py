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
import shutil
import time
from collections.abc import Sequence

from modernbert_pretrain.data.errors import PartsError
from modernbert_pretrain.data.fingerprint import fingerprint_of, write_fingerprint
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
    read_json,
    write_json_atomic,
)
from modernbert_pretrain.data.prep.to_mds import (
    MdsSummary,
    _Encoder,
    _Writing,
    existing_shard_files,
    new_counts,
    summary_of,
    tokenizer_name,
    write_units,
)
from modernbert_pretrain.data.shards import INDEX_NAME


def _check_root(root: str, parts: int, plan_sha: str, mine: str, overwrite: bool) -> None:
    """Refuse an output root holding a single-run dataset, or parts of another plan (but for this part's own
    folder ``mine`` when ``overwrite`` replaces it)."""
    if os.path.exists(root) and not os.path.isdir(root):
        raise PartsError(f"output {root} exists and is not a directory")
    loose = [p for p in existing_shard_files(root) if os.path.basename(p).startswith("shard.")] \
        if os.path.isdir(root) else []
    if loose:
        raise PartsError(f"output {root} holds the shards of a single-run conversion "
                         f"({os.path.basename(loose[0])}); choose another --output for a --parts run")
    for name, (_, n) in part_folders(root).items():
        if overwrite and name == mine:
            continue
        if n != parts:
            raise PartsError(f"output {root} holds {name}, a part of a {n}-part plan, but this run has --parts "
                             f"{parts}; use --parts {n}, or delete the part folders of the other plan, or choose "
                             f"another --output")
        plan = read_json(os.path.join(root, name, PLAN_NAME))
        if plan is not None and plan.get("plan_sha256") != plan_sha:
            fix = "pass --overwrite to redo this part" if name == mine else "delete the part folders and start again"
            raise PartsError(f"{os.path.join(root, name)} was written for another plan (other inputs, options or "
                             f"tokenizer); run every part with the same arguments as before, or {fix}")


def _check_folder(folder: str, plan_record: dict, overwrite: bool) -> dict | None:
    """The folder's complete record when it is already complete for this plan; refuse a foreign folder."""
    if overwrite and os.path.isdir(folder):
        shutil.rmtree(folder)
    if not os.path.isdir(folder):
        return None
    for name in (COMPLETE_NAME, PLAN_NAME):
        record = read_json(os.path.join(folder, name))
        if record is None:
            continue
        if record.get("tokenizer_sha256") != plan_record["tokenizer_sha256"]:
            raise PartsError(f"{folder} was written with another tokenizer ({record.get('tokenizer_name')}); "
                             f"run with --tokenizer {record.get('tokenizer_name')}, or pass --overwrite to "
                             f"redo this part")
        if record.get("plan_sha256") != plan_record["plan_sha256"]:
            raise PartsError(f"{folder} was written for another plan (other inputs, options or part count); run "
                             f"with the same arguments as before, or pass --overwrite to redo this part")
        return record if name == COMPLETE_NAME else None
    if os.listdir(folder):
        raise PartsError(f"{folder} holds files but no {PLAN_NAME} (not written by this tool, or from an older "
                         f"version); delete it or pass --overwrite, then run this part again")
    return None


def _write_chunk(units, folder: str, how: _Writing, encoder: _Encoder, bar) -> dict[str, int]:
    """Write one chunk from scratch; ``done.json`` last."""
    if os.path.isdir(folder):
        shutil.rmtree(folder)  # a chunk interrupted before its done.json: redone whole
    counts = new_counts()
    write_units(units, folder, how, encoder, counts, bar)
    write_json_atomic(os.path.join(folder, DONE_NAME), {"counts": counts, "units": [u.to_json() for u in units]})
    return counts


def _finish_part(folder: str, chunks: int, fingerprint: dict, record: dict) -> None:
    """Part-level index and fingerprint, then the completion record last."""
    names = [chunk_name(c) for c in range(chunks)]
    write_json_atomic(os.path.join(folder, INDEX_NAME), merge_indexes(folder, names))
    write_fingerprint(folder, fingerprint)
    write_json_atomic(os.path.join(folder, COMPLETE_NAME), record)


def run_part(files: Sequence[str], root: str, tokenizer: str, how: _Writing, *, workers: int, parts: int,
             part: int, chunk_bytes: int, overwrite: bool, progress: bool) -> MdsSummary:
    """Write (or finish) part ``part`` of ``parts`` of ``files`` under ``root``."""
    from tqdm import tqdm

    started = time.perf_counter()
    plan = make_plan(files, parts, chunk_bytes)
    fingerprint = fingerprint_of(how.tok, tokenizer_name(tokenizer))
    settings = {"max_seq_len": how.max_seq_len, "text_field": how.text_field, "shard_size": str(how.shard_size),
                "compression": how.compression, "tokenizer_sha256": fingerprint["sha256"]}
    plan_sha = plan.sha256(settings)
    my_chunks = plan.chunks[part]
    plan_record = {"version": PLAN_VERSION, "plan_sha256": plan_sha, "part": part, "parts": parts,
                   "settings": settings, "tokenizer_sha256": fingerprint["sha256"],
                   "tokenizer_name": fingerprint["name"], "dtype": how.dtype.name,
                   "chunks": [[u.to_json() for u in c] for c in my_chunks]}
    folder = os.path.join(root, part_name(part, parts))
    _check_root(root, parts, plan_sha, part_name(part, parts), overwrite)
    done = _check_folder(folder, plan_record, overwrite)
    if done is not None:
        return summary_of(folder, len(files), done["counts"], time.perf_counter() - started, done["shards"], how,
                          chunks=done["chunks"], chunks_reused=done["chunks"], already_complete=True)
    os.makedirs(folder, exist_ok=True)
    if not os.path.isfile(os.path.join(folder, PLAN_NAME)):
        write_json_atomic(os.path.join(folder, PLAN_NAME), plan_record)
    totals, reused = new_counts(), 0
    with tqdm(desc=f"part {part}/{parts}", unit="doc", disable=not progress) as bar, \
            _Encoder(workers, how.tok.backend_tokenizer.to_str()) as encoder:
        for index, units in enumerate(my_chunks):
            chunk_folder = os.path.join(folder, chunk_name(index))
            record = read_json(os.path.join(chunk_folder, DONE_NAME))
            if record is not None:
                reused += 1
                counts = record["counts"]
            else:
                counts = _write_chunk(units, chunk_folder, how, encoder, bar)
            for key in totals:
                totals[key] += counts[key]
    shards = sum(len(read_json(os.path.join(folder, chunk_name(c), INDEX_NAME))["shards"])
                 for c in range(len(my_chunks)))
    complete = {key: value for key, value in plan_record.items() if key != "chunks"}
    complete.update(counts=totals, shards=shards, chunks=len(my_chunks),
                    inputs=[u for c in plan_record["chunks"] for u in c])
    _finish_part(folder, len(my_chunks), fingerprint, complete)
    return summary_of(folder, len(files), totals, time.perf_counter() - started, shards, how,
                      chunks=len(my_chunks), chunks_reused=reused)
