"""Learning-rate schedules on the token clock (sequences x seq_len, the same on every rank)."""

from __future__ import annotations

import math

from composer.core import Callback, State
from composer.loggers import Logger

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


class TokenSchedule(Callback):
    """Sets the LR of step k from the tokens seen before step k, at the start of that step.

    (Composer's schedulers step after a batch, before its clock advances: a scheduler reading the token clock
    there runs step k at the value for the tokens before step k-1, so steps 1 and 2 both ran at LR 0.) The
    clock is global and restored on resume, so the LR needs no state of its own."""

    def __init__(self, cfg: SchedulerConfig, max_tokens: int, peak_lr: float) -> None:
        self.cfg = cfg
        self.max_tokens = max_tokens
        self.peak_lr = peak_lr

    def lr(self, tokens_before: int) -> float:
        return self.peak_lr * lr_multiplier(tokens_before, self.cfg, self.max_tokens)

    def batch_start(self, state: State, logger: Logger) -> None:
        lr = self.lr(int(state.timestamp.token.value))
        for optimizer in state.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
