"""Typed configuration of the data pipeline: the ``data:`` section of a training YAML.

``DataConfig`` is self-contained: the training schema embeds it for training data and again for
held-out evaluation (with its own ``mask_prob``). Build one from a plain dict with
``DataConfig.from_dict``: unknown keys are rejected by name with the closest valid key suggested,
and values of the wrong type are rejected with the field named.

Paths (``local``, ``remote`` when it is a filesystem path, ``tokenizer`` when it is a folder) are
resolved relative to the directory of the config file, never the working directory: pass that
directory as ``config_dir`` to the loader factories.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from modernbert_pretrain.data.errors import DataConfigError
from modernbert_pretrain.schema import ConfigError, build, check_keys, coerce, read_count

_HASH_ALGOS = ("sha1", "sha224", "sha256", "sha384", "sha512", "md5", "xxh32", "xxh64", "xxh128", "xxh3_64",
               "xxh3_128", "blake2b", "blake2s", "sha3_224", "sha3_256", "sha3_384", "sha3_512")
_SHUFFLE_ALGOS = ("py1e", "py1br", "py1b", "py1s", "py2s", "naive")


def parse_count(value: int | str, field_name: str) -> int:
    """Parse a count such as ``50_000``, ``"50B"``, ``"1.7T"`` or ``"3e9"`` into an int."""
    if isinstance(value, bool):
        raise DataConfigError(f"{field_name}: expected a count (int or string like '50B'), got {value!r}")
    count = read_count(value)
    if count is not None:
        return count
    raise DataConfigError(
        f"{field_name}: cannot read {value!r} as a count; write an integer or a number with a "
        f"suffix K/M/B/T, e.g. '50B'"
    )


@dataclass
class StreamConfig:
    """One source of MDS shards in a mixture (maps to a ``streaming.Stream``)."""

    local: str
    """Directory of the MDS shards (or the local cache when ``remote`` is set). Relative paths are
    taken from the directory of the config file."""

    remote: str | None = None
    """Where to download shards from (``s3://``, ``gs://``, ``oci://``, a path, ...). None: the
    shards are already in ``local``."""

    split: str | None = None
    """Subdirectory of ``local``/``remote`` holding ``index.json``. None: use ``DataConfig.split``."""

    proportion: float | None = None
    """Relative share of this stream in every epoch. Either all streams set it or none does."""

    repeat: float | None = None
    """Upsample (> 1) or downsample (< 1) this stream by this factor. Not together with ``proportion``."""

    choose: int | None = None
    """Take exactly this many samples of this stream per epoch. Not together with ``proportion``."""

    name: str | None = None
    """Label used in messages and metrics. Default: the last component of ``local``."""

    def __post_init__(self) -> None:
        where = f"stream {self.label}"
        if not isinstance(self.local, str) or not self.local.strip():
            raise DataConfigError(f"{where}: `local` must be a non-empty directory path")
        if self.proportion is not None and (not math.isfinite(self.proportion) or self.proportion <= 0):
            raise DataConfigError(
                f"{where}: proportion must be a positive finite number, got {self.proportion!r}"
            )
        if self.repeat is not None and (not math.isfinite(self.repeat) or self.repeat <= 0):
            raise DataConfigError(f"{where}: repeat must be a positive number, got {self.repeat!r}")
        if self.choose is not None and self.choose <= 0:
            raise DataConfigError(f"{where}: choose must be a positive sample count, got {self.choose!r}")
        if self.proportion is not None and (self.repeat is not None or self.choose is not None):
            raise DataConfigError(
                f"{where}: set only one of proportion, repeat and choose (proportion is relative, "
                f"repeat/choose are absolute)"
            )

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return str(self.local).rstrip("/").split("/")[-1] or str(self.local)


@dataclass
class DataConfig:
    """Everything the data loader needs: sources, tokenizer, packing, masking and batch sizes."""

    tokenizer: str
    """Tokenizer folder (relative to the config file) or Hugging Face name. Supplies the special
    token ids (never masked) and the vocabulary for random replacements."""

    streams: list[StreamConfig] = field(default_factory=list)
    """Mixture of MDS sources. Leave empty and set ``local`` (and ``remote``) for a single source."""

    local: str | None = None
    """Single-source shortcut: directory of the MDS shards (relative to the config file)."""

    remote: str | None = None
    """Single-source shortcut: remote location to download shards from into ``local``."""

    split: str | None = None
    """Subdirectory holding ``index.json`` (e.g. ``train``, ``val``). None: shards are directly in
    ``local``."""

    seq_len: int = 1024
    """Slots per packed row. Longer documents are split into consecutive pieces of at most this
    many tokens; nothing is truncated."""

    device_microbatch_size: int = 96
    """Rows per microbatch on each device (one forward/backward pass)."""

    global_batch_size: int = 4608
    """Rows (sequences) per optimizer step summed over all ranks, after batch-size warmup. Must be
    a multiple of device_microbatch_size x world size."""

    batch_size_warmup_start: int | None = None
    """Global batch size at the first step of batch-size warmup. None: no warmup."""

    batch_size_warmup_tokens: int | str = 0
    """Slot tokens (rows x seq_len, all ranks) over which the batch grows from
    ``batch_size_warmup_start`` to ``global_batch_size``, e.g. ``50B``."""

    mask_prob: float = 0.3
    """Share of non-special tokens selected for the MLM loss."""

    mask_token_prob: float = 0.8
    """Of the selected tokens, the share replaced by [MASK]."""

    random_token_prob: float = 0.1
    """Of the selected tokens, the share replaced by a random non-special token (the rest stay)."""

    seed: int = 17
    """Seeds the shuffle of the sample order and the masks (per step, rank and microbatch)."""

    shuffle: bool = True
    """Shuffle the sample order (streaming's shuffle; deterministic given ``seed`` and the epoch)."""

    shuffle_algo: str = "py1e"
    """Streaming shuffle algorithm."""

    shuffle_block_size: int | None = None
    """Streaming shuffle block size in samples. None: streaming's default."""

    num_canonical_nodes: int | None = None
    """Streaming's canonical node count, which fixes the sample order. None: the number of nodes."""

    packing_buffer_docs: int = 1024
    """Pending documents (pieces) the best-fit packer chooses from. Larger packs tighter and uses
    more memory; the buffer is part of the loader state."""

    num_workers: int = 0
    """0: build batches in the training process. 1: build them in one background process that runs
    ``prefetch_steps`` ahead (packing is sequential per rank, so more processes cannot help)."""

    prefetch_steps: int = 2
    """With ``num_workers: 1``, how many steps the background process may build ahead."""

    validate_hash: str | None = None
    """Hash algorithm (e.g. ``xxh64``) to check every shard against ``index.json`` before first
    use. None: check file sizes only."""

    predownload: int | None = None
    """Samples to download ahead from ``remote``. None: 8 x device_microbatch_size."""

    cache_limit: int | str | None = None
    """Most bytes of downloaded shards to keep in ``local`` (e.g. ``100gb``). None: no limit."""

    download_timeout: float = 60.0
    """Seconds to wait for one shard download."""

    epoch_size: int | str | None = None
    """Samples per epoch over the whole mixture. None: every sample once (with proportions:
    streaming's default)."""

    def __post_init__(self) -> None:
        self._check_sources()
        self._check_sizes()
        self._check_masking()
        self._check_streaming()

    # ---- validation -------------------------------------------------------------------------

    def _check_sources(self) -> None:
        if not isinstance(self.tokenizer, str) or not self.tokenizer.strip():
            raise DataConfigError("data.tokenizer: give a tokenizer folder or Hugging Face name")
        if self.streams and (self.local is not None or self.remote is not None):
            raise DataConfigError(
                "data: set either `streams` (a mixture) or `local`/`remote` (one source), not both"
            )
        if not self.streams and self.local is None:
            raise DataConfigError("data: no data source; set `local` (MDS directory) or a `streams` list")
        if self.remote is not None and self.local is None:
            raise DataConfigError("data.local: required with `remote` (the directory shards download into)")
        with_proportion = [s.proportion is not None for s in self.streams]
        if any(with_proportion) and not all(with_proportion):
            missing = [s.label for s in self.streams if s.proportion is None]
            raise DataConfigError(
                f"data.streams: either every stream sets `proportion` or none does; missing on {missing}"
            )
        labels = [s.label for s in self.streams]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise DataConfigError(f"data.streams: duplicate stream names {dupes}; set distinct `name`s")

    def _check_sizes(self) -> None:
        for name in ("seq_len", "device_microbatch_size", "global_batch_size", "packing_buffer_docs",
                     "prefetch_steps"):
            if getattr(self, name) < 1:
                raise DataConfigError(f"data.{name}: must be >= 1, got {getattr(self, name)}")
        self.batch_size_warmup_tokens = parse_count(self.batch_size_warmup_tokens, "data.batch_size_warmup_tokens")
        start = self.batch_size_warmup_start
        if start is not None:
            if not 1 <= start <= self.global_batch_size:
                raise DataConfigError(
                    f"data.batch_size_warmup_start={start} must lie in [1, global_batch_size="
                    f"{self.global_batch_size}]"
                )
            if self.batch_size_warmup_tokens <= 0:
                raise DataConfigError(
                    "data.batch_size_warmup_tokens: must be > 0 when batch_size_warmup_start is set"
                )
        self.check_world_size(1)
        if self.num_workers not in (0, 1):
            raise DataConfigError(
                f"data.num_workers={self.num_workers}: use 0 (in process) or 1 (one background "
                f"process); packing is sequential per rank so more processes cannot help"
            )

    def _check_masking(self) -> None:
        if not 0.0 < self.mask_prob < 1.0:
            raise DataConfigError(f"data.mask_prob: must be in (0, 1), got {self.mask_prob}")
        for name in ("mask_token_prob", "random_token_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DataConfigError(f"data.{name}: must be in [0, 1], got {getattr(self, name)}")
        if self.mask_token_prob + self.random_token_prob > 1.0 + 1e-9:
            raise DataConfigError(
                f"data.mask_token_prob + data.random_token_prob = "
                f"{self.mask_token_prob + self.random_token_prob} exceeds 1"
            )

    def _check_streaming(self) -> None:
        if self.seed < 0:
            raise DataConfigError(f"data.seed: must be >= 0, got {self.seed}")
        if self.shuffle_algo not in _SHUFFLE_ALGOS:
            raise DataConfigError(_choice_message("data.shuffle_algo", self.shuffle_algo, _SHUFFLE_ALGOS))
        if self.validate_hash is not None and self.validate_hash not in _HASH_ALGOS:
            raise DataConfigError(_choice_message("data.validate_hash", self.validate_hash, _HASH_ALGOS))
        if self.epoch_size is not None:
            self.epoch_size = parse_count(self.epoch_size, "data.epoch_size")
            if self.epoch_size <= 0:
                raise DataConfigError(f"data.epoch_size: must be > 0, got {self.epoch_size}")
        for name in ("shuffle_block_size", "num_canonical_nodes", "predownload"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise DataConfigError(f"data.{name}: must be >= 1 or null, got {value}")
        if self.download_timeout <= 0:
            raise DataConfigError(f"data.download_timeout: must be > 0, got {self.download_timeout}")

    def check_world_size(self, world_size: int) -> None:
        """The full batch must be whole microbatches on every rank. The warmup's first size need not be:
        `warmup_start_at` rounds it to whole microbatches at each world size."""
        unit = self.device_microbatch_size * world_size
        if self.global_batch_size % unit:
            raise DataConfigError(
                f"data.global_batch_size={self.global_batch_size} is not a multiple of "
                f"data.device_microbatch_size={self.device_microbatch_size} x world size {world_size} = {unit} "
                f"(not divisible by device_microbatch_size x world_size, so some rank would run a partial "
                f"microbatch); change one of them"
            )

    def warmup_start_at(self, world_size: int) -> int | None:
        """The batch-size warmup's first global batch on ``world_size`` ranks: ``batch_size_warmup_start``
        rounded up to whole microbatches on every rank (at most ``global_batch_size``), so one recipe runs at
        any world size that divides its full batch. None: no warmup."""
        start = self.batch_size_warmup_start
        if start is None:
            return None
        unit = self.device_microbatch_size * world_size
        return min(-(-start // unit) * unit, self.global_batch_size)

    # ---- derived views ----------------------------------------------------------------------

    def stream_list(self) -> list[StreamConfig]:
        """The sources as a list of streams (the single-source shortcut becomes one stream)."""
        if self.streams:
            return list(self.streams)
        return [StreamConfig(local=str(self.local), remote=self.remote)]

    def with_overrides(self, **changes: Any) -> DataConfig:
        """A validated copy with some fields replaced."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def check_overrides(cls, values: dict[str, Any], where: str) -> dict[str, Any]:
        """A partial data config (some fields, e.g. ``eval.data``): unknown keys and wrong types are
        rejected by name, values come back converted to the fields' types."""
        if not isinstance(values, dict):
            raise DataConfigError(f"{where}: expected a mapping of data fields, got {values!r}")
        hints = typing.get_type_hints(cls)
        fields = [f.name for f in dataclasses.fields(cls) if f.init]
        try:
            check_keys(values, fields, where)
            return {key: coerce(value, hints[key], f"{where}.{key}") for key, value in values.items()}
        except DataConfigError:
            raise
        except ConfigError as err:
            raise DataConfigError(str(err)) from err

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "data") -> DataConfig:
        """Build from a plain mapping, rejecting unknown keys and values of the wrong type."""
        if not isinstance(data, dict):
            raise DataConfigError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
        try:
            return build(cls, data, where)
        except DataConfigError:
            raise
        except ConfigError as err:
            raise DataConfigError(str(err)) from err


# ---- generic dict -> dataclass with type checks ----------------------------------------------


def _choice_message(name: str, value: Any, choices: typing.Iterable[str]) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{name}: {value!r} is not one of {choices}{hint}"
