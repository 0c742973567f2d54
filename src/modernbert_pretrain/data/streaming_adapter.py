"""Every use of mosaicml-streaming's private parts, in one module, behind a version guard.

The source (``source.py``) walks this rank's share of an epoch with its own cursor instead of iterating
the dataset, so it needs streaming's partition of an epoch without its iterator; the data prep writes to
object storage with streaming's uploaders and watches its shard writer's uploads. Streaming 0.13.0 has no
public API for these; what this module uses, and what tests/test_streaming_adapter.py pins:

- ``streaming.base.world.World(num_nodes, ranks_per_node, workers_per_rank, worker)`` with its ``node`` and
  ``rank_of_node``: where a rank sits, as streaming's partition sees it;
- ``StreamingDataset._set_shuffle_block_size(world)``: fills in the default shuffle block size, which the
  dataset otherwise sets only when its iterator starts;
- ``streaming.base.batching.generate_work(batching_method, dataset, world, epoch, sample_in_epoch)``: the
  sample ids of an epoch as an array (nodes, ranks per node, workers per rank, batches, batch size), -1 for
  padding;
- ``StreamingDataset.spanner[sample_id] -> (shard_id, index_in_shard)``, and ``StreamingDataset.stream_per_shard``
  (the stream index of each shard);
- a shard reader's ``dirname``, ``split`` and ``file_pairs`` (raw file info: ``basename``, ``bytes``,
  ``hashes``), and ``streaming.base.hashing.get_hash``: to name a shard's file and check it;
- ``streaming.base.shared.memory.SharedMemory`` objects held (up to three attributes deep) by a dataset,
  found by walking its attributes; releasing one relies on its ``cleanup`` (registered with ``atexit``) and
  its ``created_shms`` / ``opened_shms`` lists;
- ``streaming.base.storage.download.CloudDownloader.direct_download(remote, local[, timeout])``: one file
  from a remote, for the tokenizer fingerprint that sits beside a remote's index and the records of a
  remote data prep output (``download_file``);
- ``StreamingDataset._shm_prefix_int``: the number in the names of the dataset's shared-memory blocks;
- ``streaming.base.storage.upload.UPLOADERS`` (URL scheme -> uploader class name): the schemes a data prep
  output may use (``uploader_schemes``);
- ``streaming.base.storage.upload.CloudUploader.get((local, remote), exist_ok=True)`` and the uploader it
  returns: ``upload_file(rel)`` (uploads ``local/rel`` and removes it), ``list_objects(prefix)`` (full keys
  under ``prefix``, relative to the remote's bucket; ``NotImplementedError`` where a scheme has no
  listing) and, for S3, its boto3 client ``s3`` (``make_uploader``, ``upload_staged``, ``list_remote``,
  ``s3_client``);
- a shard writer's (``MDSWriter``) ``event`` (a ``threading.Event`` set when an upload failed), ``local``
  (the folder it writes shards into before they upload) and ``shards`` (one entry per finished shard):
  to bound staging and name an upload failure (``writer_upload_failed``, ``writer_staging_dir``,
  ``writer_shard_count``).

An upgrade of streaming fails in ``check_version`` with one message, before any of these is touched: the
loader's source, a remote data prep store and a shard writer with a remote call it before using them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

STREAMING_VERSIONS = ("0.13.0",)
"""Streaming releases whose private parts above were checked."""


class StreamingVersionError(RuntimeError):
    """The installed streaming is not one whose private parts this adapter was written against."""


def check_version() -> None:
    import streaming

    if streaming.__version__ not in STREAMING_VERSIONS:
        raise StreamingVersionError(
            f"mosaicml-streaming {streaming.__version__} is installed, but the data loader relies on private parts "
            f"of streaming {', '.join(STREAMING_VERSIONS)} (see data/streaming_adapter.py); install "
            f"mosaicml-streaming=={STREAMING_VERSIONS[-1]} or port the adapter and its tests")


def partition(dataset: Any, *, num_nodes: int, ranks_per_node: int, rank: int) -> Any:
    """Streaming's view of this rank (one worker per rank), with the dataset's shuffle block size set."""
    from streaming.base.world import World

    world = World(num_nodes=num_nodes, ranks_per_node=ranks_per_node, workers_per_rank=1, worker=rank)
    dataset._set_shuffle_block_size(world)
    return world


def epoch_sample_ids(dataset: Any, world: Any, epoch: int) -> np.ndarray:
    """This rank's sample ids of ``epoch`` in streaming's order, padding removed. Shape (n,)."""
    from streaming.base.batching import generate_work

    # work: (nodes, ranks per node, workers per rank = 1, batches, batch size = 1)
    work = generate_work(dataset.batching_method, dataset, world, epoch, 0)
    ids = np.ascontiguousarray(work[world.node, world.rank_of_node].reshape(-1))
    return ids[ids >= 0]  # -1 marks padding of the partition


def locate(dataset: Any, sample_id: int) -> tuple[int, int]:
    """(shard id, index within the shard) of a global sample id."""
    shard_id, index = dataset.spanner[sample_id]
    return int(shard_id), int(index)


def shared_memory_of(dataset: Any) -> list[Any]:
    """Every streaming SharedMemory held (up to three attributes deep) by ``dataset``."""
    from streaming.base.shared.memory import SharedMemory

    found: dict[int, Any] = {}

    def visit(obj: Any, depth: int) -> None:
        if isinstance(obj, SharedMemory):
            found[id(obj)] = obj
        elif depth and hasattr(obj, "__dict__"):
            for value in list(vars(obj).values()):
                visit(value, depth - 1)

    visit(dataset, 3)
    return list(found.values())


def shard_raw_files(shard: Any) -> list[tuple[str, int, dict[str, str]]]:
    """(path, size in bytes, recorded hashes) of each raw data file of a streaming shard reader."""
    import os

    return [(os.path.join(shard.dirname, shard.split or "", raw.basename), int(raw.bytes), dict(raw.hashes or {}))
            for raw, _ in shard.file_pairs]


def stream_of_shard(dataset: Any, shard_id: int) -> int:
    """Index (in the dataset's streams) of the stream that a shard belongs to."""
    return int(dataset.stream_per_shard[shard_id])


def missing_shard_files(shard: Any) -> list[str]:
    """Raw data files of a shard that are absent with no compressed copy beside them to unpack."""
    import os

    base = os.path.join(shard.dirname, shard.split or "")
    return [os.path.join(base, raw.basename) for raw, zipped in shard.file_pairs
            if not os.path.isfile(os.path.join(base, raw.basename))
            and not (zipped is not None and os.path.isfile(os.path.join(base, zipped.basename)))]


def data_hash(algo: str, data: bytes) -> str:
    """Streaming's digest of ``data`` with ``algo`` (the form index.json records)."""
    from streaming.base.hashing import get_hash

    return get_hash(algo, data)


def release_block(shm: Any) -> None:
    """Unlink the blocks a SharedMemory created, close the ones it attached to, and forget them, so that its
    atexit handler (dropped too) cannot unlink a block of the same name that another job opens later."""
    import atexit

    shm.cleanup()
    atexit.unregister(shm.cleanup)
    shm.created_shms, shm.opened_shms = [], []


def shm_prefix(dataset: Any) -> int:
    """The prefix of a dataset's shared-memory block names (``/dev/shm/<prefix:06>_*``); -1 when unknown."""
    return int(getattr(dataset, "_shm_prefix_int", -1))


def download_file(remote: str, local: str, timeout: float | None = None) -> None:
    """Copy one file from a streaming remote (s3://, gs://, a path, ...) to ``local``; raises when it is missing.
    ``timeout`` None keeps streaming's own default."""
    from streaming.base.storage.download import CloudDownloader

    if timeout is None:
        CloudDownloader.direct_download(remote, local)
    else:
        CloudDownloader.direct_download(remote, local, timeout)


def uploader_schemes() -> tuple[str, ...]:
    """The keys of streaming's uploader table: URL schemes (``s3``, ``gs``, ...), ``''`` for a local folder,
    and ``dbfs:/Volumes``."""
    from streaming.base.storage.upload import UPLOADERS

    return tuple(UPLOADERS)


def make_uploader(local: str, remote: str) -> Any:
    """Streaming's uploader from ``local`` (which may already hold files) to ``remote``; raises what the
    storage client raises when the remote cannot be reached (S3 checks its bucket here)."""
    from streaming.base.storage.upload import CloudUploader

    return CloudUploader.get((local, remote), exist_ok=True)


def upload_staged(uploader: Any, rel: str) -> None:
    """Upload ``rel`` (relative to the uploader's local folder) to the same path under its remote, then
    remove the local copy."""
    uploader.upload_file(rel)


def list_remote(uploader: Any, prefix: str) -> list[str]:
    """Keys under ``prefix`` (relative to the remote) as the bucket names them; raises NotImplementedError
    for a scheme streaming cannot list."""
    return list(uploader.list_objects(prefix) or [])


def s3_client(uploader: Any) -> Any:
    """The boto3 client of an S3 uploader; None for another scheme."""
    return getattr(uploader, "s3", None)


def writer_upload_failed(writer: Any) -> bool:
    """Whether an upload of a shard writer's files failed (the writer logged it; its next call raises)."""
    return writer.event.is_set()


def writer_staging_dir(writer: Any) -> str:
    """The folder a shard writer writes shards into (before upload, when it has a remote)."""
    return writer.local


def writer_shard_count(writer: Any) -> int:
    """Shards a writer has finished (flushed) so far."""
    return len(writer.shards)
