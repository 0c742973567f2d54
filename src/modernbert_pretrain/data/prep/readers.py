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


def _json_text(line: str, path: str, lineno: int, text_field: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputDataError(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise InputDataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
    if text_field not in record:
        raise InputDataError(
            f"{path}:{lineno}: no field '{text_field}' (fields: {sorted(record)[:10]}); pass --text-field"
        )
    text = record[text_field]
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InputDataError(f"{path}:{lineno}: field '{text_field}' is {type(text).__name__}, expected a string")
    return text


def _iter_jsonl(path: str, text_field: str) -> Iterator[str]:
    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    yield _json_text(line, path, lineno, text_field)
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
