"""Weight initialization, in one place (Megatron style, as in the ModernBERT recipe)."""

from __future__ import annotations

import math

from torch import nn

from .config import ModernBertConfig


def init_stds(config: ModernBertConfig) -> dict[str, float]:
    """Named standard deviations: input projections and embeddings use `in`; projections that write
    into the residual stream (attn.Wo, mlp.Wo), the head and the decoder use `out`."""
    return {
        "in": config.init_std,
        "embedding": config.init_std,
        "out": config.init_std / math.sqrt(2.0 * config.num_hidden_layers),
    }


def _trunc_normal(weight, std: float, cutoff: float) -> None:
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-cutoff * std, b=cutoff * std)


def initialize_weights(model: nn.Module, config: ModernBertConfig) -> None:
    """Initialize every parameter of a ModernBertForMaskedLM in place."""
    stds = init_stds(config)
    cutoff = config.init_cutoff_factor
    roles = {
        "tok_embeddings": "embedding",
        "Wqkv": "in",
        "Wi": "in",
        "Wo": "out",
        "dense": "out",
    }
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, (nn.Linear, nn.Embedding)) and leaf in roles:
            _trunc_normal(module.weight, stds[roles[leaf]], cutoff)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    decoder = getattr(model, "decoder", None)
    if decoder is not None and not config.tie_word_embeddings:
        _trunc_normal(decoder.weight, stds["out"], cutoff)
    if decoder is not None and decoder.bias is not None:
        nn.init.zeros_(decoder.bias)
