"""The embedded default corpus: the Python standard library, as code and as natural language.

Sources exist on every Python installation (``sysconfig.get_paths()["stdlib"]``):

- every ``.py`` file as a code document (``source: "code:<path>"``);
- every docstring in them (module, class, function; found with ``ast``) as a natural-language
  document (``source: "docstring:<path>:<name>"``);
- bundled text files (``*.txt``, ``*.rst``, ``LICENSE*``, ``README*``) as natural-language
  documents (``source: "text:<path>"``).

Files are visited in sorted order, so the corpus is deterministic for a given Python. Lengths vary
from one-line docstrings to modules of thousands of lines. Files that are not UTF-8 or not valid
Python (the test suite holds some on purpose) are counted in the summary, not hidden.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field

DEFAULT_MAX_BYTES = 32 * 2**20
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}
_TEXT_SUFFIXES = (".txt", ".rst")
_TEXT_PREFIXES = ("LICENSE", "README")


@dataclass
class CorpusSummary:
    output: str
    documents: int = 0
    bytes: int = 0
    by_kind: dict[str, int] = field(default_factory=lambda: {"code": 0, "docstring": 0, "text": 0})
    files_read: int = 0
    files_not_utf8: list[str] = field(default_factory=list)
    files_not_parsed: list[str] = field(default_factory=list)
    """Python files whose docstrings could not be extracted (their code is still included)."""
    reached_limit: bool = False


def stdlib_dir() -> str:
    return sysconfig.get_paths()["stdlib"]


def _wanted(name: str) -> bool:
    return name.endswith(".py") or name.endswith(_TEXT_SUFFIXES) or name.startswith(_TEXT_PREFIXES)


def iter_source_files(root: str) -> Iterator[str]:
    """Relative paths of corpus files under ``root``, sorted (directories depth-first)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if _wanted(name):
                yield os.path.relpath(os.path.join(dirpath, name), root)


def _docstrings(source: str) -> Iterator[tuple[str, str]]:
    """(qualified name, cleaned docstring) for the module and every class and function."""
    tree = ast.parse(source)

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                doc = ast.get_docstring(child, clean=True)
                if doc and doc.strip():
                    yield name, doc
                yield from visit(child, f"{name}.")

    module_doc = ast.get_docstring(tree, clean=True)
    if module_doc and module_doc.strip():
        yield "<module>", module_doc
    yield from visit(tree, "")


def iter_corpus(root: str | None = None, summary: CorpusSummary | None = None) -> Iterator[dict]:
    """Corpus records ``{"text", "source"}`` in deterministic order."""
    root = root or stdlib_dir()
    summary = summary or CorpusSummary(output="")
    for rel in iter_source_files(root):
        path = os.path.join(root, rel)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError:
            summary.files_not_utf8.append(rel)
            continue
        summary.files_read += 1
        if not rel.endswith(".py"):
            if text.strip():
                yield {"text": text, "source": f"text:{rel}"}
            continue
        if text.strip():
            yield {"text": text, "source": f"code:{rel}"}
        try:
            docs = list(_docstrings(text))
        except (SyntaxError, ValueError, RecursionError):
            summary.files_not_parsed.append(rel)
            continue
        for name, doc in docs:
            yield {"text": inspect.cleandoc(doc), "source": f"docstring:{rel}:{name}"}


def write_corpus(out_path: str, *, max_bytes: int = DEFAULT_MAX_BYTES, root: str | None = None,
                 progress: bool = True) -> CorpusSummary:
    """Write the corpus as JSON lines to ``out_path``, stopping before ``max_bytes`` of text."""
    from tqdm import tqdm

    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
    summary = CorpusSummary(output=out_path)
    parent = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(parent, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as out, \
            tqdm(total=max_bytes, unit="B", unit_scale=True, desc="corpus", disable=not progress) as bar:
        for record in iter_corpus(root, summary):
            size = len(record["text"].encode("utf-8"))
            if summary.bytes + size > max_bytes:
                summary.reached_limit = True
                break
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            summary.documents += 1
            summary.bytes += size
            summary.by_kind[record["source"].split(":", 1)[0]] += 1
            bar.update(size)
    return summary
