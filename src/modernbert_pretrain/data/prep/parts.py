"""Split a corpus into parts and chunks, and keep the records that make a part resumable.

The inputs, in ``find_input_files`` order, are laid end to end by size into one virtual stream of
bytes. Part ``k`` of ``N`` owns bytes ``[k*T/N, (k+1)*T/N)``; inside a part, chunks are cut every
``chunk_bytes``. An uncompressed ``.jsonl`` is cut at those byte positions, each cut moved to the
next line start (``InputUnit`` ``"lines"``), so a large file spreads over parts; a parquet file is
cut between row groups (weighted by their compressed size); any other file (compressed, ``.txt``,
a Hugging Face arrow file) goes whole to the chunk holding its first byte. The plan depends only on
the inputs' paths and sizes, ``N`` and ``chunk_bytes``, so every part computes the same plan alone.

An ``hf:`` input (a streamed dataset, ``hf_input.py``) has no byte size to cut: it enters the stream as its
shards, in order, each weighing ``chunk_bytes``, so each shard is one chunk of its own and the shards are
dealt to the parts in contiguous, even runs (part ``k`` of ``N`` gets shards ``[k*S/N, (k+1)*S/N)``
when the dataset is the only input). A shard is never split; a plan that would leave a part without any
is refused. It depends on the dataset's resolved data files (``hf_input.identity``), ``N`` and
``chunk_bytes``.

On disk (or under a remote prefix, through ``remote.py``), part ``k`` of ``N`` is
``<output>/part-0000k-of-0000N/``:

- ``plan.json``: the plan's hash, settings and this part's chunks (written first);
- ``chunk-00000/`` ...: MDS shards, ``index.json``, and ``done.json`` written last (atomically);
- ``index.json`` over all chunks, ``tokenizer_fingerprint.json``, then ``complete.json`` last
  (atomically) with the counts and the input ranges the part covered.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modernbert_pretrain.data.errors import InputDataError, PartsError
from modernbert_pretrain.data.prep.hf_input import identity, is_hf, shard_count
from modernbert_pretrain.data.prep.readers import InputUnit, input_format

PLAN_VERSION = 1
PLAN_NAME = "plan.json"
DONE_NAME = "done.json"
COMPLETE_NAME = "complete.json"
DEFAULT_CHUNK_BYTES = 256 << 20
"""Input bytes per chunk: the most a killed part redoes (plus one line, row group or unsplittable file)."""
PART_RE = re.compile(r"^part-(\d{5})-of-(\d{5})$")


def part_name(part: int, parts: int) -> str:
    return f"part-{part:05d}-of-{parts:05d}"


def chunk_name(chunk: int) -> str:
    return f"chunk-{chunk:05d}"


@dataclass(frozen=True)
class _Atom:
    """A piece of the virtual byte stream: a cuttable ``.jsonl`` span, a row group or a whole file."""

    path: str
    kind: str
    start: int
    end: int
    offset: int
    """Position of its first byte in the virtual stream."""
    weight: int


def _atoms(path: str, offset: int, chunk_bytes: int) -> list[_Atom]:
    if is_hf(path):
        return [_Atom(path, "hf_shards", s, s + 1, offset + s * chunk_bytes, chunk_bytes)
                for s in range(shard_count(path))]
    size = os.path.getsize(path)
    fmt = input_format(path)
    if fmt == ".jsonl":
        return [_Atom(path, "lines", 0, size, offset, size)]
    if fmt == ".parquet":
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(path).metadata
        except Exception as err:  # pyarrow raises ArrowInvalid, OSError ...
            raise InputDataError(f"{path}: cannot read as parquet ({err})") from err
        atoms = []
        for group in range(meta.num_row_groups):
            rg = meta.row_group(group)
            weight = max(1, sum(rg.column(c).total_compressed_size for c in range(rg.num_columns)))
            atoms.append(_Atom(path, "row_groups", group, group + 1, offset, weight))
            offset += weight
        return atoms
    return [_Atom(path, "whole", 0, 0, offset, size)]


@dataclass
class Plan:
    parts: int
    chunk_bytes: int
    chunks: list[list[list[InputUnit]]]
    """``chunks[part][chunk]``: the units one chunk reads, in order."""
    inputs: list[tuple[str, int]]
    """(path, size) of every input file."""
    total_bytes: int

    def sha256(self, settings: dict[str, Any]) -> str:
        payload = {"version": PLAN_VERSION, "parts": self.parts, "chunk_bytes": self.chunk_bytes,
                   "inputs": self.inputs, "settings": settings,
                   "chunks": [[[u.to_json() for u in c] for c in p] for p in self.chunks]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _chunk_bounds(total: int, parts: int, chunk_bytes: int) -> tuple[list[int], list[int]]:
    """Start offsets of every chunk in the virtual stream, and the part of each."""
    starts, owner = [], []
    span = max(total, 1)
    for part in range(parts):
        lo, hi = span * part // parts, span * (part + 1) // parts
        for start in range(lo, hi, chunk_bytes):
            starts.append(start)
            owner.append(part)
    return starts, owner


def make_plan(files: Sequence[str], parts: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Plan:
    """The deterministic split of ``files`` into ``parts`` parts of chunks, balanced by bytes."""
    if parts < 1:
        raise ValueError(f"--parts {parts} must be >= 1")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes={chunk_bytes} must be >= 1")
    atoms: list[_Atom] = []
    offset = 0
    for path in files:
        atoms += _atoms(path, offset, chunk_bytes)
        offset = atoms[-1].offset + atoms[-1].weight if atoms else offset
    total = offset
    starts, owner = _chunk_bounds(total, parts, chunk_bytes)
    ends = starts[1:] + [max(total, 1)]
    units: list[list[InputUnit]] = [[] for _ in starts]

    def add(index: int, unit: InputUnit) -> None:
        last = units[index][-1] if units[index] else None
        if last is not None and last.path == unit.path and last.kind == unit.kind == "row_groups" \
                and last.end == unit.start:
            units[index][-1] = InputUnit(unit.path, unit.kind, last.start, unit.end)
        else:
            units[index].append(unit)

    for atom in atoms:
        first = max(0, bisect.bisect_right(starts, atom.offset) - 1)
        if atom.kind != "lines":
            add(first, InputUnit(atom.path, atom.kind, atom.start, atom.end))
            continue
        index = first
        while index < len(starts) and starts[index] < atom.offset + atom.weight:
            lo = max(starts[index], atom.offset) - atom.offset
            hi = min(ends[index], atom.offset + atom.weight) - atom.offset
            if hi > lo:
                add(index, InputUnit(atom.path, "lines", lo, hi))
            index += 1
    chunks: list[list[list[InputUnit]]] = [[] for _ in range(parts)]
    for index, chunk_units in enumerate(units):
        if chunk_units:
            chunks[owner[index]].append(chunk_units)
    _check_filled(files, chunks)
    inputs = [(path, identity(path) if is_hf(path) else os.path.getsize(path)) for path in files]
    return Plan(parts, chunk_bytes, chunks, inputs, total)


def _check_filled(files: Sequence[str], chunks: list[list[list[InputUnit]]]) -> None:
    """Refuse a plan over ``hf:`` inputs that leaves a part empty: it has fewer shards than parts."""
    datasets = [path for path in files if is_hf(path)]
    empty = [part for part, part_chunks in enumerate(chunks) if not part_chunks]
    if datasets and empty:
        shards = sum(shard_count(path) for path in datasets)
        filled = len(chunks) - len(empty)
        raise InputDataError(f"--parts {len(chunks)} leaves part {empty[0]} without data: {', '.join(datasets)} "
                             f"has {shards} shard(s) and a shard goes whole to one part; use --parts {filled} "
                             f"or fewer")


def write_json_atomic(path: str, record: dict[str, Any]) -> None:
    """Write ``record`` to a temporary file beside ``path`` and rename it: readers see all or nothing."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str) -> dict[str, Any] | None:
    """The record at ``path``; None when there is none. PartsError when it is not readable JSON."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
        if not isinstance(record, dict):
            raise ValueError("expected a JSON object")
    except (OSError, ValueError) as err:
        raise PartsError(f"{path}: unreadable record ({err}); delete its folder "
                         f"{os.path.dirname(path)} and run that part again") from err
    return record


def part_folders(names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """The part folders among ``names`` (the subfolders of an output root): name -> (part, parts)."""
    found = {}
    for name in sorted(names):
        match = PART_RE.match(name)
        if match:
            found[name] = (int(match.group(1)), int(match.group(2)))
    return found


def merge_indexes(indexes: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One MDS index over the ``(subfolder, its index.json)`` pairs, shard names relative to their parent."""
    shards = []
    for sub, index in indexes:
        for info in index["shards"]:
            info = dict(info)
            for key in ("raw_data", "zip_data"):
                if info.get(key):
                    info[key] = dict(info[key], basename=f"{sub}/{info[key]['basename']}")
            shards.append(info)
    return {"shards": shards, "version": 2}
