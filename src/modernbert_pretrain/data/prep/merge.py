"""Merge the parts of a ``tokenize_to_mds --parts N`` run into one dataset at the output root.

The root ``index.json`` lists every part's shards with names relative to the root
(``part-00003-of-00016/chunk-00002/shard.00000.mds``), which streaming's readers and ours join to
the dataset folder; ``tokenizer_fingerprint.json`` is copied to the root. Every part must be
complete and agree with the others on the tokenizer, the token dtype and the plan; otherwise the
merge refuses, naming the part, and writes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from modernbert_pretrain.data.errors import PartsError
from modernbert_pretrain.data.fingerprint import FINGERPRINT_NAME
from modernbert_pretrain.data.prep.parts import COMPLETE_NAME, merge_indexes, part_folders, part_name
from modernbert_pretrain.data.prep.remote import LocalStore, RemoteStore, open_store
from modernbert_pretrain.data.shards import INDEX_NAME

Store = LocalStore | RemoteStore


@dataclass
class MergeSummary:
    root: str
    parts: int
    shards: int
    samples: int
    tokens: int


def _parts_count(store: Store) -> int:
    root = store.where()
    found = part_folders(store.subfolders())
    if not found:
        raise PartsError(f"{root} holds no part folders (part-00000-of-0000N); run data_prep/tokenize_to_mds.py "
                         f"--parts N --part I first")
    counts = sorted({n for _, n in found.values()})
    if len(counts) > 1:
        names = [next(name for name, (_, n) in found.items() if n == c) for c in counts]
        raise PartsError(f"{root} mixes parts of {len(counts)} plans ({', '.join(names)}); delete the folders of "
                         f"the plan you do not want, then merge again")
    return counts[0]


def _complete_record(store: Store, part: int, parts: int) -> dict:
    name = part_name(part, parts)
    folder = store.where(name)
    rerun = f"run data_prep/tokenize_to_mds.py --parts {parts} --part {part} with the other parts' arguments"
    if not store.names(name):
        raise PartsError(f"part {part} of {parts} is missing ({folder}); {rerun}")
    record = store.read_json(f"{name}/{COMPLETE_NAME}")
    if record is None:
        raise PartsError(f"part {part} of {parts} is unfinished ({folder} has no {COMPLETE_NAME}); {rerun} to "
                         f"finish it")
    return record


def _fingerprint(store: Store, name: str) -> dict | None:
    record = store.read_json(f"{name}/{FINGERPRINT_NAME}")
    return record if record is not None and "sha256" in record else None


def _check_agreement(store: Store, records: list[dict], parts: int) -> dict:
    """Refuse parts that disagree with part 0; part 0's tokenizer fingerprint."""
    first_fp = _fingerprint(store, part_name(0, parts))
    for part, record in enumerate(records):
        folder = store.where(part_name(part, parts))
        fingerprint = _fingerprint(store, part_name(part, parts)) if part else first_fp
        if fingerprint is None or first_fp is None or fingerprint["sha256"] != first_fp["sha256"]:
            raise PartsError(f"part {part} ({folder}) was tokenized with another tokenizer than part 0 "
                             f"({(fingerprint or {}).get('name')} vs {(first_fp or {}).get('name')}); redo it with "
                             f"--overwrite and the same --tokenizer as the others")
        if record.get("dtype") != records[0].get("dtype"):
            raise PartsError(f"part {part} ({folder}) stores tokens as {record.get('dtype')}, part 0 as "
                             f"{records[0].get('dtype')}; redo it with --overwrite and the same --tokenizer")
        if record.get("plan_sha256") != records[0].get("plan_sha256"):
            raise PartsError(f"part {part} ({folder}) was written for another plan than part 0 (other inputs or "
                             f"options); redo it with --overwrite and the same arguments as the others")
    return first_fp


def merge_parts(root: str) -> MergeSummary:
    """Write ``root/index.json`` and the tokenizer fingerprint over every complete part (``root``: a folder or
    a remote URL such as ``s3://bucket/prefix``)."""
    store = open_store(root)
    try:
        if not store.remote and not os.path.isdir(store.root):
            raise PartsError(f"{root}: no such folder")
        parts = _parts_count(store)
        records = [_complete_record(store, part, parts) for part in range(parts)]
        fingerprint = _check_agreement(store, records, parts)
        names = [part_name(part, parts) for part in range(parts)]
        index = merge_indexes([(name, store.read_json(f"{name}/{INDEX_NAME}")) for name in names])
        store.write_json(INDEX_NAME, index)
        store.write_json(FINGERPRINT_NAME, fingerprint)
    finally:
        store.close()
    return MergeSummary(root, parts, len(index["shards"]), sum(r["counts"]["samples"] for r in records),
                        sum(r["counts"]["tokens"] for r in records))
