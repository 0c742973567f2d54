"""The shared memory of our StreamingDatasets: found, tracked and released by object, never by name.

Streaming 0.13 names its blocks ``/dev/shm/<prefix:06>_<name>`` with ``prefix`` the first number no
live block uses; it cannot be chosen. Its global cleanup (``clean_stale_shared_memory``) unlinks the
blocks of every prefix from 0 up, whoever owns them, so a test or benchmark that calls it breaks a
training run on the same machine. Here a process releases only the blocks its own datasets opened.

Each streaming ``SharedMemory`` registers an ``atexit`` handler that unlinks its block by name at
exit. After the name is released it may be reused by another job, so releasing also drops that
handler: a later exit must not unlink someone else's block.

Each rank of a node also picks the prefix on its own, before the node's leader creates it: a job that
registers a prefix between those two looks moves some ranks to another number, and the node's ranks
then fail or fall out of step in streaming's barriers (seen as "Connection closed by peer" in a two-rank
test next to another test worker). `registering` makes that window exclusive among our jobs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from modernbert_pretrain.data.streaming_adapter import release_block, shared_memory_of, shm_prefix

__all__ = ["registering", "release_shared_memory", "release_tracked", "shared_memory_of", "track", "tracked_count"]

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


def registration_lock_path() -> str:
    """The machine's lock for picking a prefix: next to the blocks themselves where /dev/shm exists (a container
    or a pretend node with a private /dev/shm gets its own lock with it)."""
    folder = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    return os.path.join(folder, "modernbert_pretrain.prefix.lock")


@contextmanager
def registering(local_leader: bool) -> Iterator[None]:
    """Hold the machine's prefix lock while this node's ranks build a StreamingDataset (every rank enters).

    The node's leader takes the lock; under torch.distributed every rank then waits at a barrier until it has
    it, and the leader keeps it until every rank is through, so no other job of ours registers a prefix while
    any of this node's ranks is choosing one. The lock is an flock: a killed holder releases it."""
    import torch.distributed as tdist
    from filelock import FileLock

    distributed = tdist.is_available() and tdist.is_initialized()
    lock = FileLock(registration_lock_path(), mode=0o666) if local_leader else None
    if lock is not None:
        lock.acquire()
    try:
        if distributed:
            tdist.barrier()
        yield
        if distributed:
            tdist.barrier()
    finally:
        if lock is not None:
            lock.release()
