"""Shared helpers for model tests: a perturbed tiny model and ragged batches."""

from __future__ import annotations

import torch

from modernbert_pretrain import ModernBertConfig, ModernBertForMaskedLM


def tiny_config(**overrides) -> ModernBertConfig:
    values = dict(attention_output_dropout=0.0, attn_backend="sdpa")
    values.update(overrides)
    return ModernBertConfig.from_preset("tiny", **values)


def perturbed_model(seed: int = 0, **overrides) -> ModernBertForMaskedLM:
    """Random init, then every weight moved so no norm weight is exactly 1 and no bias exactly 0."""
    torch.manual_seed(seed)
    model = ModernBertForMaskedLM(tiny_config(**overrides))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


def ragged_batch(lengths: list[int], vocab: int, seed: int = 0):
    """Padded (batch, max_len) ids and a 0/1 mask with right padding."""
    g = torch.Generator().manual_seed(seed)
    seq = max(lengths)
    ids = torch.randint(5, vocab, (len(lengths), seq), generator=g)
    mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    ids = ids.masked_fill(mask == 0, 2)
    return ids, mask
