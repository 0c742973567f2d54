"""Stage 1 of the loader: this rank's documents, read from MDS shards through StreamingDataset.

StreamingDataset supplies the streams (local or remote, with download, caching and hash checks),
mixture weighting, the shuffle and the elastic partition of every epoch over nodes and ranks. We
walk this rank's part of the epoch with our own cursor instead of iterating the dataset, because a
packing loader consumes a different number of documents on every rank: streaming's resume point is
one global sample count, which cannot describe where each rank stands. With the cursor, resuming is
"recompute the epoch's order, jump to the cursor": no sample is read again, whatever the step.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from modernbert_pretrain.data.config import DataConfig, StreamConfig
from modernbert_pretrain.data.errors import DataConfigError, ResumeStateError, ShardError
from modernbert_pretrain.data.shards import (
    INDEX_NAME,
    TOKEN_COLUMN,
    check_shard_file,
    read_index,
    shard_file_path,
    token_column_problem,
)
from modernbert_pretrain.data.shm import registering, track
from modernbert_pretrain.data.shm import release_shared_memory as release_blocks
from modernbert_pretrain.data.streaming_adapter import (
    check_version,
    epoch_sample_ids,
    locate,
    missing_shard_files,
    partition,
    stream_of_shard,
)

RESUME_FIX = ("set it back to resume this run, or start a new phase from this checkpoint: a new save.folder "
              "with load_from.path set to it (the weights carry over, the data order starts afresh)")


@dataclass(frozen=True)
class RankLayout:
    """Where this process sits among the ranks that share the data."""

    rank: int
    world_size: int
    ranks_per_node: int

    @property
    def num_nodes(self) -> int:
        return self.world_size // self.ranks_per_node

    @classmethod
    def from_args(cls, rank: int, world_size: int) -> RankLayout:
        """Use the given rank and world size; node layout from LOCAL_WORLD_SIZE when launched."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must lie in [0, world_size={world_size})")
        env_world, env_rank = os.environ.get("WORLD_SIZE"), os.environ.get("RANK")
        if env_world is not None and int(env_world) != world_size:
            raise ValueError(
                f"world_size={world_size} disagrees with the environment WORLD_SIZE={env_world} that "
                f"streaming reads; pass the launcher's values"
            )
        if env_world is not None and env_rank is not None and int(env_rank) != rank:
            raise ValueError(f"rank={rank} disagrees with the environment RANK={env_rank}")
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world_size)) if env_world is not None else world_size
        if per_node < 1 or world_size % per_node:
            raise ValueError(f"LOCAL_WORLD_SIZE={per_node} does not divide world_size={world_size}")
        return cls(rank=rank, world_size=world_size, ranks_per_node=per_node)


def _make_stream(stream: StreamConfig, cfg: DataConfig):
    from streaming import Stream

    return Stream(local=stream.local, remote=stream.remote, split=stream.split or cfg.split,
                  proportion=stream.proportion, repeat=stream.repeat, choose=stream.choose,
                  download_timeout=cfg.download_timeout, validate_hash=cfg.validate_hash)


def _check_local_index(stream: StreamConfig, split: str | None) -> str:
    """Fail early, naming the file, when a local-only stream has no readable MDS index."""
    path = os.path.join(stream.local, split or "", INDEX_NAME)
    if stream.remote is not None:
        return path
    if not os.path.isfile(path):
        raise ShardError(
            f"stream {stream.label}: no MDS index at {path}; write shards there with "
            f"data_prep/tokenize_to_mds.py --output {os.path.dirname(path)} (or fix `local`/`split`)"
        )
    try:
        index = read_index(path)
    except ShardError as err:
        raise ShardError(f"stream {stream.label}: {err}") from err
    for info in index["shards"]:
        problem = token_column_problem(info)
        if problem is not None:
            raise ShardError(
                f"stream {stream.label}: shard {info.get('raw_data', {}).get('basename')} in {path} {problem}; "
                f"write shards with data_prep/tokenize_to_mds.py"
            )
    return path


