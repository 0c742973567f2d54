"""The shared memory of our StreamingDatasets: found, tracked and released by object, never by name.

Streaming 0.13 names its blocks ``/dev/shm/<prefix:06>_<name>`` with ``prefix`` the first number no
live block uses; it cannot be chosen. Its global cleanup (``clean_stale_shared_memory``) unlinks the
blocks of every prefix from 0 up, whoever owns them, so a test or benchmark that calls it breaks a
training run on the same machine. Here a process releases only the blocks its own datasets opened.

Each streaming ``SharedMemory`` registers an ``atexit`` handler that unlinks its block by name at
exit. After the name is released it may be reused by another job, so releasing also drops that
handler: a later exit must not unlink someone else's block.
"""

from __future__ import annotations

import os
from typing import Any

from modernbert_pretrain.data.streaming_adapter import release_block, shared_memory_of, shm_prefix

__all__ = ["release_shared_memory", "release_tracked", "shared_memory_of", "track", "tracked_count"]

_TRACKED: list[tuple[int, int, list[Any]]] = []
"""(pid, prefix, SharedMemory objects) of each dataset built by this process (and inherited ones)."""


def _release(blocks: list[Any]) -> None:
    for shm in blocks:
        release_block(shm)


def release_shared_memory(dataset: Any) -> None:
    """Unlink the blocks ``dataset`` created and close the ones it attached to, now and only once."""
    _release(shared_memory_of(dataset))


def track(dataset: Any) -> int:
    """Remember ``dataset``'s blocks as this process's; returns its prefix."""
    prefix = shm_prefix(dataset)
    _TRACKED.append((os.getpid(), prefix, shared_memory_of(dataset)))
    return prefix


def tracked_count() -> int:
    """A marker for ``release_tracked(since=...)``: how many datasets were tracked so far."""
    return len(_TRACKED)


def release_tracked(since: int = 0) -> list[int]:
    """Release the blocks of datasets this process built after marker ``since``; returns their prefixes.

    Blocks inherited through fork belong to the parent and are left alone.
    """
    released = []
    pid = os.getpid()
    for owner, prefix, blocks in _TRACKED[since:]:
        if owner == pid and blocks:
            _release(blocks)
            blocks.clear()
            released.append(prefix)
    return released
