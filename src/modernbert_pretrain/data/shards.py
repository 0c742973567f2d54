"""MDS shard facts shared by writing, validating and reading: column, dtype, integrity checks."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modernbert_pretrain.data.errors import ShardError
from modernbert_pretrain.data.streaming_adapter import data_hash, shard_raw_files

INDEX_NAME = "index.json"
TOKEN_COLUMN = "input_ids"
SHARD_HASHES = ("sha1", "xxh64")
"""Hashes the writer records for every shard (streaming's ``validate_hash`` needs them)."""


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds every id below ``vocab_size``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def token_column_problem(info: dict) -> str | None:
    """What is wrong with the ``input_ids`` column of one shard's index record (None when fine)."""
    names = info.get("column_names") or []
    if TOKEN_COLUMN not in names:
        return f"has columns {names}, expected '{TOKEN_COLUMN}'"
    encodings = info.get("column_encodings") or []
    encoding = encodings[names.index(TOKEN_COLUMN)] if len(encodings) == len(names) else None
    if encoding is None:
        return None
    kind, _, dtype = str(encoding).partition(":")
    if kind == "ndarray" and (not dtype or np.issubdtype(np.dtype(dtype), np.integer)):
        return None  # a bare "ndarray" records its dtype per sample: checked as samples are read
    return (f"stores column '{TOKEN_COLUMN}' as '{encoding}', expected token ids as an integer ndarray "
            f"(e.g. 'ndarray:uint16' or 'ndarray:int32')")


def shard_file_path(shard: Any) -> str:
    """Path of a streaming shard reader's raw data file."""
    return shard_raw_files(shard)[0][0]


def file_hash(algo: str, path: str) -> str:
    with open(path, "rb") as f:
        return data_hash(algo, f.read())


def _check_file(path: str, size: int, hashes: dict[str, str], algos: list[str]) -> list[str]:
    """Problems of one file against its index record (empty list when fine)."""
    if not os.path.isfile(path):
        return ["missing"]
    actual = os.path.getsize(path)
    if actual != size:
        return [f"{actual} bytes, but index.json records {size} (truncated or overwritten)"]
    problems = []
    for algo in algos:
        if algo not in hashes:
            problems.append(f"no {algo} hash in index.json (recorded: {sorted(hashes)})")
        elif file_hash(algo, path) != hashes[algo]:
            problems.append(f"{algo} hash mismatch (corrupt contents)")
    return problems


def check_shard_file(shard: Any, validate_hash: str | None) -> None:
    """Raise ShardError naming the file when a prepared shard's size or hash is off."""
    for path, size, hashes in shard_raw_files(shard):
        algos = [validate_hash] if validate_hash else []
        problems = _check_file(path, size, hashes, algos)
        if problems:
            raise ShardError(
                f"shard {path}: {'; '.join(problems)}. Re-create it (data_prep/tokenize_to_mds.py) or "
                f"re-download it; data_prep/validate_dataset.py checks a whole dataset"
            )


def read_index(path: str) -> dict[str, Any]:
    """The parsed ``index.json`` at ``path``; ShardError naming the file when it cannot be read or is
    not an MDS index (version 2 with a list of shards)."""
    try:
        with open(path) as f:
            index = json.load(f)
    except (OSError, ValueError) as err:
        raise ShardError(f"cannot read MDS index {path}: {err}") from err
    if not isinstance(index, dict) or index.get("version") != 2 or not isinstance(index.get("shards"), list):
        raise ShardError(f"{path} is not an MDS index (version 2 with a shards list)")
    return index


def _check_mds_header(path: str, samples: int) -> list[str]:
    """MDS layout: [n: uint32][offsets: uint32 x (n + 1)][sample bytes]; offsets end at the file size."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4:
            return ["too short for an MDS header"]
        (count,) = np.frombuffer(head, np.uint32)
        if int(count) != samples:
            return [f"header says {int(count)} samples, index.json says {samples}"]
        offsets = np.frombuffer(f.read(4 * (samples + 1)), np.uint32)
    if offsets.size != samples + 1:
        return ["sample offset table is cut short"]
    if np.any(np.diff(offsets.astype(np.int64)) < 0) or int(offsets[-1]) != size:
        return [f"sample offsets do not end at the file size {size}"]
    return []


@dataclass
class ShardProblem:
    path: str
    problem: str


@dataclass
class ValidationReport:
    """Outcome of ``validate_mds_dataset``."""

    indexes: int = 0
    shards: int = 0
    samples: int = 0
    bytes: int = 0
    problems: list[ShardProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.indexes > 0


def _is_merged(index_path: str) -> bool:
    """Whether an index.json lists shards in its subfolders (a merged index)."""
    try:
        index = read_index(index_path)
    except ShardError:
        return False
    return any("/" in str((info.get("raw_data") or {}).get("basename", "")) for info in index["shards"])


def find_indexes(root: str) -> list[str]:
    """Every index.json under ``root`` (itself or split subfolders), sorted. Indexes below a merged index
    (``data_prep/merge_mds.py``, whose shards sit in subfolders) are left out: it lists their shards."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if INDEX_NAME in filenames:
            found.append(os.path.join(dirpath, INDEX_NAME))
    merged = [os.path.dirname(path) + os.sep for path in found if _is_merged(path)]
    return [path for path in found if not any(path.startswith(m) and os.path.dirname(path) + os.sep != m
                                              for m in merged)]


def _shard_records(index_path: str, report: ValidationReport) -> Iterator[tuple[str, dict]]:
    try:
        index = read_index(index_path)
    except ShardError as err:
        report.problems.append(ShardProblem(index_path, str(err)))
        return
    report.indexes += 1
    for info in index["shards"]:
        yield os.path.dirname(index_path), info


def _validate_shard(dirname: str, info: dict, algos: list[str] | None) -> list[ShardProblem]:
    raw = info.get("raw_data") or {}
    path = os.path.join(dirname, raw.get("basename", "?"))
    if info.get("format") != "mds":
        return [ShardProblem(path, f"format {info.get('format')!r}, expected 'mds'")]
    problem = token_column_problem(info)
    if problem:
        return [ShardProblem(path, problem)]
    zip_info = info.get("zip_data")
    if not os.path.isfile(path) and zip_info:
        zpath = os.path.join(dirname, zip_info["basename"])
        hashes = zip_info.get("hashes") or {}
        problems = _check_file(zpath, zip_info["bytes"], hashes, sorted(hashes) if algos is None else algos)
        return [ShardProblem(zpath, p) for p in problems]
    hashes = raw.get("hashes") or {}
    problems = _check_file(path, raw.get("bytes", -1), hashes, sorted(hashes) if algos is None else algos)
    if not problems:
        problems = _check_mds_header(path, int(info.get("samples", -1)))
    return [ShardProblem(path, p) for p in problems]


def validate_mds_dataset(root: str, *, algos: list[str] | None = None,
                         on_shard: Callable[[str, list[ShardProblem]], None] | None = None) -> ValidationReport:
    """Check every shard under ``root``: presence, size, recorded hashes, MDS header, columns.

    ``algos=None`` checks every hash recorded in index.json; ``[]`` checks none. ``on_shard`` is
    called after each shard (progress display).
    """
    report = ValidationReport()
    indexes = find_indexes(root)
    if not indexes:
        report.problems.append(ShardProblem(root, f"no {INDEX_NAME} found (not an MDS dataset)"))
        return report
    for index_path in indexes:
        for dirname, info in _shard_records(index_path, report):
            problems = _validate_shard(dirname, info, algos)
            report.shards += 1
            report.samples += int(info.get("samples", 0))
            report.bytes += int((info.get("raw_data") or {}).get("bytes", 0))
            report.problems.extend(problems)
            if on_shard is not None:
                on_shard(os.path.join(dirname, (info.get("raw_data") or {}).get("basename", "?")), problems)
    return report
