"""Attention backends over flat, unpadded token streams.

Every backend has the same signature::

    attention(q, k, v, cu_seqlens, max_seqlen, window, dropout_p) -> out

q, k, v: (total_tokens, heads, head_dim), cu_seqlens: int32 (docs + 1,), window: (left, right)
with -1 meaning unbounded, out: (total_tokens, heads, head_dim). Tokens never attend across a
document boundary. The module that calls them owns Wqkv, Wo and RoPE.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

Window = tuple[int, int]
AttentionFn = Callable[..., torch.Tensor]


# ----------------------------------------------------------------------------------- sdpa
def doc_layout(cu_seqlens: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (document index, position within document)."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    doc = torch.repeat_interleave(torch.arange(lengths.numel(), device=cu_seqlens.device), lengths,
                                  output_size=total)
    pos = torch.arange(total, device=cu_seqlens.device) - cu_seqlens[:-1].long()[doc]
    return doc, pos


def sdpa_attention(q, k, v, cu_seqlens, max_seqlen, window: Window, dropout_p: float = 0.0):
    """Reference path, CPU training included: pads each document to max_seqlen and calls SDPA."""
    total, heads, head_dim = q.shape
    n_docs = cu_seqlens.numel() - 1
    doc, pos = doc_layout(cu_seqlens, total)
    # (docs, heads, max_seqlen, head_dim), zeros where a document is shorter
    padded = q.new_zeros(3, n_docs, max_seqlen, heads, head_dim)
    padded[:, doc, pos] = torch.stack((q, k, v))
    qp, kp, vp = padded.transpose(2, 3).unbind(0)
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    idx = torch.arange(max_seqlen, device=q.device)
    allowed = (idx[None, None, :] < lengths[:, None, None])  # (docs, 1, max_seqlen) valid keys
    left, right = window
    if left >= 0 or right >= 0:
        rel = idx[None, :] - idx[:, None]  # key - query
        band = torch.ones_like(rel, dtype=torch.bool)
        if left >= 0:
            band &= rel >= -left
        if right >= 0:
            band &= rel <= right
        allowed = allowed & band[None]
    # Padding query rows keep their diagonal so that no row is fully masked (that gives NaN in backward).
    allowed = allowed | torch.eye(max_seqlen, dtype=torch.bool, device=q.device)[None]
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=allowed[:, None], dropout_p=dropout_p)
    # (docs, heads, max_seqlen, head_dim) -> (total_tokens, heads, head_dim)
    return out.transpose(1, 2)[doc, pos]


# ------------------------------------------------------------------------------ flash_attn
def _flash_attn_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def flash_attn_attention(q, k, v, cu_seqlens, max_seqlen, window: Window, dropout_p: float = 0.0):
    from flash_attn import flash_attn_varlen_func

    return flash_attn_varlen_func(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                                  dropout_p=dropout_p, causal=False, window_size=window)


# ---------------------------------------------------------------------------- torch_varlen
def _varlen_fn():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def _varlen_has_window() -> bool:
    fn = _varlen_fn()
    return fn is not None and "window_size" in inspect.signature(fn).parameters


def _torch_varlen_available() -> bool:
    return torch.cuda.is_available() and _varlen_fn() is not None


def torch_varlen_attention(q, k, v, cu_seqlens, max_seqlen, window: Window, dropout_p: float = 0.0):
    if dropout_p > 0:
        raise ValueError("attn_backend='torch_varlen' has no attention-probability dropout; set "
                         "attention_dropout=0 or use attn_backend='sdpa' / 'flash_attn'")
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"attn_backend='torch_varlen' needs fp16/bf16 inputs, got {q.dtype}; train under "
                         "bf16 autocast or use attn_backend='sdpa'")
    fn = _varlen_fn()
    kwargs = {}
    if window != (-1, -1):
        if not _varlen_has_window():
            raise RuntimeError(f"torch {torch.__version__}'s varlen_attn has no window_size (needs torch >= 2.11); "
                               "use attn_backend='flex' or 'flash_attn' for sliding-window layers")
        kwargs["window_size"] = list(window)
    out = fn(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, **kwargs)
    return out[0] if isinstance(out, tuple) else out


# ------------------------------------------------------------------------------------ flex
def _flex_available() -> bool:
    if not torch.cuda.is_available():
        return False
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


_flex_compiled = None
# Block masks of the current batch, one per window: every layer of a forward gets the same cu_seqlens
# tensor, so the mask is built once per forward and window kind instead of once per layer.
_flex_masks: dict = {"cu": None, "masks": {}}


def _flex_block_mask(cu_seqlens, total: int, max_seqlen: int, window: Window, device):
    from torch.nn.attention.flex_attention import create_block_mask

    if _flex_masks["cu"] is not cu_seqlens:
        _flex_masks["cu"], _flex_masks["masks"] = cu_seqlens, {}
    if window not in _flex_masks["masks"]:
        doc, _ = doc_layout(cu_seqlens, total)
        left, right = window

        def mask_mod(b, h, qi, ki):
            keep = doc[qi] == doc[ki]
            if left >= 0:
                keep = keep & (ki >= qi - left)
            if right >= 0:
                keep = keep & (ki <= qi + right)
            return keep

        _flex_masks["masks"][window] = create_block_mask(mask_mod, None, None, total, total, device=device)
    return _flex_masks["masks"][window]


def flex_attention(q, k, v, cu_seqlens, max_seqlen, window: Window, dropout_p: float = 0.0):
    global _flex_compiled
    from torch.nn.attention.flex_attention import flex_attention as _flex

    if dropout_p > 0:
        raise ValueError("attn_backend='flex' has no attention-probability dropout; set attention_dropout=0")
    if _flex_compiled is None:
        _flex_compiled = torch.compile(_flex, dynamic=False)
    total = q.shape[0]
    block_mask = _flex_block_mask(cu_seqlens, total, max_seqlen, window, q.device)
    # (total, heads, dim) -> (1, heads, total, dim)
    out = _flex_compiled(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                         block_mask=block_mask)
    return out[0].transpose(0, 1)


# ----------------------------------------------------------------------------------- table
BACKENDS: dict[str, AttentionFn] = {
    "flash_attn": flash_attn_attention,
    "torch_varlen": torch_varlen_attention,
    "flex": flex_attention,
    "sdpa": sdpa_attention,
}

_AVAILABLE: dict[str, Callable[[], bool]] = {
    "flash_attn": _flash_attn_available,
    "torch_varlen": _torch_varlen_available,
    "flex": _flex_available,
    "sdpa": lambda: True,
}

_WHY_MISSING = {
    "flash_attn": "needs CUDA and the flash-attn package (pip install '.[flash]')",
    "torch_varlen": "needs CUDA and torch >= 2.10 (torch.nn.attention.varlen); windowed layers need torch >= 2.11",
    "flex": "needs CUDA and torch >= 2.5 (FlexAttention has no CPU backward pass)",
    "sdpa": "",
}


def available_backends() -> list[str]:
    return [name for name in BACKENDS if _AVAILABLE[name]()]


def resolve_backend(name: str, *, device: torch.device, dtype: torch.dtype, needs_window: bool,
                    needs_dropout: bool) -> str:
    """Turn `auto` into a concrete backend; check that an explicit one can run. Never falls back silently."""
    if name not in BACKENDS and name != "auto":
        raise ValueError(f"unknown attention backend {name!r}; choose one of {['auto', *BACKENDS]}")
    if name != "auto":
        if not _AVAILABLE[name]():
            raise RuntimeError(f"attention backend {name!r} was requested but is not available here: "
                               f"{_WHY_MISSING[name]}. Use attn_backend='auto' or 'sdpa'.")
        return name
    chosen = "sdpa"
    if device.type == "cuda" and not needs_dropout:
        half = dtype in (torch.float16, torch.bfloat16)
        if _flash_attn_available():
            chosen = "flash_attn"
        elif half and _torch_varlen_available() and (_varlen_has_window() or not needs_window):
            chosen = "torch_varlen"
        elif _flex_available():
            chosen = "flex"
    log.info("attention backend auto -> %s (device=%s, dtype=%s)", chosen, device.type, dtype)
    return chosen
