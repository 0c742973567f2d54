"""Rotary position embeddings (non-interleaved halves, as in ModernBERT), for flat token streams."""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """cos/sin tables for one RoPE base, gathered by per-token positions."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.theta = float(theta)
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def set_theta(self, theta: float) -> None:
        """Change the base in place (a new phase may raise the global theta)."""
        self.theta = float(theta)
        dim = self.head_dim
        exponent = torch.arange(0, dim, 2, dtype=torch.int64, device=self.inv_freq.device).float() / dim
        self.inv_freq.copy_(1.0 / (self.theta ** exponent))

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids: (total_tokens,) -> cos, sin: (total_tokens, 1, head_dim), float32
        freqs = position_ids.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[:, None, :], emb.sin()[:, None, :]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (total_tokens, heads, head_dim); computed in float32, returned in x's dtype."""
    xf = x.float()
    return (xf * cos + _rotate_half(xf) * sin).to(x.dtype)
