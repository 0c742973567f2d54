"""Where a conversion writes and a merge reads: a local folder or an object-store prefix.

``open_store(root)`` gives a ``LocalStore`` for a path and a ``RemoteStore`` for a URL of a scheme
that mosaicml-streaming uploads to (``s3://``, ``gs://``, ``oci://``, ...). Both offer the few
operations the parts and merge code need, on paths relative to the root (``part-00001-of-00004/
chunk-00002/done.json``). A remote store uploads through streaming's ``CloudUploader`` (which reads
``S3_ENDPOINT_URL`` for an S3-compatible endpoint) and reads with streaming's downloaders, both
reached through ``data/streaming_adapter.py``, and keeps
only a private staging folder locally: shard writers write into it and upload each shard as it is
finished (``writer_out``), and small records are written there, uploaded and removed at once.
Removing remote objects (``--overwrite``, clearing a failed single run) is implemented for S3 only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from typing import Any

from modernbert_pretrain.data.errors import RemoteStorageError
from modernbert_pretrain.data.prep.parts import read_json, write_json_atomic
from modernbert_pretrain.data.streaming_adapter import (
    check_version,
    download_file,
    list_remote,
    make_uploader,
    s3_client,
    upload_staged,
    uploader_schemes,
)

STAGED_SHARDS = 4
"""Finished shards a writer may hold in staging while they upload; it waits for uploads beyond that,
so staging holds at most this many shards (plus the records being uploaded) whatever the dataset's size."""
_LOCAL_SCHEMES = ("", "file")


def is_remote(path: str) -> bool:
    return urllib.parse.urlparse(path).scheme not in _LOCAL_SCHEMES


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


class LocalStore:
    """A folder on this machine's file system."""

    remote = False

    def __init__(self, root: str) -> None:
        self.root = root

    def where(self, rel: str = "") -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def read_json(self, rel: str) -> dict[str, Any] | None:
        return read_json(self.where(rel))

    def write_json(self, rel: str, record: dict[str, Any]) -> None:
        os.makedirs(os.path.dirname(self.where(rel)), exist_ok=True)
        write_json_atomic(self.where(rel), record)

    def names(self, rel: str = "") -> list[str]:
        """Names of the files and folders directly in ``rel``; empty when it does not exist."""
        folder = self.where(rel)
        return sorted(os.listdir(folder)) if os.path.isdir(folder) else []

    def subfolders(self, rel: str = "") -> list[str]:
        return [n for n in self.names(rel) if os.path.isdir(os.path.join(self.where(rel), n))]

    def remove(self, *rels: str) -> None:
        for rel in rels:
            path = self.where(rel)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)

    def reset_folder(self, rel: str) -> None:
        """Make ``rel`` ready for a shard writer (which requires an empty folder)."""
        self.remove(rel)

    def writer_out(self, rel: str) -> str:
        return self.where(rel)

    def close(self) -> None:
        pass


