"""Learning-rate schedules on the token clock (sequences x seq_len, the same on every rank)."""

from __future__ import annotations

import math

from ..config import SchedulerConfig


def lr_multiplier(tokens: int, cfg: SchedulerConfig, max_tokens: int) -> float:
    """Fraction of the peak LR after `tokens` tokens of this phase: linear warmup, a stable part
    (with optional step drops), then a linear, cosine or 1-sqrt decay that ends at max_tokens."""
    if cfg.warmup_tokens > 0 and tokens < cfg.warmup_tokens:
        return tokens / cfg.warmup_tokens
    mult = 1.0
    for drop in cfg.drops:
        if tokens >= drop.at_tokens:
            mult = drop.lr_fraction
    decay = cfg.decay
    if decay is None:
        return mult
    length = cfg.decay_span(max_tokens)
    start = max_tokens - length
    if tokens < start:
        return mult
    progress = min(1.0, (tokens - start) / max(length, 1))
    if decay.shape == "linear":
        shape = 1.0 - progress
    elif decay.shape == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:  # 1-sqrt, the ModernBERT anneal
        shape = 1.0 - math.sqrt(progress)
    final = decay.final_lr_fraction
    return mult * (final + (1.0 - final) * shape)


class TokenScheduler:
    """A Composer scheduler (callable on state) reading the global token clock."""

    def __init__(self, cfg: SchedulerConfig, max_tokens: int) -> None:
        self.cfg = cfg
        self.max_tokens = max_tokens

    def __call__(self, state, ssr: float = 1.0) -> float:
        return lr_multiplier(int(state.timestamp.token.value), self.cfg, self.max_tokens)
