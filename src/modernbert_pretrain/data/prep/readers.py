"""Read documents from the input formats of data preparation.

- ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst`` (``.zstd``), ``.json.gz``: one JSON object per line
  (``.json.gz`` as Dolma writes it); the text is in ``text_field``. Blank lines are not documents.
- ``.parquet``: one row per document; the text is in column ``text_field`` (null = empty document).
- ``.txt``: the whole file is one document.
- a Hugging Face ``save_to_disk`` folder (``state.json`` beside ``.arrow`` files): one row per
  document, column ``text_field``.
- ``hf:NAME[:CONFIG[:SPLIT]]``: a Hugging Face dataset read by name, streamed (``hf_input.py``).

A directory stands for every supported file below it, in sorted order; an input with ``*``, ``?``
or ``[`` that is not an existing path is a glob (``**`` descends into folders). Problems raise
``InputDataError`` naming the file (and line or row).
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from modernbert_pretrain.data.errors import InputDataError
from modernbert_pretrain.data.prep.hf_input import check as check_hf
from modernbert_pretrain.data.prep.hf_input import is_hf, iter_hf_documents, iter_shard_documents

SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.zstd", ".json.gz", ".parquet", ".txt")
JSON_LINES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.zstd", ".json.gz")
ARROW = ".arrow"
"""A file of a Hugging Face ``save_to_disk`` folder: read when named or listed by the folder's state.json."""
_GLOB_CHARS = ("*", "?", "[")


def input_format(path: str) -> str | None:
    """The supported suffix ``path`` ends with, or None."""
    lower = path.lower()
    for suffix in (*SUFFIXES, ARROW):
        if lower.endswith(suffix):
            return suffix
    return None


