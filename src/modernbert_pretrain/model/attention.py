"""Attention backends over flat, unpadded token streams, and the registry that names them.

Every backend function has the same signature::

    attention(q, k, v, cu_seqlens, max_seqlen, window, dropout_p) -> out

q, k, v: (total_tokens, heads, head_dim), cu_seqlens: int32 (docs + 1,), window: (left, right)
with -1 meaning unbounded, out: (total_tokens, heads, head_dim). Tokens never attend across a
document boundary. The module that calls them owns Wqkv, Wo and RoPE.

A backend that needs per-batch state (flex: its block masks) declares a `prepare` function; the model
calls it once per forward and window kind, and the backend function then gets the result as an eighth
argument. Adding a backend is one `register_backend(AttentionBackend(...))` call: the config's choices,
`auto` and the benchmark's --attn choices all read this registry.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

Window = tuple[int, int]
AttentionFn = Callable[..., torch.Tensor]


def _always() -> bool:
    return True


# ----------------------------------------------------------------------------------- sdpa
def doc_layout(cu_seqlens: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (document index, position within document)."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    doc = torch.repeat_interleave(torch.arange(lengths.numel(), device=cu_seqlens.device), lengths,
                                  output_size=total)
    pos = torch.arange(total, device=cu_seqlens.device) - cu_seqlens[:-1].long()[doc]
    return doc, pos


@dataclass(frozen=True)
class SdpaLayout:
    """Where each token sits in padded rows of `width` (= max_seqlen) slots, for one SDPA call per layer.

    On CPU, outside compilation, consecutive documents share a row, greedily and in order, while they fit, so
    that a row is usually one packed sequence of the batch: attention costs (rows, width, width) instead of
    one padded row per document, and a block-diagonal mask keeps documents apart. Elsewhere each document gets
    its own row (no host sync, no data-dependent shapes under torch.compile or the memory plan's fake tensors)."""

    slots: torch.Tensor
    """(total_tokens,) int64: each token's slot in the flat (rows * width) layout."""
    rows: int
    width: int
    allowed: torch.Tensor
    """(rows, 1, width, width) bool: same document (padding counts as one) and inside the window."""


def _shared_row_starts(lengths: list[int], width: int) -> tuple[list[int], int]:
    """First slot of each document when documents fill rows of `width` in order; and the number of rows."""
    starts, row, fill = [], 0, 0
    for n in lengths:
        if fill and fill + n > width:
            row, fill = row + 1, 0
        starts.append(row * width + fill)
        fill += n
    return starts, row + 1 if lengths else 0


def _rows_are_shared(cu_seqlens: torch.Tensor) -> bool:
    """Whether the layout may read document lengths on the host: real CPU tensors, run eagerly (not fake
    tensors, as the memory plan uses)."""
    from torch._subclasses.fake_tensor import FakeTensor  # imported by torch itself

    return (cu_seqlens.device.type == "cpu" and not torch.compiler.is_compiling()
            and not isinstance(cu_seqlens, FakeTensor))


def sdpa_layout(cu_seqlens: torch.Tensor, total: int, max_seqlen: int, window: Window) -> SdpaLayout:
    """The per-batch layout for `sdpa_attention`, built once per forward and window kind."""
    device = cu_seqlens.device
    width = max(int(max_seqlen), 1)
    doc, pos = doc_layout(cu_seqlens, total)
    n_docs = cu_seqlens.numel() - 1
    if _rows_are_shared(cu_seqlens):
        starts, rows = _shared_row_starts((cu_seqlens[1:] - cu_seqlens[:-1]).tolist(), width)
        doc_start = torch.tensor(starts, dtype=torch.long, device=device)
    else:
        doc_start, rows = torch.arange(n_docs, device=device) * width, n_docs
    slots = doc_start[doc] + pos  # (total_tokens,)
    slot_doc = torch.full((rows * width,), -1, dtype=torch.long, device=device)
    slot_doc[slots] = doc
    slot_doc = slot_doc.view(rows, width)
    allowed = slot_doc[:, :, None] == slot_doc[:, None, :]  # (rows, width, width); padding only sees padding
    left, right = window
    if left >= 0 or right >= 0:
        idx = torch.arange(width, device=device)
        rel = idx[None, :] - idx[:, None]  # key - query; inside a row it is the distance within the document
        band = torch.ones_like(rel, dtype=torch.bool)
        if left >= 0:
            band &= rel >= -left
        if right >= 0:
            band &= rel <= right
        allowed = allowed & band[None]
    return SdpaLayout(slots=slots, rows=rows, width=width, allowed=allowed[:, None])


def sdpa_attention(q, k, v, cu_seqlens, max_seqlen, window: Window, dropout_p: float = 0.0,
                   layout: SdpaLayout | None = None):
    """Reference path, CPU training included: packs documents into padded rows (sdpa_layout) and calls SDPA.
    `layout` comes from the model once per forward; built here when absent."""
    total, heads, head_dim = q.shape
    if layout is None:
        layout = sdpa_layout(cu_seqlens, total, max_seqlen, window)
    # (total, 3, heads, dim) -> (rows * width, 3, heads, dim), zeros in the unused slots
    qkv = torch.stack((q, k, v), 1)
    padded = qkv.new_zeros(layout.rows * layout.width, 3, heads, head_dim).index_copy(0, layout.slots, qkv)
    # -> 3 x (rows, heads, width, dim)
    qp, kp, vp = padded.view(layout.rows, layout.width, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=layout.allowed, dropout_p=dropout_p)
    # (rows, heads, width, dim) -> (total_tokens, heads, head_dim)
    return out.transpose(1, 2).reshape(-1, heads, head_dim).index_select(0, layout.slots)


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
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


_flex_compiled = None


def flex_block_mask(cu_seqlens: torch.Tensor, total: int, max_seqlen: int, window: Window):
    """The BlockMask of one window kind for this batch's documents. The model builds one per window kind
    per forward and passes it to every layer of that kind."""
    from torch.nn.attention.flex_attention import create_block_mask

    doc, _ = doc_layout(cu_seqlens, total)
    left, right = window

    def mask_mod(b, h, qi, ki):
        keep = doc[qi] == doc[ki]
        if left >= 0:
            keep = keep & (ki >= qi - left)
        if right >= 0:
            keep = keep & (ki <= qi + right)
        return keep

    return create_block_mask(mask_mod, None, None, total, total, device=cu_seqlens.device)


def _flex_kernel(device_type: str) -> AttentionFn:
    """Inductor's fused flex kernel where inductor can train it (the registry's `compile_devices`); the eager
    flex_attention elsewhere. Eager FlexAttention runs forward and backward on CPU (torch 2.7) but builds the
    full (heads, total, total) score matrix; CPU inductor compiles flex for inference only."""
    global _flex_compiled
    from torch.nn.attention.flex_attention import flex_attention as eager

    # Inside a compiled model Dynamo captures the eager call and the outer compile fuses it.
    if torch.compiler.is_compiling() or device_type not in BACKENDS["flex"].compile_devices:
        return eager
    if _flex_compiled is None:
        _flex_compiled = torch.compile(eager, dynamic=False)
    return _flex_compiled


def flex_attention(q, k, v, cu_seqlens, max_seqlen, window: Window, dropout_p: float = 0.0, block_mask=None):
    """`block_mask` comes from flex_block_mask (built by the model once per forward); built here when absent."""
    if dropout_p > 0:
        raise ValueError("attn_backend='flex' has no attention-probability dropout; set attention_dropout=0")
    if block_mask is None:
        block_mask = flex_block_mask(cu_seqlens, q.shape[0], max_seqlen, window)
    # (total, heads, dim) -> (1, heads, total, dim)
    out = _flex_kernel(q.device.type)(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                                      block_mask=block_mask)
    return out[0].transpose(0, 1)


# -------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class AttentionBackend:
    """One attention backend: everything the config, `auto` and the benchmark need to know about it."""

    name: str
    fn: AttentionFn
    """The attention function (signature in the module docstring)."""
    available: Callable[[], bool] = _always
    """Whether it can run on this machine (packages, CUDA)."""
    why_missing: str = ""
    """What to install or change when `available()` is false; shown in the error."""
    supports_window: Callable[[], bool] = _always
    """Whether it runs sliding-window (local) layers."""
    supports_dropout: bool = False
    """Whether it applies dropout to attention probabilities."""
    auto_priority: int | None = None
    """`auto` tries the highest first; None: used only when asked for by name."""
    devices: tuple[str, ...] = ("cuda",)
    """Device types `auto` may pick it for."""
    dtypes: tuple[torch.dtype, ...] | None = None
    """Compute dtypes `auto` may pick it for (None: any)."""
    compile_devices: tuple[str, ...] = ("cuda",)
    """Device types where torch.compile (inductor) can compile it for training, forward and backward; the
    trainer refuses `compile: on` with this backend on any other device."""
    prepare: Callable[[torch.Tensor, int, int, Window], Any] | None = None
    """prepare(cu_seqlens, total_tokens, max_seqlen, window) -> state passed to `fn` as its eighth argument;
    called once per forward and window kind."""

    def __call__(self, q, k, v, cu_seqlens, max_seqlen, window: Window, dropout_p: float = 0.0, prepared=None):
        if self.prepare is None:
            return self.fn(q, k, v, cu_seqlens, max_seqlen, window, dropout_p)
        return self.fn(q, k, v, cu_seqlens, max_seqlen, window, dropout_p, prepared)

    def fits(self, device: torch.device, dtype: torch.dtype, needs_window: bool, needs_dropout: bool) -> bool:
        """Whether `auto` may choose it for this device, compute dtype and model."""
        return (device.type in self.devices and (self.dtypes is None or dtype in self.dtypes)
                and (self.supports_dropout or not needs_dropout)
                and (not needs_window or self.supports_window()) and self.available())


BACKENDS: dict[str, AttentionBackend] = {}


def register_backend(backend: AttentionBackend) -> AttentionBackend:
    BACKENDS[backend.name] = backend
    return backend


_HALF = (torch.float16, torch.bfloat16)
register_backend(AttentionBackend(
    name="flash_attn", fn=flash_attn_attention, available=_flash_attn_available,
    why_missing="needs CUDA and the flash-attn package (pip install '.[flash]')",
    supports_dropout=True, auto_priority=30, dtypes=_HALF))
register_backend(AttentionBackend(
    name="torch_varlen", fn=torch_varlen_attention, available=_torch_varlen_available,
    why_missing="needs CUDA and torch >= 2.10 (torch.nn.attention.varlen); windowed layers need torch >= 2.11",
    supports_window=_varlen_has_window, auto_priority=20, dtypes=_HALF))
# `auto` keeps flex to CUDA: on CPU it runs eager, whose (heads, total, total) scores cost more than sdpa's
# per-document padding. By name it runs everywhere.
register_backend(AttentionBackend(
    name="flex", fn=flex_attention, available=_flex_available,
    why_missing="needs torch >= 2.5 (torch.nn.attention.flex_attention)",
    auto_priority=10, prepare=flex_block_mask))
register_backend(AttentionBackend(
    name="sdpa", fn=sdpa_attention, supports_dropout=True, auto_priority=0, devices=("cpu", "cuda"),
    compile_devices=("cpu", "cuda"), prepare=sdpa_layout))


def backend_choices() -> tuple[str, ...]:
    """What `attn_backend` accepts: auto and every registered backend."""
    return ("auto", *BACKENDS)


def available_backends() -> list[str]:
    return [name for name, backend in BACKENDS.items() if backend.available()]


def prepare_backend(name: str, cu_seqlens: torch.Tensor, total: int, max_seqlen: int,
                    windows: Iterable[Window]) -> dict[Window, Any]:
    """The backend's per-batch state for each window kind (empty when it needs none)."""
    prepare = BACKENDS[name].prepare
    if prepare is None:
        return {}
    return {window: prepare(cu_seqlens, total, max_seqlen, window) for window in windows}


def resolve_backend(name: str, *, device: torch.device, dtype: torch.dtype, needs_window: bool,
                    needs_dropout: bool) -> str:
    """Turn `auto` into a concrete backend; check that an explicit one can run. Never falls back silently."""
    if name not in BACKENDS and name != "auto":
        raise ValueError(f"unknown attention backend {name!r}; choose one of {list(backend_choices())}")
    if name != "auto":
        if not BACKENDS[name].available():
            raise RuntimeError(f"attention backend {name!r} was requested but is not available here: "
                               f"{BACKENDS[name].why_missing}. Use attn_backend='auto' or 'sdpa'.")
        return name
    ranked = sorted((b for b in BACKENDS.values() if b.auto_priority is not None), key=lambda b: -b.auto_priority)
    chosen = next((b.name for b in ranked if b.fits(device, dtype, needs_window, needs_dropout)), None)
    if chosen is None:
        raise RuntimeError(f"attn_backend='auto' found no backend for device={device.type}, dtype={dtype}")
    log.info("attention backend auto -> %s (device=%s, dtype=%s)", chosen, device.type, dtype)
    return chosen
