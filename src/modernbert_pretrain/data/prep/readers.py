"""Read documents from the input formats of data preparation.

- ``.jsonl`` / ``.jsonl.gz``: one JSON object per line; the text is in ``text_field``. Blank lines
  are not documents.
- ``.parquet``: one row per document; the text is in column ``text_field`` (null = empty document).
- ``.txt``: the whole file is one document.

A directory stands for every supported file below it, in sorted order. Problems raise
``InputDataError`` naming the file (and line or row).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from modernbert_pretrain.data.errors import InputDataError

SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet", ".txt")


def input_format(path: str) -> str | None:
    """The supported suffix ``path`` ends with, or None."""
    lower = path.lower()
    for suffix in SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    return None


def find_input_files(inputs: Sequence[str]) -> list[str]:
    """Expand files and directories into the sorted list of supported input files."""
    if not inputs:
        raise InputDataError("no inputs given; pass files or directories with --input")
    found: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            below = []
            for dirpath, dirnames, filenames in os.walk(item):
                dirnames.sort()
                below += [os.path.join(dirpath, f) for f in sorted(filenames) if input_format(f)]
            if not below:
                raise InputDataError(f"directory {item} holds no input files ({', '.join(SUFFIXES)})")
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


def _iter_jsonl(path: str, text_field: str) -> Iterator[str]:
    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    yield _json_text(line, text_field, lambda n=lineno: f"{path}:{n}")
    except (OSError, EOFError, UnicodeDecodeError) as err:  # gzip.BadGzipFile is an OSError
        raise InputDataError(f"{path}: cannot read ({type(err).__name__}: {err})") from err


def _iter_parquet(path: str, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError ...
        raise InputDataError(f"{path}: cannot read as parquet ({err})") from err
    names = parquet.schema_arrow.names
    if text_field not in names:
        raise InputDataError(f"{path}: no column '{text_field}' (columns: {names}); pass --text-field")
    row = 0
    for batch in parquet.iter_batches(columns=[text_field], batch_size=1024):
        for value in batch.column(0).to_pylist():
            row += 1
            if value is not None and not isinstance(value, str):
                raise InputDataError(f"{path}: row {row}: column '{text_field}' holds "
                                     f"{type(value).__name__}, expected strings")
            yield value or ""


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
    ``[start, end)``. ``"whole"``: the whole file (compressed and ``.txt`` files cannot be cut).
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
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError ...
        raise InputDataError(f"{path}: cannot read as parquet ({err})") from err
    names = parquet.schema_arrow.names
    if text_field not in names:
        raise InputDataError(f"{path}: no column '{text_field}' (columns: {names}); pass --text-field")
    row = sum(parquet.metadata.row_group(g).num_rows for g in range(start))
    for group in range(start, end):
        for value in parquet.read_row_group(group, columns=[text_field]).column(0).to_pylist():
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
    return iter_documents(unit.path, text_field)


def iter_documents(path: str, text_field: str = "text") -> Iterator[str]:
    """The texts of one input file, in order."""
    fmt = input_format(path)
    if fmt in (".jsonl", ".jsonl.gz"):
        return _iter_jsonl(path, text_field)
    if fmt == ".parquet":
        return _iter_parquet(path, text_field)
    if fmt == ".txt":
        return _iter_text(path)
    raise InputDataError(f"{path}: unsupported input type; use one of {', '.join(SUFFIXES)}")