def _with_prefix_retries(build, attempts: int = 5):
    """``build()``, retried when streaming's shared-memory prefix was taken at the same moment by a job that does
    not hold our prefix lock (data/shm.py, `registering`): streaming picks the first free ``/dev/shm/<prefix>_*``
    number and then creates it, and the slower of two such processes fails with FileExistsError. A new attempt
    sees the other's registration and takes the next number. Only without torch.distributed: there every rank of
    the node takes part in streaming's barriers, and a retry on one rank alone would leave them out of step."""
    import random
    import time

    import torch.distributed as tdist

    for _ in range(attempts - 1):
        try:
            return build()
        except FileExistsError:
            if tdist.is_available() and tdist.is_initialized():
                raise
            time.sleep(random.uniform(0.05, 0.3))
    return build()


class ShardSource:
    """Documents of this rank, epoch after epoch (``finite=False``) or for one epoch.

    ``next_doc()`` returns ``(sample_id, tokens)``; ``read(sample_id)`` re-reads one sample (used to
    restore the packer's buffer). State: epoch and cursor into this rank's order of the epoch.
    """

    def __init__(self, cfg: DataConfig, *, layout: RankLayout, vocab_size: int, finite: bool = False,
                 first_epoch: int = 0) -> None:
        self.cfg = cfg
        self.layout = layout
        self.vocab_size = vocab_size
        self.finite = finite
        self.streams = cfg.stream_list()
        self._index_paths = [_check_local_index(s, s.split or cfg.split) for s in self.streams]
        self.dataset = self._build_dataset()
        self._has_remote = any(s.remote is not None for s in self.streams)
        self._world = self._partition_world()
        self.epoch = first_epoch
        self.cursor = 0
        self._ids: np.ndarray | None = None
        self._verified: set[int] = set()
        self._prefetch: ThreadPoolExecutor | None = None
        self._prefetch_futures: dict[int, Future] = {}  # shard id -> its background download
        self._prefetched_upto = 0
        self.reads = 0
        """Samples read so far (tests check that resuming reads only the packer's buffer)."""
        self.empty_docs = 0
        """Samples with no tokens, skipped (the only thing ever skipped)."""

    # ---- construction ------------------------------------------------------------------------

    def _build_dataset(self):
        from streaming import StreamingDataset

        check_version()
        cfg = self.cfg
        ncn = cfg.num_canonical_nodes
        if ncn is None:
            ncn = self.layout.num_nodes * (64 if cfg.shuffle_algo in ("py1s", "py2s") else 1)
        self.num_canonical_nodes = ncn
        def build():
            return StreamingDataset(
                streams=[_make_stream(s, cfg) for s in self.streams], epoch_size=cfg.epoch_size,
                predownload=cfg.predownload or 8 * cfg.device_microbatch_size, cache_limit=cfg.cache_limit,
                shuffle=cfg.shuffle, shuffle_algo=cfg.shuffle_algo, shuffle_seed=cfg.seed,
                shuffle_block_size=cfg.shuffle_block_size, num_canonical_nodes=ncn, batch_size=1,
                validate_hash=cfg.validate_hash)

        try:
            with registering(local_leader=self.layout.rank % self.layout.ranks_per_node == 0):
                dataset = _with_prefix_retries(build)
        except (ValueError, TypeError) as err:
            labels = [s.label for s in self.streams]
            raise DataConfigError(f"data.streams {labels}: streaming rejected the sources: {err}") from err
        self.shm_prefix = track(dataset)
        """Streaming's shared-memory prefix of this dataset (``/dev/shm/<prefix:06>_*``)."""
        return dataset

    def _partition_world(self):
        layout = self.layout
        return partition(self.dataset, num_nodes=layout.num_nodes, ranks_per_node=layout.ranks_per_node,
                         rank=layout.rank)

    # ---- the order of an epoch ---------------------------------------------------------------

    def _epoch_ids(self, epoch: int) -> np.ndarray:
        """This rank's sample ids of ``epoch`` in streaming's order. Shape (n,)."""
        ds = self.dataset
        ids = epoch_sample_ids(ds, self._world, epoch)
        if ids.size == 0:
            raise DataConfigError(
                f"rank {self.layout.rank} of {self.layout.world_size} gets no samples in epoch {epoch}: "
                f"the data has {ds.num_samples} samples; use more data or fewer ranks"
            )
        return ids

    def ids_for_epoch(self, epoch: int) -> np.ndarray:
        """Public view of this rank's order for one epoch (tests compare ranks with it)."""
        return self._epoch_ids(epoch)

    # ---- reading -----------------------------------------------------------------------------

    def _verify_shard(self, shard_id: int) -> None:
        ds = self.dataset
        pending = self._prefetch_futures.pop(shard_id, None)
        if pending is not None:
            pending.result()  # wait for the background download; re-raises its error, naming the shard
        self._check_local_copy(shard_id)
        try:
            ds.prepare_shard(shard_id)
        except Exception as err:
            raise ShardError(f"cannot prepare shard {shard_file_path(ds.shards[shard_id])}: {err}") from err
        check_shard_file(ds.shards[shard_id], self.cfg.validate_hash)
        self._verified.add(shard_id)

    def _check_local_copy(self, shard_id: int) -> None:
        """A shard of a stream without `remote` must be on disk (streaming would ask for a remote to fetch it)."""
        i = stream_of_shard(self.dataset, shard_id)
        stream = self.streams[i]
        if stream.remote is not None:
            return
        missing = missing_shard_files(self.dataset.shards[shard_id])
        if missing:
            index = self._index_paths[i]
            raise ShardError(
                f"shard {missing[0]} is missing: the local copy of stream {stream.label} is incomplete ({index} "
                f"lists the file). Copy the dataset again, or re-create it with data_prep/tokenize_to_mds.py; "
                f"data_prep/validate_dataset.py {os.path.dirname(index)} lists every missing or damaged shard")

    def read(self, sample_id: int) -> np.ndarray:
        """Tokens of one sample. Shape (n,), unsigned ints."""
        ds = self.dataset
        shard_id, index = locate(ds, sample_id)
        if shard_id not in self._verified:
            self._verify_shard(shard_id)
        shard = ds.shards[shard_id]
        try:
            sample = ds.get_item(sample_id) if self._has_remote else shard[index]
            tokens = sample[TOKEN_COLUMN]
        except Exception as err:
            raise ShardError(
                f"cannot read sample {index} of shard {shard_file_path(shard)}: {err}; check it with "
                f"data_prep/validate_dataset.py"
            ) from err
        self.reads += 1
        self._check_tokens(tokens, shard, index)
        return tokens

    def _check_tokens(self, tokens: Any, shard: Any, index: int) -> None:
        where = f"shard {shard_file_path(shard)}: sample {index}"
        if not isinstance(tokens, np.ndarray) or not np.issubdtype(tokens.dtype, np.integer):
            kind = tokens.dtype if isinstance(tokens, np.ndarray) else type(tokens).__name__
            raise ShardError(f"{where} stores column '{TOKEN_COLUMN}' as {kind}, expected token ids as an integer "
                             f"ndarray; write shards with data_prep/tokenize_to_mds.py")
        if tokens.ndim != 1:
            raise ShardError(f"{where} has shape {tokens.shape}, expected 1-D")
        if not tokens.size:
            return
        bad = int(tokens.max())
        if bad < self.vocab_size and np.issubdtype(tokens.dtype, np.signedinteger):
            bad = int(tokens.min())
        if not 0 <= bad < self.vocab_size:
            raise ShardError(
                f"{where} has token id {bad} outside the vocabulary [0, {self.vocab_size}) of data.tokenizer; "
                f"the shards were made with another tokenizer: set data.tokenizer to theirs or re-tokenize with "
                f"data_prep/tokenize_to_mds.py"
            )

    def next_doc(self) -> tuple[int, np.ndarray] | None:
        """The next non-empty document of this rank, or None at the end of a finite source."""
        while True:
            if self._ids is None:
                self._ids = self._epoch_ids(self.epoch)
                self._prefetched_upto = self.cursor
            if self.cursor >= self._ids.size:
                if self.finite:
                    return None
                self.epoch, self.cursor, self._ids = self.epoch + 1, 0, None
                continue
            if self._has_remote:
                self._prefetch_ahead()
            sample_id = int(self._ids[self.cursor])
            self.cursor += 1
            tokens = self.read(sample_id)
            if tokens.size == 0:
                self.empty_docs += 1
                continue
            return sample_id, tokens

    def _prefetch_ahead(self) -> None:
        """Download the shards of the next ``predownload`` samples in the background."""
        for shard_id, future in list(self._prefetch_futures.items()):
            if future.done():
                del self._prefetch_futures[shard_id]
                future.result()  # re-raise a failed download here, naming its shard
        ahead = self.dataset.predownload
        if self.cursor + ahead // 2 < self._prefetched_upto:
            return
        if self._prefetch is None:
            self._prefetch = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shard-prefetch")
        end = min(self.cursor + ahead, self._ids.size)
        shard_ids = {locate(self.dataset, int(s))[0] for s in self._ids[self._prefetched_upto:end]}
        for shard_id in sorted(shard_ids - self._verified - set(self._prefetch_futures)):
            self._prefetch_futures[shard_id] = self._prefetch.submit(self._download, shard_id)
        self._prefetched_upto = end

    def _download(self, shard_id: int) -> None:
        try:
            self.dataset.prepare_shard(shard_id, blocking=False)
        except Exception as err:
            raise ShardError(f"cannot download shard {shard_file_path(self.dataset.shards[shard_id])}: {err}") from err

    # ---- state -------------------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        """What must be equal for a saved cursor to mean the same documents."""
        digests = []
        for path in self._index_paths:
            with open(path, "rb") as f:
                digests.append(hashlib.sha1(f.read()).hexdigest())
        cfg = self.cfg
        return {
            "indexes": digests,
            "weights": [[s.proportion, s.repeat, s.choose] for s in self.streams],
            "order": [cfg.seed, cfg.shuffle, cfg.shuffle_algo, self.dataset.shuffle_block_size,
                      self.num_canonical_nodes, cfg.epoch_size, cfg.split],
            "layout": [self.layout.rank, self.layout.world_size, self.layout.ranks_per_node],
        }

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "cursor": self.cursor, "fingerprint": self.fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine, theirs = self.fingerprint(), state["fingerprint"]
        if len(mine["indexes"]) != len(theirs["indexes"]):
            raise ResumeStateError(
                f"cannot resume the data loader: the data mix changed: the checkpoint read "
                f"{len(theirs['indexes'])} stream(s), data.streams now has {len(mine['indexes'])} "
                f"({[s.label for s in self.streams]}); {RESUME_FIX}"
            )
        reasons = {
            "indexes": "the shards (index.json) of the streams changed",
            "weights": "the data mix changed: stream proportion/repeat/choose",
            "order": "seed, shuffle, num_canonical_nodes, epoch_size or split changed",
            "layout": "rank or world size changed (exact resume needs the same ranks)",
        }
        for key, reason in reasons.items():
            if json.dumps(mine[key]) != json.dumps(theirs[key]):
                raise ResumeStateError(
                    f"cannot resume the data loader: {reason} since the checkpoint "
                    f"(saved {theirs[key]}, now {mine[key]}); {RESUME_FIX}"
                )
        self.epoch, self.cursor, self._ids = int(state["epoch"]), int(state["cursor"]), None

    def close(self, release_shared_memory: bool = False) -> None:
        """Stop prefetching. ``release_shared_memory``: also unlink the dataset's shared memory
        now (for a process that exits without running atexit handlers, like a worker process)."""
        if self._prefetch is not None:
            self._prefetch.shutdown(wait=True, cancel_futures=True)
            self._prefetch = None
        if release_shared_memory:
            release_blocks(self.dataset)
