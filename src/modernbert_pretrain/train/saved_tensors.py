"""Count the bytes autograd keeps for backward during one forward, on fake tensors (no memory, no GPU).

The forward runs the real model at the real shape on fake tensors (`FakeTensorMode`) and `saved_tensors_hooks`
sees every tensor a backward node keeps. Fake CUDA tensors cannot be used without a CUDA driver (autograd asks
the driver for a stream and the process aborts), so the forward runs on fake CPU tensors with the differences
that matter for memory made CUDA-like (`cuda_like`). The same counter runs on real tensors, which is
how the tests check it (docs/memory.md, "Validation").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode


class SavedBytes:
    """Bytes of distinct storages saved for backward, by phase (e.g. 'encoder', 'head'). A storage counts once,
    in the phase that first saved it; storages in `exclude` (parameters: counted as model state) never count."""

    def __init__(self, exclude: Iterator[torch.Tensor] = ()) -> None:
        self.phase = "encoder"
        self.by_phase: dict[str, int] = {}
        self._seen: set[StorageWeakRef] = {StorageWeakRef(t.untyped_storage()) for t in exclude}
        self._keep: list[torch.Tensor] = []  # keeps storages alive so that no weak ref is reused

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        ref = StorageWeakRef(tensor.untyped_storage())
        if ref not in self._seen:
            self._seen.add(ref)
            self._keep.append(tensor)
            self.by_phase[self.phase] = self.by_phase.get(self.phase, 0) + tensor.untyped_storage().nbytes()
        return tensor

    @contextlib.contextmanager
    def counting(self) -> Iterator[SavedBytes]:
        with torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor):
            yield self

    @property
    def total(self) -> int:
        return sum(self.by_phase.values())


class FixedNonzero(TorchDispatchMode):
    """Gives `nonzero` a known row count. Fake tensors have no values, so the number of masked tokens (the rows
    the sparse MLM head sees) is supplied from the config's mask rate instead."""

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.rows = rows

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten.nonzero.default:
            (source,) = args
            return torch.empty((self.rows, source.dim()), dtype=torch.int64, device=source.device)
        return func(*args, **kwargs)


# CUDA's autocast runs these in float32 (CPU's autocast leaves them in the input's dtype).
_CUDA_FP32 = {F.layer_norm, F.group_norm, F.softmax, F.log_softmax, F.cross_entropy, F.nll_loss,
              torch.logsumexp, torch.layer_norm}


class CudaLike(TorchFunctionMode):
    """Makes a CPU forward keep what a CUDA forward keeps: dropout takes the fused kernel's path (a 1-byte mask;
    CPU's path keeps a mask in the input's dtype), and under bf16 autocast the ops of CUDA's float32 list
    (layer norm, softmax, losses) get float32 inputs, as CUDA's autocast gives them. The matmuls are cast to
    bf16 by CPU's autocast exactly as by CUDA's."""

    def __init__(self, autocast: bool) -> None:
        super().__init__()
        self.autocast = autocast

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.dropout:
            return _fused_dropout(*args, **kwargs)
        if self.autocast and func in _CUDA_FP32:
            args = tuple(_fp32(a) for a in args)
        return func(*args, **kwargs)


def _fused_dropout(input, p=0.5, training=True, inplace=False):
    if not training or p == 0:
        return input
    return torch.native_dropout(input, p, True)[0]


def _fp32(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float32:
        return value.float()
    return value


@contextlib.contextmanager
def cuda_like(precision: str) -> Iterator[None]:
    """A CPU forward with the saved tensors of a CUDA one in `precision` ('amp_bf16' or 'fp32')."""
    bf16 = precision == "amp_bf16"
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16), CudaLike(autocast=bf16):
        yield


# A stand-in for the fused varlen attention kernels (flash_attn, torch's varlen_attn, flex): each keeps q, k, v,
# its output and a float32 log-sum-exp per head and token for backward, and nothing of size tokens^2. Custom ops,
# so that torch.compile's partitioner treats the stand-in as it treats the real kernels: it cannot recompute them,
# so it keeps their inputs and outputs. Their values are uninitialized: only shapes and dtypes matter here.
@torch.library.custom_op("modernbert_pretrain::flash_like", mutates_args=())
def flash_like(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # q, k, v: (total_tokens, heads, head_dim) -> out: (total_tokens, heads, head_dim), lse: (heads, total_tokens)
    return torch.empty_like(q), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


@flash_like.register_fake
def _flash_like_fake(q, k, v):
    return torch.empty_like(q), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


@torch.library.custom_op("modernbert_pretrain::flash_like_backward", mutates_args=())
def flash_like_backward(grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                        lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


@flash_like_backward.register_fake
def _flash_like_backward_fake(grad, q, k, v, out, lse):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _flash_like_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs, *output)


def _flash_like_grad(ctx, grad, grad_lse):
    return flash_like_backward(grad, *ctx.saved_tensors)


flash_like.register_autograd(_flash_like_grad, setup_context=_flash_like_setup)


def flash_like_attention(q, k, v, cu_seqlens, max_seqlen, window, dropout_p=0.0, prepared=None):
    """The attention-backend signature (model/attention.py) around the stand-in."""
    return flash_like(q, k, v)[0]
