"""The embedded tasks' data: the quickstart's Python-standard-library corpus, split into train and held-out
documents, and the examples cut from it (documented functions, code snippets).

The corpus folder holds ``train.jsonl`` and ``val.jsonl`` as the quickstart writes them (every 50th document
of the corpus held out). Evaluation examples come from ``val.jsonl`` only; fine-tuning examples from
``train.jsonl`` only.
"""

from __future__ import annotations

import ast
import json
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .base import TaskError

HOLDOUT_EVERY = 50
"""The quickstart holds out every 50th corpus document (lines 50, 100, ... of all.jsonl)."""
SPLITS = ("train.jsonl", "val.jsonl")
_REPO_ROOT = Path(__file__).resolve().parents[4]


def default_corpus_dirs() -> list[Path]:
    """Where the corpus is looked for without --data-dir: the quickstart's default workdir, then the cache."""
    return [_REPO_ROOT / "quickstart" / "corpus", cache_dir()]


def cache_dir() -> Path:
    base = os.environ.get("MODERNBERT_EVAL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "modernbert_pretrain")
    return Path(base) / f"stdlib-corpus-py{sys.version_info.major}.{sys.version_info.minor}"


def _has_splits(folder: Path) -> bool:
    return all((folder / name).is_file() for name in SPLITS)


def locate_corpus(data_dir: str | None, *, build: bool = True) -> Path:
    """The folder holding train.jsonl and val.jsonl.

    With ``data_dir``: that folder or its ``corpus/`` subfolder (a quickstart workdir). Without: the
    quickstart's workdir corpus when it exists, otherwise a copy built once from this Python's standard
    library into the cache folder.
    """
    if data_dir is not None:
        for folder in (Path(data_dir), Path(data_dir) / "corpus"):
            if _has_splits(folder):
                return folder
        raise TaskError(f"--data-dir {data_dir}: no train.jsonl and val.jsonl in it or in its corpus/ subfolder; "
                        "point it at the quickstart's corpus folder (or leave it out to build one)")
    for folder in default_corpus_dirs():
        if _has_splits(folder):
            return folder
    if not build:
        raise TaskError(f"no corpus found in {', '.join(map(str, default_corpus_dirs()))}")
    return build_corpus(cache_dir())


def build_corpus(out: Path, *, max_bytes: int | None = None) -> Path:
    """Write the quickstart's corpus and split into ``out`` (atomically: a temporary folder renamed when
    complete, so two processes building at once cannot leave a half-written corpus)."""
    from ...data.prep.corpus import DEFAULT_MAX_BYTES, write_corpus

    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"building the evaluation corpus from the standard library into {out} (once)", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        write_corpus(str(tmp / "all.jsonl"), max_bytes=max_bytes or DEFAULT_MAX_BYTES, progress=False)
        split_holdout(tmp / "all.jsonl", tmp)
        try:
            tmp.rename(out)
        except OSError:
            if not _has_splits(out):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def split_holdout(all_jsonl: Path, out: Path) -> None:
    """The quickstart's split: document i (1-based) is held out when i % 50 == 0."""
    with open(all_jsonl, encoding="utf-8") as src, open(out / "train.jsonl", "w", encoding="utf-8") as train, \
            open(out / "val.jsonl", "w", encoding="utf-8") as val:
        for i, line in enumerate(src, start=1):
            (val if i % HOLDOUT_EVERY == 0 else train).write(line)


def read_code(path: Path) -> Iterator[tuple[str, str]]:
    """(source name, text) of every code document of one split file."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise TaskError(f"{path}:{n}: not a JSON line ({err})") from err
            source = str(record.get("source", ""))
            if source.startswith("code:"):
                yield source, record["text"]


# ----------------------------------------------------------------------------- documented functions
@dataclass(frozen=True)
class FunctionPair:
    source: str
    """Corpus document and qualified function name."""
    docstring: str
    """The query: the function's cleaned docstring."""
    code: str
    """The document: the function's source, dedented, with the docstring statement removed."""
    original: str = ""
    """The function's source as it stands in the corpus document (docstring included)."""


def _without_docstring(lines: list[str], node: ast.AST) -> str | None:
    """The function's source lines minus the docstring's; None when the docstring shares a line with code."""
    doc = node.body[0]
    if doc.lineno == node.lineno or doc.end_col_offset != len(lines[doc.end_lineno - 1].rstrip()):
        return None
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    kept = lines[start - 1:doc.lineno - 1] + lines[doc.end_lineno:node.end_lineno]
    indent = node.col_offset
    # lines inside a multi-line string may start left of the def: strip only their whitespace
    return "\n".join(x[min(indent, len(x) - len(x.lstrip())):] for x in kept).strip("\n")


def function_pairs(documents: Iterable[tuple[str, str]], *, min_body_lines: int = 2,
                   min_doc_words: int = 3) -> list[FunctionPair]:
    """Every documented function whose body (docstring removed) has at least ``min_body_lines`` non-blank
    lines besides the signature. Docstrings or bodies occurring twice are dropped (an ambiguous answer)."""
    found: list[FunctionPair] = []
    for source, text in documents:
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError, RecursionError):
            continue
        lines = text.splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node, clean=True)
            if not doc or len(doc.split()) < min_doc_words:
                continue
            code = _without_docstring(lines, node)
            if code is None or sum(1 for x in code.splitlines() if x.strip()) < 1 + min_body_lines:
                continue
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            found.append(FunctionPair(f"{source}:{node.name}", doc, code,
                                      "\n".join(lines[start - 1:node.end_lineno])))
    return _unique(found)


def _unique(pairs: list[FunctionPair]) -> list[FunctionPair]:
    docs: dict[str, int] = {}
    codes: dict[str, int] = {}
    for p in pairs:
        docs[p.docstring] = docs.get(p.docstring, 0) + 1
        codes[p.code] = codes.get(p.code, 0) + 1
    return [p for p in pairs if docs[p.docstring] == 1 and codes[p.code] == 1]


def squash(text: str) -> str:
    """Whitespace runs -> one space: compares code regardless of its indentation."""
    return " ".join(text.split())


def unseen(pairs: list[FunctionPair], training_texts: Iterable[str],
           training_pairs: Iterable[FunctionPair] = ()) -> list[FunctionPair]:
    """The pairs whose function occurs in no training document and whose body (docstring removed) is no
    fine-tuning pair's body. The standard library repeats some functions, e.g. abstract methods, across files."""
    haystack = "\n".join(squash(t) for t in training_texts)
    bodies = {squash(p.code) for p in training_pairs}
    return [p for p in pairs if squash(p.original) not in haystack and squash(p.code) not in bodies]


# ----------------------------------------------------------------------------- code snippets
def code_windows(documents: Iterable[tuple[str, str]], *, lines: int, stride: int,
                 min_distinct: int) -> list[str]:
    """Windows of ``lines`` consecutive non-blank lines of code (indentation kept), every ``stride`` lines,
    keeping windows with at least ``min_distinct`` distinct lines (so a shuffle changes the text)."""
    out = []
    for _, text in documents:
        rows = [x.rstrip() for x in text.splitlines() if x.strip()]
        for start in range(0, len(rows) - lines + 1, stride):
            window = rows[start:start + lines]
            if len(set(window)) >= min_distinct:
                out.append("\n".join(window))
    return out


def sample(items: list, n: int, seed: int) -> list:
    """A deterministic subset of at most ``n`` items, in their original order."""
    if len(items) <= n:
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]
