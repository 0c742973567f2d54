"""ModernBERT building blocks. Module names match transformers' ModernBERT so that the state dict
is the Hugging Face one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import BACKENDS
from .config import ModernBertConfig
from .rotary import RotaryEmbedding, apply_rotary

_ACT = {
    "gelu": lambda x: F.gelu(x),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


def _norm(config: ModernBertConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)


class ModernBertEmbeddings(nn.Module):
    def __init__(self, config: ModernBertConfig) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.norm = _norm(config)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.drop(self.norm(self.tok_embeddings(input_ids)))


class ModernBertMLP(nn.Module):
    """GeGLU: Wi produces [input, gate]; out = Wo(act(input) * gate)."""

    def __init__(self, config: ModernBertConfig) -> None:
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.act = _ACT[config.hidden_activation]
        self.drop = nn.Dropout(config.mlp_dropout)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp, gate = self.Wi(x).chunk(2, dim=-1)
        return self.Wo(self.drop(self.act(inp) * gate))


class ModernBertAttention(nn.Module):
    """Fused Wqkv, RoPE, a backend from the table, output projection and its dropout."""

    def __init__(self, config: ModernBertConfig, layer_idx: int) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.is_global = config.is_global_layer(layer_idx)
        half = config.local_attention // 2
        self.window = (-1, -1) if self.is_global else (half, half)
        theta = config.global_rope_theta if self.is_global else config.local_rope_theta
        self.rotary_emb = RotaryEmbedding(self.head_dim, theta)
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.Wo = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        self.attention_dropout = config.attention_dropout
        self.out_drop = nn.Dropout(config.attention_output_dropout)
        self.backend = "sdpa"  # set by ModernBertModel.set_attn_backend

    def forward(self, x: torch.Tensor, cos_sin: dict, cu_seqlens: torch.Tensor, max_seqlen: int,
                prepared: dict | None = None) -> torch.Tensor:
        """`prepared`: the backend's per-batch state by window kind (attention.prepare_backend)."""
        total = x.shape[0]
        # (total_tokens, hidden) -> (total_tokens, 3, heads, head_dim)
        qkv = self.Wqkv(x).view(total, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(1)
        cos, sin = cos_sin["global" if self.is_global else "local"]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        dropout_p = self.attention_dropout if self.training else 0.0
        state = prepared.get(self.window) if prepared else None
        out = BACKENDS[self.backend](q, k, v, cu_seqlens, max_seqlen, self.window, dropout_p, state)
        # (total_tokens, heads, head_dim) -> (total_tokens, hidden)
        return self.out_drop(self.Wo(out.reshape(total, -1)))


class ModernBertEncoderLayer(nn.Module):
    def __init__(self, config: ModernBertConfig, layer_idx: int) -> None:
        super().__init__()
        self.attn_norm = nn.Identity() if layer_idx == 0 else _norm(config)
        self.attn = ModernBertAttention(config, layer_idx)
        self.mlp_norm = _norm(config)
        self.mlp = ModernBertMLP(config)

    def forward(self, x, cos_sin, cu_seqlens, max_seqlen, prepared=None):
        x = x + self.attn(self.attn_norm(x), cos_sin, cu_seqlens, max_seqlen, prepared)
        return x + self.mlp(self.mlp_norm(x))


class ModernBertPredictionHead(nn.Module):
    def __init__(self, config: ModernBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.act = _ACT[config.hidden_activation]
        self.norm = _norm(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(x)))
