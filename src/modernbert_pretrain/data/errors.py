"""Exceptions of the data pipeline.

Each one subclasses the built-in exception a caller would expect (ValueError for bad
configuration or input, RuntimeError for broken shards), so generic handlers keep working, and
each message names the file, field or shard at fault and how to fix it.
"""

from __future__ import annotations

from modernbert_pretrain.schema import ConfigError


class DataConfigError(ConfigError):
    """A field of the data configuration is missing, misspelled, mistyped or out of range."""


class InputDataError(ValueError):
    """An input file for data preparation is missing, unreadable, empty or malformed."""


class TokenizerLoadError(ConfigError):
    """A tokenizer could not be loaded or lacks a token the pipeline needs."""


class TokenizerMismatchError(DataConfigError):
    """Shards were tokenized with another tokenizer than ``data.tokenizer``."""


class OutputExistsError(FileExistsError):
    """An output directory already holds shards and ``overwrite`` was not requested."""


class ShardError(RuntimeError):
    """A shard is missing, truncated, corrupt, or does not match the tokenizer."""


class ResumeStateError(ConfigError):
    """A loader state cannot be restored into this loader (other data, rank or world size)."""


class PartsError(ValueError):
    """A part folder of a multi-part conversion is missing, unfinished, or from another plan."""


class RemoteStorageError(ValueError):
    """An object-store output is unreachable, of an unknown scheme, or an operation on it is unsupported."""
