"""One training forward of the real model at the config's shape on fake tensors made to keep what a CUDA forward keeps, counting what autograd
saves (the activations of docs/memory.md). Nothing is allocated: the large model at 8192 tokens runs here too."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from ..model import ModernBertConfig, ModernBertForMaskedLM
from ..model.attention import BACKENDS, AttentionBackend
from .saved_tensors import FixedNonzero, SavedBytes, cuda_like, flash_like_attention

_STAND_IN = "_flash_like_memory_plan"


@contextlib.contextmanager
def attention_backend(model: ModernBertForMaskedLM, kind: str) -> Iterator[None]:
    """'flash-like': a stand-in with the fused kernels' saved tensors, registered only for this forward;
    'sdpa': the real sdpa backend."""
    if kind == "sdpa":
        model.model.set_attn_backend("sdpa")
        yield
        return
    BACKENDS[_STAND_IN] = AttentionBackend(name=_STAND_IN, fn=flash_like_attention, supports_dropout=True)
    try:
        model.model.set_attn_backend(_STAND_IN)
        yield
    finally:
        del BACKENDS[_STAND_IN]


def batch(rows: int, seq_len: int, device: str = "cpu") -> dict[str, torch.Tensor | int]:
    """A packed microbatch: `rows` sequences of `seq_len` tokens, one document each (the most that any
    packing can put into one attention row; only the sdpa backend's memory depends on it)."""
    total = rows * seq_len
    return {"input_ids": torch.zeros(total, dtype=torch.int64, device=device),
            "labels": torch.zeros(total, dtype=torch.int64, device=device),
            "cu_seqlens": torch.arange(rows + 1, dtype=torch.int32, device=device) * seq_len,
            "max_seqlen": seq_len}


def count_forward(model: nn.Module, inputs: dict, masked: int | None, precision: str,
                  encoder: nn.Module | None = None) -> dict[str, int]:
    """Run `model(**inputs)` in training mode and count saved bytes by 'encoder' and 'head' (everything after
    `model.model` returns). `encoder`, when given, replaces `model.model` for the forward (a compiled one).
    `masked`: the number of labelled tokens, for fake inputs; None for real inputs (their labels say it)."""
    counter = SavedBytes(exclude=model.parameters())
    inner = model.model
    model.model = inner if encoder is None else encoder
    hook = model.model.register_forward_hook(lambda *_: setattr(counter, "phase", "head"))
    try:
        fixed = contextlib.nullcontext() if masked is None else FixedNonzero(masked)
        with counter.counting(), cuda_like(precision), fixed:
            model(**inputs)
    finally:
        hook.remove()
        model.model = inner
    return {"encoder": counter.by_phase.get("encoder", 0), "head": counter.by_phase.get("head", 0)}


def saved_bytes(model_cfg: ModernBertConfig, rows: int, seq_len: int, masked: int, setup) -> dict[str, int]:
    """Saved-for-backward bytes by 'encoder' and 'head' for the GPU run that `setup` (memory.RunSetup) describes.
    The head always runs eagerly (train/builder.py compiles only the encoder)."""
    counts = count_model(model_cfg, rows, seq_len, masked, setup, compiled=False)
    if setup.compiled:
        counts["encoder"] = compiled_encoder_bytes(model_cfg, rows, seq_len, masked, setup)
    return counts


def count_model(model_cfg: ModernBertConfig, rows: int, seq_len: int, masked: int, setup, *,
                compiled: bool) -> dict[str, int]:
    config = dataclasses.replace(model_cfg, validate_inputs=False)
    with FakeTensorMode():
        model = ModernBertForMaskedLM(config, init=False).train()
        inputs = batch(rows, seq_len)
        with attention_backend(model, setup.attention):
            encoder = partitioned(model.model, seq_len) if compiled else None
            return count_forward(model, inputs, masked, setup.precision, encoder)


def compiled_encoder_bytes(model_cfg: ModernBertConfig, rows: int, seq_len: int, masked: int, setup) -> int:
    """The compiled encoder's saved bytes, from partitioned encoders of 1, 2 and n + 1 layers (n: every n-th layer
    is global), extrapolated to the full depth: a = embeddings, final norm and layer 0 (no attention norm);
    l = one local layer; g = one global layer. Tracing 22 or 28 layers takes ~10 s on a CPU core; this takes
    a third of that, and equals the full trace (tests/test_train_memory.py)."""
    period, depth = model_cfg.global_attn_every_n_layers, model_cfg.num_hidden_layers
    if depth <= period + 1:
        return _encoder_at_depth(model_cfg, depth, rows, seq_len, masked, setup)
    first = _encoder_at_depth(model_cfg, 1, rows, seq_len, masked, setup)
    second = _encoder_at_depth(model_cfg, 2, rows, seq_len, masked, setup)
    if period == 1:  # every layer global
        return first + (depth - 1) * (second - first)
    local = second - first
    glob = _encoder_at_depth(model_cfg, period + 1, rows, seq_len, masked, setup) - first - (period - 1) * local
    globals_ = sum(model_cfg.is_global_layer(i) for i in range(depth))
    return first + (depth - globals_) * local + (globals_ - 1) * glob


def _encoder_at_depth(model_cfg, depth, rows, seq_len, masked, setup) -> int:
    shallow = dataclasses.replace(model_cfg, num_hidden_layers=depth)
    return count_model(shallow, rows, seq_len, masked, setup, compiled=True)["encoder"]


def partitioned(encoder: nn.Module, max_seqlen: int) -> nn.Module:
    """The encoder as torch.compile's autograd sees it: traced to one graph and split into forward and backward
    as inductor splits it, recomputing cheap elementwise work in backward instead of keeping it. The forward
    graph runs as traced (no code generation): only what it keeps matters here."""
    return _Partitioned(encoder, max_seqlen)


def inductor_partition(joint, joint_inputs, **kwargs):
    """What inductor does to the joint graph before splitting it (torch/_inductor/compile_fx.py): its joint-graph
    passes (dropout becomes a seeded random op, recomputed in backward), then the min-cut partition."""
    from torch._functorch.partitioners import min_cut_rematerialization_partition
    from torch._guards import detect_fake_mode
    from torch._inductor.fx_passes.joint_graph import joint_graph_passes
    from torch._inductor.virtualized import V

    with V.set_fake_mode(detect_fake_mode(joint_inputs)):
        joint_graph_passes(joint)
    return min_cut_rematerialization_partition(joint, joint_inputs, compiler="inductor", **kwargs)


class _Partitioned(nn.Module):
    def __init__(self, encoder: nn.Module, max_seqlen: int) -> None:
        from functorch.compile import aot_function, nop
        from torch._inductor.decomposition import select_decomp_table

        super().__init__()
        self.state = {**dict(encoder.named_parameters()), **dict(encoder.named_buffers())}

        def run(state, input_ids, cu_seqlens):
            return torch.func.functional_call(encoder, state, (input_ids, cu_seqlens, max_seqlen))

        self.fn = aot_function(run, fw_compiler=nop, bw_compiler=nop, partition_fn=inductor_partition,
                               decompositions=select_decomp_table())

    def forward(self, input_ids, cu_seqlens, max_seqlen):
        return self.fn(self.state, input_ids, cu_seqlens)
