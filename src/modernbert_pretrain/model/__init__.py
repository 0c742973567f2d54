"""The ModernBERT encoder in plain PyTorch (no Composer)."""

from .attention import BACKENDS, available_backends, resolve_backend
from .config import PRESETS, ModernBertConfig
from .modeling import (
    MaskedLMOutput,
    ModernBertForMaskedLM,
    ModernBertModel,
    positions_from_cu_seqlens,
    repad,
    unpad,
)
from .tiling import layer_map, tile_model, tile_state_dict

__all__ = [
    "BACKENDS", "PRESETS", "MaskedLMOutput", "ModernBertConfig", "ModernBertForMaskedLM", "ModernBertModel",
    "available_backends", "layer_map", "tile_model", "tile_state_dict", "positions_from_cu_seqlens", "repad", "resolve_backend", "unpad",
]
