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
from modernbert_pretrain.data.fingerprint import read_fingerprint, write_fingerprint
from modernbert_pretrain.data.prep.parts import (
    COMPLETE_NAME,
    merge_indexes,
    part_folders,
    part_name,
    read_json,
    write_json_atomic,
)
from modernbert_pretrain.data.shards import INDEX_NAME


@dataclass
class MergeSummary:
    root: str
    parts: int
    shards: int
    samples: int
    tokens: int


def _parts_count(root: str) -> int:
    found = part_folders(root)
    if not found:
        raise PartsError(f"{root} holds no part folders (part-00000-of-0000N); run data_prep/tokenize_to_mds.py "
                         f"--parts N --part I first")
    counts = sorted({n for _, n in found.values()})
    if len(counts) > 1:
        names = [next(name for name, (_, n) in found.items() if n == c) for c in counts]
        raise PartsError(f"{root} mixes parts of {len(counts)} plans ({', '.join(names)}); delete the folders of "
                         f"the plan you do not want, then merge again")
    return counts[0]


def _complete_record(root: str, part: int, parts: int) -> dict:
    folder = os.path.join(root, part_name(part, parts))
    rerun = f"run data_prep/tokenize_to_mds.py --parts {parts} --part {part} with the other parts' arguments"
    if not os.path.isdir(folder):
        raise PartsError(f"part {part} of {parts} is missing ({folder}); {rerun}")
    record = read_json(os.path.join(folder, COMPLETE_NAME))
    if record is None:
        raise PartsError(f"part {part} of {parts} is unfinished ({folder} has no {COMPLETE_NAME}); {rerun} to "
                         f"finish it")
    return record


def merge_parts(root: str) -> MergeSummary:
    """Write ``root/index.json`` and the tokenizer fingerprint over every complete part."""
    if not os.path.isdir(root):
        raise PartsError(f"{root}: no such folder")
    parts = _parts_count(root)
    records = [_complete_record(root, part, parts) for part in range(parts)]
    first_fp = read_fingerprint(os.path.join(root, part_name(0, parts)))
    for part, record in enumerate(records):
        folder = os.path.join(root, part_name(part, parts))
        fingerprint = read_fingerprint(folder)
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
    names = [part_name(part, parts) for part in range(parts)]
    index = merge_indexes(root, names)
    write_json_atomic(os.path.join(root, INDEX_NAME), index)
    write_fingerprint(root, first_fp)
    return MergeSummary(root, parts, len(index["shards"]), sum(r["counts"]["samples"] for r in records),
                        sum(r["counts"]["tokens"] for r in records))
