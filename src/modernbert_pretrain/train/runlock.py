"""One training run per save folder: an exclusive lock held for the whole run.

The lock is an flock on `<save.folder>/.run.lock`. The kernel (or the NFS/Lustre lock manager) drops it when the
holding process dies, however it dies, so a killed run never blocks the rerun that resumes it, on any host.
The file also records who holds it (host, pid, start time), for the refusal message.

File systems without flock support get a fallback: the lock file is created exclusively and removed on release.
Such a file is stale, and taken over, when its process is gone: same host and that pid is not running (or
runs a different process, told apart by its start time). A lock from another host cannot be checked from here;
the refusal names the file to delete once that run is known to be dead.

Only global rank 0 takes the lock (it is also the only rank that repairs and writes the folder), so the
nodes of one multi-node run on a shared folder do not lock each other out, and any second run, which has a
global rank 0 of its own, is refused."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from pathlib import Path

from ..schema import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunLocked(RuntimeError):  # noqa: N818 - the folder's state, reported as it is
    """Another live process holds the save folder."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22); None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _start_time(pid)
    return started is None or now is None or now == started


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(info: dict) -> str:
    if not info:
        return "an unknown process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("time", 0)))
    return f"pid {info.get('pid')} on host {info.get('host')} (since {since})"


def _record() -> str:
    pid = os.getpid()
    return json.dumps({"pid": pid, "host": socket.gethostname(), "start": _start_time(pid), "time": time.time()})


class RunLock:
    """`RunLock(folder).acquire()` or raise RunLocked; `release()` when the run ends (also on process exit)."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None
        self._exclusive_file = False

    def acquire(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ConfigError(f"save.folder: cannot write to {self.path.parent}: {err}") from err
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise self._refusal() from None
            if err.errno not in _NO_FLOCK:
                raise
            log.warning("%s: this file system has no flock; using an exclusive lock file", self.path.parent)
            return self._acquire_file()
        os.ftruncate(fd, 0)
        os.write(fd, _record().encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def _refusal(self) -> RunLocked:
        return RunLocked(f"save.folder {self.path.parent} is in use by another training run: {_describe(_holder(self.path))} "
                         f"holds {self.path}; wait for it to finish, stop it, or choose another save.folder")

    def _acquire_file(self) -> RunLock:
        """Fallback without flock: O_EXCL creation, taking over a lock whose process is gone (same host)."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                info = _holder(self.path)
                here = info.get("host") == socket.gethostname()
                if here and isinstance(info.get("pid"), int) and not _alive(info["pid"], info.get("start")):
                    log.warning("%s: removing a stale lock of %s (that process is gone)", self.path, _describe(info))
                    self.path.unlink(missing_ok=True)
                    continue
                hint = "" if here else f" (if that run is dead, delete {self.path})"
                raise RunLocked(f"save.folder {self.path.parent} is in use by another training run: "
                                f"{_describe(info)} holds {self.path}{hint}; wait for it to finish, stop it, or "
                                "choose another save.folder") from None
            os.write(fd, _record().encode())
            os.fsync(fd)
            os.close(fd)
            self._exclusive_file = True
            return self
        raise self._refusal()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock; the file stays (removing it would race a waiting acquirer)
            self._fd = None
        if self._exclusive_file:
            self.path.unlink(missing_ok=True)
            self._exclusive_file = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None or self._exclusive_file
