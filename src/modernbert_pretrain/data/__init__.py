"""Data pipeline: MDS shards -> best-fit packing -> MLM masking -> unpadded microbatches.

Stages (each usable and testable alone, each with its own resumable state):

- ``ShardSource``: this rank's documents from StreamingDataset (local or remote streams, mixtures).
- ``BestFitPacker``: documents into rows of ``seq_len`` slots; long documents split, never cut.
- ``MLMMasker``: 80/10/10 masking that never touches special tokens.
- ``make_microbatch``: rows -> flat ``input_ids``/``labels`` with ``cu_seqlens`` and ``max_seqlen``.

``build_train_loader`` / ``build_eval_loader`` assemble them into a ``PackedLoader`` with exact,
constant-time resume; ``BatchSizeWarmup`` is the batch-size schedule over the slot-token clock.
This package imports neither the model nor Composer.
"""

from modernbert_pretrain.data.collate import make_microbatch
from modernbert_pretrain.data.config import DataConfig, StreamConfig, parse_count
from modernbert_pretrain.data.errors import (
    DataConfigError,
    InputDataError,
    OutputExistsError,
    ResumeStateError,
    ShardError,
    TokenizerLoadError,
)
from modernbert_pretrain.data.loader import (
    LoaderStateView,
    PackedLoader,
    batch_size_schedule,
    build_eval_loader,
    build_train_loader,
    config_dir_of,
)
from modernbert_pretrain.data.masking import IGNORE_INDEX, MLMMasker
from modernbert_pretrain.data.packing import BestFitPacker, Piece
from modernbert_pretrain.data.pipeline import BatchPipeline
from modernbert_pretrain.data.source import RankLayout, ShardSource
from modernbert_pretrain.data.tokenizer_info import TokenizerInfo, resolve_config, tokenizer_info
from modernbert_pretrain.data.warmup import BatchSizeWarmup

__all__ = [
    "IGNORE_INDEX",
    "BatchPipeline",
    "BatchSizeWarmup",
    "BestFitPacker",
    "DataConfig",
    "DataConfigError",
    "InputDataError",
    "LoaderStateView",
    "MLMMasker",
    "OutputExistsError",
    "PackedLoader",
    "Piece",
    "RankLayout",
    "ResumeStateError",
    "ShardError",
    "ShardSource",
    "StreamConfig",
    "TokenizerInfo",
    "TokenizerLoadError",
    "batch_size_schedule",
    "build_eval_loader",
    "build_train_loader",
    "config_dir_of",
    "make_microbatch",
    "parse_count",
    "resolve_config",
    "tokenizer_info",
]
