"""A full disk, told apart from other write errors, and said in one line: "no space left on device", the
folder, the free space and the space needed. Training saves (train/faults.py), exports (export.py) and
tokenization (data/prep/to_mds.py) share it; it imports neither Composer nor the model."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class NoSpaceLeft(RuntimeError):  # noqa: N818 - named after the condition, like the errno
    """A write ran out of disk space; the message names the folder, the free and the needed space."""


def out_of_space(err: BaseException | None) -> str | None:
    """'errno' for ENOSPC/EDQUOT anywhere in the exception chain (safetensors' SafetensorError carries only
    the text "No space left on device"); 'writer' for a failed write of torch's zip writer, which reports a full
    disk as a RuntimeError ("[enforce fail at inline_container.cc] ... file write failed") without the errno;
    None otherwise."""
    seen = set()
    found = None
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        text = str(err)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return "errno"
        if "No space left on device" in text or "Disk quota exceeded" in text or "StorageFull" in text:
            return "errno"
        if isinstance(err, RuntimeError) and ("PytorchStreamWriter" in text or "inline_container" in text):
            found = "writer"
        err = err.__cause__ or err.__context__
    return found


def free_bytes(folder: str | Path) -> int | None:
    """Free space of the file system holding `folder` (or its nearest existing parent); None if unknown."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def size(n: int | None) -> str:
    """Bytes for a message: GiB from 1 GiB on, MiB below."""
    if n is None:
        return "unknown"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.2f} MiB"


def no_space(what: str, folder: str | Path, needed_bytes: int | None, fix: str, *,
             bound: str = "about") -> NoSpaceLeft:
    """The one-line error: `what` (e.g. "while exporting step 4"), the folder, free and needed space (`bound`:
    "about", or "at most" for an upper bound), the fix."""
    need = f", it needs {bound} {size(needed_bytes)}" if needed_bytes else ""
    return NoSpaceLeft(f"no space left on device {what} to {folder}: {size(free_bytes(folder))} free{need}. {fix}")
