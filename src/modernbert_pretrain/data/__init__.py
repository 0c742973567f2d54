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

# `tokenizer_info` is also the name of its submodule: importing that submodule would bind the package attribute
# to the module, so the function is bound here, eagerly (the module is light: numpy and this package's config).
from modernbert_pretrain.data.tokenizer_info import tokenizer_info as tokenizer_info

# Names resolve on first use (PEP 562): importing one light submodule, as data prep's spawned tokenizer
# workers do, must not load torch and streaming through this file (2.8 s per worker, measured).
_EXPORTS = {
    "BatchPipeline": "pipeline",
    "BatchSizeWarmup": "warmup",
    "BestFitPacker": "packing",
    "DataConfig": "config",
    "DataConfigError": "errors",
    "IGNORE_INDEX": "masking",
    "InputDataError": "errors",
    "LoaderStateView": "loader",
    "MLMMasker": "masking",
    "OutputExistsError": "errors",
    "PackedLoader": "loader",
    "Piece": "packing",
    "RankLayout": "source",
    "ResumeStateError": "errors",
    "ShardError": "errors",
    "ShardSource": "source",
    "StreamConfig": "config",
    "TokenizerInfo": "tokenizer_info",
    "TokenizerLoadError": "errors",
    "batch_size_schedule": "loader",
    "build_eval_loader": "loader",
    "build_train_loader": "loader",
    "config_dir_of": "loader",
    "make_microbatch": "collate",
    "parse_count": "config",
    "resolve_config": "tokenizer_info",
}

__all__ = sorted([*_EXPORTS, "tokenizer_info"])


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