def _saved_dataset_files(folder: str) -> list[str] | None:
    """The arrow files of a Hugging Face ``save_to_disk`` folder, in order; None when it is not one."""
    if os.path.isfile(os.path.join(folder, "dataset_dict.json")):
        splits = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
        raise InputDataError(f"{folder} is a Hugging Face dataset with splits {splits}; pass one split's folder, "
                             f"e.g. {os.path.join(folder, splits[0] if splits else 'train')}")
    state = os.path.join(folder, "state.json")
    if not os.path.isfile(state):
        return None
    try:
        with open(state) as f:
            names = [entry["filename"] for entry in json.load(f)["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputDataError(f"{state}: not a Hugging Face save_to_disk state ({type(err).__name__}: {err})") from err
    paths = [os.path.join(folder, name) for name in names]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise InputDataError(f"{missing[0]}: listed in {state} but missing (incomplete copy of the dataset?)")
    return paths


def _files_below(folder: str) -> list[str]:
    saved = _saved_dataset_files(folder)
    if saved is not None:
        return saved
    below = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in list(dirnames):
            saved = _saved_dataset_files(os.path.join(dirpath, name))
            if saved is not None:
                dirnames.remove(name)
                below += saved
        below += [os.path.join(dirpath, f) for f in sorted(filenames) if input_format(f) in SUFFIXES]
    return below


def _expand(item: str) -> list[str]:
    """``item`` itself, or the sorted matches of a glob pattern."""
    if os.path.exists(item) or not any(c in item for c in _GLOB_CHARS):
        return [item]
    matches = sorted(glob.glob(item, recursive=True))
    if not matches:
        raise InputDataError(f"{item}: the pattern matches no files")
    return matches


def find_input_files(inputs: Sequence[str]) -> list[str]:
    """Expand globs, files and directories into the sorted list of supported input files; an ``hf:`` dataset
    is opened (so a bad name fails here) and kept, in its canonical spelling, in its place."""
    if not inputs:
        raise InputDataError("no inputs given; pass files or directories with --input")
    found: list[str] = []
    for item in (path for pattern in inputs for path in ([pattern] if is_hf(pattern) else _expand(pattern))):
        if is_hf(item):
            found.append(check_hf(item))
        elif os.path.isdir(item):
            below = _files_below(item)
            if not below:
                raise InputDataError(f"directory {item} holds no input files ({', '.join(SUFFIXES)}, or a "
                                     f"Hugging Face save_to_disk folder)")
            found += below
        elif os.path.exists(item):
            if input_format(item) is None:
                raise InputDataError(f"{item}: unsupported input type; use one of {', '.join(SUFFIXES)}")
            if not os.access(item, os.R_OK):
                raise InputDataError(f"{item}: not readable (check its permissions)")
            found.append(item)
        else:
            raise InputDataError(f"{item}: no such file or directory")
    return found


def _json_text(line: str, text_field: str, where) -> str:
    """The text of one JSON line; ``where()`` names the file and line in an error (called only then)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputDataError(f"{where()}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise InputDataError(f"{where()}: expected a JSON object, got {type(record).__name__}")
    if text_field not in record:
        raise InputDataError(
            f"{where()}: no field '{text_field}' (fields: {sorted(record)[:10]}); pass --text-field"
        )
    text = record[text_field]
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InputDataError(f"{where()}: field '{text_field}' is {type(text).__name__}, expected a string")
    return text


def _open_text(path: str):
    lower = path.lower()
    if lower.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if lower.endswith((".zst", ".zstd")):
        import zstandard

        # a frame's content size may be unknown (streamed writers): stream it, never one buffer
        reader = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
        return io.TextIOWrapper(reader, encoding="utf-8")
    return open(path, encoding="utf-8")


def _iter_jsonl(path: str, text_field: str) -> Iterator[str]:
    try:
        with _open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    yield _json_text(line, text_field, lambda n=lineno: f"{path}:{n}")
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as err:  # BadGzipFile: OSError; zstd: ZstdError
        if isinstance(err, InputDataError):
            raise
        raise InputDataError(f"{path}: cannot read ({type(err).__name__}: {err})") from err


def _open_parquet(path: str, text_field: str):
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError ...
        raise InputDataError(f"{path}: cannot read as parquet ({err})") from err
    names = parquet.schema_arrow.names
    if text_field not in names:
        raise InputDataError(f"{path}: no column '{text_field}' (columns: {names}); pass --text-field")
    return parquet


def _parquet_texts(path: str, text_field: str, columns: Iterable, row: int) -> Iterator[str]:
    """The strings of single-column pyarrow tables or batches; ``row`` is the count of rows before them."""
    for column in columns:
        for value in column.column(0).to_pylist():
            row += 1
            if value is not None and not isinstance(value, str):
                raise InputDataError(f"{path}: row {row}: column '{text_field}' holds "
                                     f"{type(value).__name__}, expected strings")
            yield value or ""


def _iter_parquet(path: str, text_field: str) -> Iterator[str]:
    parquet = _open_parquet(path, text_field)
    yield from _parquet_texts(path, text_field, parquet.iter_batches(columns=[text_field], batch_size=1024), 0)


def _iter_text(path: str) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8") as f:
            yield f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise InputDataError(f"{path}: cannot read as UTF-8 text ({err})") from err


@dataclass(frozen=True)
class InputUnit:
    """A share of one input file that a part or chunk reads.

    ``kind`` ``"lines"``: the JSON lines of an uncompressed ``.jsonl`` that start at a byte offset in
    ``[start, end)`` (a line starts at offset 0 or right after a newline), so byte cuts anywhere
    split the file into whole lines, each in exactly one unit. ``"row_groups"``: parquet row groups
    ``[start, end)``. ``"hf_shards"``: shards ``[start, end)`` of an ``hf:`` input. ``"whole"``: the whole file (compressed and ``.txt`` files cannot be cut).
    """

    path: str
    kind: str
    start: int
    end: int

    def to_json(self) -> list:
        return [self.path, self.kind, self.start, self.end]


def _line_number(path: str, offset: int) -> int:
    """1-based number of the line starting at byte ``offset`` (counted only when reporting an error)."""
    count = 0
    with open(path, "rb") as f:
        while offset > 0:
            block = f.read(min(offset, 1 << 20))
            if not block:
                break
            count += block.count(b"\n")
            offset -= len(block)
    return count + 1


def _iter_jsonl_lines(path: str, start: int, end: int, text_field: str) -> Iterator[str]:
    try:
        with open(path, "rb") as f:
            if start > 0:
                f.seek(start - 1)
                f.readline()  # the line holding byte start - 1 belongs to the unit before
            pos = f.tell()
            while pos < end:
                line = f.readline()
                if not line:
                    break
                if line.strip():
                    try:
                        text = line.decode("utf-8")
                    except UnicodeDecodeError as err:
                        raise InputDataError(f"{path}:{_line_number(path, pos)}: not UTF-8 ({err.reason} at byte "
                                             f"{pos + err.start})") from None
                    # the line number is counted only for an error: it costs a pass over the file
                    yield _json_text(text, text_field, lambda at=pos: f"{path}:{_line_number(path, at)}")
                pos += len(line)
    except OSError as err:
        raise InputDataError(f"{path}: cannot read ({type(err).__name__}: {err})") from err


def _iter_parquet_groups(path: str, start: int, end: int, text_field: str) -> Iterator[str]:
    parquet = _open_parquet(path, text_field)
    row = sum(parquet.metadata.row_group(g).num_rows for g in range(start))
    groups = (parquet.read_row_group(g, columns=[text_field]) for g in range(start, end))
    yield from _parquet_texts(path, text_field, groups, row)


def _iter_arrow(path: str, text_field: str) -> Iterator[str]:
    import pyarrow as pa

    try:
        reader = pa.ipc.open_stream(pa.memory_map(path))
    except Exception as err:  # ArrowInvalid, OSError
        raise InputDataError(f"{path}: cannot read as a Hugging Face arrow file ({err})") from err
    names = reader.schema.names
    if text_field not in names:
        raise InputDataError(f"{path}: no column '{text_field}' (columns: {names}); pass --text-field")
    row = 0
    for batch in reader:
        for value in batch.column(names.index(text_field)).to_pylist():
            row += 1
            if value is not None and not isinstance(value, str):
                raise InputDataError(f"{path}: row {row}: column '{text_field}' holds "
                                     f"{type(value).__name__}, expected strings")
            yield value or ""


def iter_unit_documents(unit: InputUnit, text_field: str = "text") -> Iterator[str]:
    """The texts of one input unit, in order."""
    if unit.kind == "lines":
        return _iter_jsonl_lines(unit.path, unit.start, unit.end, text_field)
    if unit.kind == "row_groups":
        return _iter_parquet_groups(unit.path, unit.start, unit.end, text_field)
    if unit.kind == "hf_shards":
        return iter_shard_documents(unit.path, unit.start, unit.end, text_field)
    return iter_documents(unit.path, text_field)


def iter_documents(path: str, text_field: str = "text") -> Iterator[str]:
    """The texts of one input file (or ``hf:`` dataset), in order."""
    if is_hf(path):
        return iter_hf_documents(path, text_field)
    fmt = input_format(path)
    if fmt in JSON_LINES:
        return _iter_jsonl(path, text_field)
    if fmt == ARROW:
        return _iter_arrow(path, text_field)
    if fmt == ".parquet":
        return _iter_parquet(path, text_field)
    if fmt == ".txt":
        return _iter_text(path)
    raise InputDataError(f"{path}: unsupported input type; use one of {', '.join(SUFFIXES)}")