class RemoteStore:
    """An object-store prefix, written through a private local staging folder."""

    remote = True

    def __init__(self, root: str, staging: str | None = None) -> None:
        check_version()
        scheme = urllib.parse.urlparse(root).scheme
        schemes = uploader_schemes()
        if scheme not in schemes:
            known = ", ".join(f"{s}://" for s in schemes if s and "/" not in s)
            raise RemoteStorageError(f"{root}: unknown storage scheme {scheme}://; use a local folder or one of "
                                     f"{known}")
        self.root = root.rstrip("/")
        if staging is not None:
            os.makedirs(staging, exist_ok=True)
        self.local = tempfile.mkdtemp(prefix="mds-staging-", dir=staging)
        try:
            self.uploader = make_uploader(self.local, self.root)
        except Exception as err:  # botocore ClientError, EndpointConnectionError, NoCredentialsError, ...
            self.close()
            raise RemoteStorageError(
                f"cannot write to {self.root}: {_first_line(err)}; check that the bucket exists and that the "
                f"credentials (and S3_ENDPOINT_URL for an S3-compatible server) are set") from err
        path = urllib.parse.urlparse(self.root).path.strip("/")
        self._key_prefix = f"{path}/" if path else ""

    def where(self, rel: str = "") -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def _keys(self, rel: str) -> list[str]:
        """Keys under ``rel`` (relative to the root); ``rel`` itself when it is an object."""
        full = self._key_prefix + rel
        try:
            keys = [k for k in list_remote(self.uploader, rel)
                    if not rel or k == full or k.startswith(f"{full}/")]
        except NotImplementedError as err:
            raise RemoteStorageError(f"{self.root}: listing is not supported for this scheme by mosaicml-streaming; "
                                     f"use s3://, gs:// or oci://, or write to a local folder") from err
        except Exception as err:
            raise RemoteStorageError(f"cannot list {self.where(rel)}: {_first_line(err)}") from err
        return [k[len(self._key_prefix):] for k in keys]

    def names(self, rel: str = "") -> list[str]:
        start = f"{rel}/" if rel else ""
        return sorted({k[len(start):].split("/")[0] for k in self._keys(rel) if k.startswith(start)})

    def subfolders(self, rel: str = "") -> list[str]:
        start = f"{rel}/" if rel else ""
        return sorted({k[len(start):].split("/")[0] for k in self._keys(rel)
                       if k.startswith(start) and "/" in k[len(start):]})

    def read_json(self, rel: str) -> dict[str, Any] | None:
        if rel not in self._keys(rel):
            return None
        local = tempfile.mkdtemp(prefix="read-", dir=self.local)
        path = os.path.join(local, os.path.basename(rel))
        try:
            download_file(self.where(rel), path)
            record = read_json(path)
        except Exception as err:
            if isinstance(err, ValueError):
                raise
            raise RemoteStorageError(f"cannot read {self.where(rel)}: {_first_line(err)}") from err
        finally:
            shutil.rmtree(local, ignore_errors=True)
        return record

    def write_json(self, rel: str, record: dict[str, Any]) -> None:
        """Upload ``record`` as ``rel`` (an object store replaces an object whole: readers never see half)."""
        path = os.path.join(self.local, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json_atomic(path, record)
        try:
            upload_staged(self.uploader, rel)
        except Exception as err:
            raise RemoteStorageError(f"cannot upload {self.where(rel)}: {_first_line(err)}") from err

    def remove(self, *rels: str) -> None:
        """Delete each of ``rels`` and every object under them (one listing for them all)."""
        listed = self._keys(rels[0]) if len(rels) == 1 else self._keys("")
        keys = [self._key_prefix + k for k in listed if any(k == r or k.startswith(f"{r}/") for r in rels)]
        if not keys:
            return
        client = s3_client(self.uploader)
        if client is None:
            raise RemoteStorageError(f"deleting {self.where(rels[0])} is not supported for this scheme here; delete "
                                     f"it with your storage provider's tool, then run again")
        bucket = urllib.parse.urlparse(self.root).netloc
        for start in range(0, len(keys), 1000):  # the most one DeleteObjects request takes
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})

    def reset_folder(self, rel: str) -> None:
        """Clear the staging copy of ``rel``; its remote objects are overwritten by the same names."""
        shutil.rmtree(os.path.join(self.local, rel), ignore_errors=True)

    def writer_out(self, rel: str) -> tuple[str, str]:
        return os.path.join(self.local, rel), self.where(rel)

    def close(self) -> None:
        shutil.rmtree(self.local, ignore_errors=True)


def open_store(root: str, staging: str | None = None) -> LocalStore | RemoteStore:
    """The store for an output root: a URL gives a ``RemoteStore`` staging in ``staging`` (default: temp)."""
    if not is_remote(root):
        return LocalStore(root[len("file://"):] if root.startswith("file://") else root)
    return RemoteStore(root, staging)
