#!/usr/bin/env python
"""Training throughput: our packed ModernBERT against transformers' ModernBertForMaskedLM, same tokens.

Each measurement trains one model for a few steps (forward, backward, optimizer step) on synthetic packed
batches and reports real tokens/s, MFU and peak memory. Configurations: base at 1024, large at 1024, and base
with documents up to 8192 tokens. Run it with no arguments on a GPU, or `--device cpu --tiny` to check the code
paths at tiny sizes. `bench/README.md` explains the figures.

Data (identical for both models)
    Document lengths come from a heavy-tailed mixture: a lognormal body plus a Pareto tail. A document longer
    than the sequence length is split into sequence-length chunks (the tail is kept, as our data pipeline does).
    The trainer's packer (modernbert_pretrain.data.BestFitPacker, 1024 pending pieces) packs them best-fit
    into rows of `seq_len` tokens, after 2000 warm-up rows that reach its steady state; packing efficiency is
    real tokens / (rows * seq_len). Each document is [CLS] body [SEP]; 30% of non-special tokens are masked
    (80% [MASK], 10% random, 10% unchanged) and carry a label.

    * ours: the real tokens of all rows as one flat stream, `cu_seqlens` at document boundaries, so attention
      never crosses a document. With static shapes (default) each row's padding tail is kept as one extra
      document with no labels, so every batch has the same token count; the padding is computed but not
      counted as real tokens. Compiled runs pass `max_seqlen = seq_len` (an upper bound, so the value never
      changes); eager runs pass the longest document. The document count varies and is marked dynamic.
    * transformers: one row per packed row, padded to `seq_len`, attention_mask 1 on real tokens. It cannot
      isolate the documents of a row (it has no packed-sequence mask with sdpa), so its documents attend to
      each other; that is the layout the reference figures were measured with (full rows) and the cheapest
      one for it (one row per document would pad most of every row). Only real tokens are counted.

Timing
    All batches are built and moved to the device before timing. Warmup steps (compilation included) are
    followed by timed steps between two `torch.cuda.synchronize()` calls; nothing syncs the host inside the
    timed loop (the model is built with `validate_inputs=False`). GPU runs use bf16 autocast.

FLOP count (model FLOPs, the same for both models on the same batch)
    Per real token:  6 * N                                   N = non-embedding parameters: encoder layers,
                                                             embedding norm and final norm (no token
                                                             embedding, no MLM head)
                   + sum over layers of 12 * S * d           d = hidden size; S = effective attended length of
                                                             the token's document: its length L on a global
                                                             layer, min(local_attention, L) on a local layer
                                                             (local_attention = 128 in the recipe)
    Per masked token: 6 * (d * d + d * V)                    MLM head dense layer and decoder, V = vocab size
    12 * S * d is QK^T and AV (2 * 2 * S * d multiply-adds in the forward pass) times 3 for forward + backward.
    Norms, activations, softmax, RoPE and the loss are not counted. For a batch: summed over documents
    (L tokens each attending S(L)) and masked tokens. MFU = FLOPs per second / --peak-tflops (989 TFLOP/s:
    H100 SXM dense bf16). Both models get the useful FLOPs of the batch; the cross-document attention and
    padding that transformers computes are not counted. Base at 1024 with every document 1024 tokens long:
    about 825 MFLOP per token.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from modernbert_pretrain import ModernBertConfig, ModernBertForMaskedLM  # noqa: E402
from modernbert_pretrain.model.attention import resolve_backend  # noqa: E402

IGNORE = -100

# Targets from the speed issue (one H100, bf16): real tokens/s, and at least 2.5x transformers in the same run.
TARGETS = {"base@1024": 470_000, "large@1024": 215_000, "base@8192": 360_000}
TARGET_RATIO = 2.5


# ----------------------------------------------------------------------------------- configurations
@dataclass(frozen=True)
class DocDist:
    """Document lengths: lognormal body (median, sigma) with probability 1 - tail_frac, else Pareto
    (tail_min, tail_alpha); lengths at least min_len."""

    median: float
    sigma: float
    tail_frac: float
    tail_min: float
    tail_alpha: float
    min_len: int = 8


@dataclass(frozen=True)
class BenchConfig:
    name: str
    preset: str
    seq_len: int
    rows: int
    """Microbatch in rows of seq_len tokens (transformers' microbatch; ours unless --rows is given)."""
    docs: DocDist
    overrides: dict = field(default_factory=dict)


# Mean about 410 tokens, about 37% of tokens in documents longer than 1024 (split into chunks).
_DOCS_1024 = DocDist(median=200, sigma=1.0, tail_frac=0.08, tail_min=500, tail_alpha=1.5)
# Phase 2 upweights long documents: a longer body and a heavier tail (mean about 930 tokens).
_DOCS_8192 = DocDist(median=260, sigma=1.2, tail_frac=0.10, tail_min=1000, tail_alpha=1.2)

CONFIGS = {
    "base@1024": BenchConfig("base@1024", "base", 1024, 64, _DOCS_1024),
    "large@1024": BenchConfig("large@1024", "large", 1024, 32, _DOCS_1024),
    "base@8192": BenchConfig("base@8192", "base", 8192, 8, _DOCS_8192,
                             overrides={"global_rope_theta": 160000.0}),
}
# --tiny: the same three measurements at sizes a 2-core CPU runs in seconds.
TINY_CONFIGS = {
    "base@1024": BenchConfig("base@1024", "tiny", 128, 4,
                             DocDist(median=25, sigma=1.0, tail_frac=0.08, tail_min=60, tail_alpha=1.5)),
    "large@1024": BenchConfig("large@1024", "tiny-large", 128, 4,
                              DocDist(median=25, sigma=1.0, tail_frac=0.08, tail_min=60, tail_alpha=1.5)),
    "base@8192": BenchConfig("base@8192", "tiny", 512, 2,
                             DocDist(median=30, sigma=1.2, tail_frac=0.10, tail_min=120, tail_alpha=1.2),
                             overrides={"global_rope_theta": 160000.0}),
}


@dataclass(frozen=True)
class Variant:
    """One measurement. impl: 'ours' or 'transformers'."""

    impl: str
    attn: str = "auto"
    compile: bool = False
    compile_scope: str = "model"  # model: the whole ForMaskedLM; encoder: ModernBertModel; layers: each layer
    compile_mode: str | None = None
    dynamic: bool | None = None  # torch.compile(dynamic=...); the trainer uses True
    cuda_graphs: bool = False
    bf16_weights: bool = False
    rows: int | None = None  # None: the config's rows
    rows_mult: int = 1  # times the rows above (the sweep's "larger microbatch")
    static_shapes: bool = True
    label: str = ""

    def describe(self) -> str:
        if self.label:
            return self.label
        if self.impl == "transformers":
            return "transformers sdpa" + (" compiled" if self.compile else "") + (
                f" rows={self.rows}" if self.rows else "")
        parts = [f"ours {self.attn}"]
        if self.compile:
            parts.append("compile" + ("" if self.compile_scope == "model" else f"[{self.compile_scope}]"))
        if self.compile_mode:
            parts.append(self.compile_mode)
        if self.dynamic is not None:
            parts.append(f"dynamic={self.dynamic}")
        if self.cuda_graphs:
            parts.append("cudagraphs")
        if self.bf16_weights:
            parts.append("bf16-weights")
        if self.rows:
            parts.append(f"rows={self.rows}")
        if self.rows_mult != 1:
            parts.append(f"rows x{self.rows_mult}")
        if not self.static_shapes:
            parts.append("dynamic-shapes")
        return " ".join(parts)


def sweep_variants(configs: list[str]) -> list[tuple[str, Variant]]:
    """A prepared set, most important first, so that --max-seconds cuts the levers, not the headline."""
    hf = Variant("transformers")
    best = Variant("ours", compile=True)
    out: list[tuple[str, Variant]] = []
    for name in configs:  # headline: baseline and the compiled default in every configuration
        out += [(name, hf), (name, best)]
    levers = {
        "base@1024": [
            Variant("ours"),  # eager
            Variant("ours", attn="flex", compile=True),
            Variant("ours", compile=True, bf16_weights=True),
            Variant("ours", compile=True, rows_mult=2),
            Variant("ours", compile=True, compile_scope="encoder"),
            Variant("ours", compile=True, compile_scope="layers"),
            # what train/builder.py does today: encoder only, dynamic=True, batches of real tokens only
            Variant("ours", compile=True, compile_scope="encoder", dynamic=True, static_shapes=False),
            Variant("ours", compile=True, cuda_graphs=True),
        ],
        "large@1024": [Variant("ours", compile=True, bf16_weights=True)],
        "base@8192": [Variant("ours", attn="flex", compile=True)],
    }
    for name in configs:
        out += [(name, v) for v in levers.get(name, [])]
    return out


# ------------------------------------------------------------------------------------------- data
def sample_lengths(rng: np.random.Generator, n: int, dist: DocDist) -> np.ndarray:
    body = rng.lognormal(math.log(dist.median), dist.sigma, n)
    tail = dist.tail_min * (1.0 + rng.pareto(dist.tail_alpha, n))
    lengths = np.where(rng.random(n) < dist.tail_frac, tail, body)
    return np.maximum(np.minimum(lengths, 1e7), dist.min_len).astype(np.int64)


class RowSource:
    """Rows of document-chunk lengths from the project's BestFitPacker (the trainer's packer, buffer of
    1024 pending pieces), fed with synthetic documents. Best fit takes the longest pieces first, so the
    first rows over-represent long documents: `warmup_rows` rows are packed and dropped before use."""

    def __init__(self, seq_len: int, dist: DocDist, rng: np.random.Generator, buffer_docs: int = 1024,
                 warmup_rows: int = 2000) -> None:
        self.seq_len, self.dist, self.rng = seq_len, dist, rng
        self._lengths: list[int] = []
        self._zero = np.zeros(1, dtype=np.int64)  # pieces only carry lengths here; tokens are drawn later
        self._ids = 0
        try:
            from modernbert_pretrain.data.packing import BestFitPacker
        except ImportError as err:  # keep the benchmark usable without the data package
            print(f"  note: project packer unavailable ({err}); using first-fit-decreasing rows", flush=True)
            self.packer, self.name = None, "first-fit-decreasing (fallback)"
        else:
            self.packer = BestFitPacker(seq_len, buffer_docs, self._next_doc)
            self.name = f"modernbert_pretrain BestFitPacker (buffer {buffer_docs})"
        for _ in range(warmup_rows if self.packer is not None else 0):
            self.row()

    def _next_doc(self) -> tuple[int, np.ndarray]:
        if not self._lengths:
            self._lengths = sample_lengths(self.rng, 256, self.dist).tolist()
        self._ids += 1
        length = self._lengths.pop()
        return self._ids, np.broadcast_to(self._zero, (length,))  # a length-only view, no copy

    def row(self) -> list[int]:
        if self.packer is not None:
            return [piece.tokens.size for piece in self.packer.next_row()]
        space, docs = self.seq_len, []
        while True:  # fallback: chunks of the next document(s), first fit
            if not self._lengths:
                self._lengths = sample_lengths(self.rng, 256, self.dist).tolist()
            chunk = min(self._lengths[-1], self.seq_len)
            if chunk > space:
                return docs
            docs.append(chunk)
            space -= chunk
            rest = self._lengths.pop() - chunk
            if rest >= 2:
                self._lengths.append(rest)


@dataclass
class Batch:
    """One microbatch, kept in both layouts on the device."""

    row_docs: list[list[int]]
    real_tokens: int
    masked_tokens: int
    doc_lengths: np.ndarray
    ours: dict[str, Any]
    hf: dict[str, Any]


def _token_range(cfg: ModernBertConfig) -> tuple[int, int]:
    special = {cfg.cls_token_id, cfg.sep_token_id, cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id}
    if cfg.mask_token_id is not None:
        special.add(cfg.mask_token_id)
    if max(special) < cfg.vocab_size // 2:
        return max(special) + 1, cfg.vocab_size
    return 0, min(special)


def make_batch(rows: int, packer: RowSource, cfg: ModernBertConfig, rng: np.random.Generator, mask_prob: float,
               static_shapes: bool, device: torch.device) -> Batch:
    seq = packer.seq_len
    lo, hi = _token_range(cfg)
    mask_id = cfg.mask_token_id if cfg.mask_token_id is not None else lo
    ids = np.full((rows, seq), cfg.pad_token_id, dtype=np.int64)
    labels = np.full((rows, seq), IGNORE, dtype=np.int64)
    attn = np.zeros((rows, seq), dtype=np.int64)
    row_docs = [packer.row() for _ in range(rows)]
    for r, docs in enumerate(row_docs):
        pos = 0
        for length in docs:
            body = rng.integers(lo, hi, length)
            body[0], body[-1] = cfg.cls_token_id, cfg.sep_token_id
            ids[r, pos:pos + length] = body
            attn[r, pos:pos + length] = 1
            pos += length
    maskable = (attn == 1) & (ids != cfg.cls_token_id) & (ids != cfg.sep_token_id)
    chosen = maskable & (rng.random(ids.shape) < mask_prob)
    labels[chosen] = ids[chosen]
    roll = rng.random(ids.shape)
    inputs = ids.copy()
    inputs[chosen & (roll < 0.8)] = mask_id
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = rng.integers(lo, hi, int(swap.sum()))

    doc_lengths = np.array([n for docs in row_docs for n in docs], dtype=np.int64)
    # ours: flat stream with document boundaries
    seg: list[int] = []
    for docs in row_docs:
        seg += docs
        if static_shapes and sum(docs) < seq:
            seg.append(seq - sum(docs))  # the padding tail as one document without labels
    if static_shapes:
        flat_ids, flat_labels = inputs.reshape(-1), labels.reshape(-1)
    else:
        keep = attn.reshape(-1) == 1
        flat_ids, flat_labels = inputs.reshape(-1)[keep], labels.reshape(-1)[keep]
    cu = np.concatenate([[0], np.cumsum(seg)]).astype(np.int32)
    ours = {
        "input_ids": torch.from_numpy(flat_ids).to(device),
        "labels": torch.from_numpy(flat_labels).to(device),
        "cu_seqlens": torch.from_numpy(cu).to(device),
        "max_seqlen": int(max(seg)),  # compiled runs pass seq_len instead (one value, no recompiles)
    }
    hf = {
        "input_ids": torch.from_numpy(inputs).to(device),
        "attention_mask": torch.from_numpy(attn).to(device),
        "labels": torch.from_numpy(labels).to(device),
    }
    return Batch(row_docs, int(attn.sum()), int(chosen.sum()), doc_lengths, ours, hf)


# -------------------------------------------------------------------------------------------- FLOPs
def non_embedding_params(cfg: ModernBertConfig) -> int:
    """Encoder layers + embedding norm + final norm (no token embedding, no MLM head)."""
    with torch.device("meta"):
        model = ModernBertForMaskedLM(cfg, init=False)
    skip = ("model.embeddings.tok_embeddings.", "head.", "decoder.")
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(skip))


def batch_flops(cfg: ModernBertConfig, n_params: int, doc_lengths: np.ndarray, masked: int) -> float:
    """Model FLOPs of one training step (forward + backward) on this batch; see the module docstring."""
    d, lengths = cfg.hidden_size, doc_lengths.astype(np.float64)
    n_global = sum(cfg.is_global_layer(i) for i in range(cfg.num_hidden_layers))
    n_local = cfg.num_hidden_layers - n_global
    attended = n_global * lengths + n_local * np.minimum(cfg.local_attention, lengths)  # per token, all layers
    attn = 12.0 * d * float((lengths * attended).sum())
    dense = 6.0 * n_params * float(lengths.sum())
    head = 6.0 * (d * d + d * cfg.vocab_size) * masked
    return dense + attn + head


# ------------------------------------------------------------------------------------------- models
def our_config(bc: BenchConfig, attn: str) -> ModernBertConfig:
    return ModernBertConfig.from_preset(bc.preset, attn_backend=attn, validate_inputs=False,
                                        max_position_embeddings=max(bc.seq_len, 1024), **bc.overrides)


def hf_model(cfg: ModernBertConfig, device: torch.device):
    """transformers' ModernBertForMaskedLM with our shape, sdpa attention and the sparse head; works on
    transformers 4.48+ and 5.x."""
    import inspect

    import transformers

    hf_cls = transformers.ModernBertConfig
    accepted = set(inspect.signature(hf_cls.__init__).parameters)
    # Keys 5.x takes through **kwargs (RoPE bases, layer pattern); named parameters on 4.x.
    accepted |= {"global_rope_theta", "local_rope_theta", "global_attn_every_n_layers"}
    values = {k: v for k, v in cfg.to_hf_dict().items() if k in accepted}
    values["sparse_prediction"] = True
    values["sparse_pred_ignore_index"] = IGNORE
    if int(transformers.__version__.split(".")[0]) < 5:
        # 4.x compiles parts of the model itself when triton is importable; 5.x deprecates that. Keep both
        # eager so the baseline is the same on both versions (--hf-compile compiles the whole model instead).
        values["reference_compile"] = False
    hf_cfg = hf_cls(**values, attn_implementation="sdpa")
    mlm_cls = transformers.ModernBertForMaskedLM  # lazy import: resolve it outside the device context
    with torch.device(device):
        model = mlm_cls(hf_cfg)
    if getattr(model.config, "_attn_implementation", "sdpa") != "sdpa" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("sdpa")
    if hasattr(model, "sparse_prediction"):
        model.sparse_prediction = True
    impl = getattr(model.config, "_attn_implementation", "?")
    if impl != "sdpa":
        raise RuntimeError(f"transformers chose attn_implementation={impl!r}, not sdpa")
    return model.to(device).train()


def param_groups(model: torch.nn.Module, wd: float) -> list[dict]:
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        (no_decay if (p.dim() < 2 or "norm" in name) else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, impl: str, choice: str, device: torch.device):
    """ours: torch-optimi StableAdamW (the trainer's optimizer) unless missing or --optimizer adamw;
    transformers: torch AdamW, fused. Returns (optimizer, description)."""
    lr, betas, eps, wd = 8e-4, (0.9, 0.98), 1e-6, 1e-5
    groups = param_groups(model, wd)
    if impl == "ours" and choice in ("auto", "stableadamw"):
        try:
            from optimi import StableAdamW
        except ImportError:
            if choice == "stableadamw":
                raise
            print("  note: torch-optimi is not installed; ours falls back to torch AdamW (fused)", flush=True)
        else:
            # triton=False off CUDA: optimi picks its Triton kernel whenever triton imports, and that fails
            # without a GPU. On CUDA let it choose (Triton when available).
            triton = None if device.type == "cuda" else False
            opt = StableAdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=wd, decouple_lr=True,
                              triton=triton)
            low = any(p.dtype in (torch.bfloat16, torch.float16) for p in model.parameters())
            kind = "triton" if triton is None and device.type == "cuda" and _has_triton() else "foreach/torch"
            return opt, f"optimi.StableAdamW ({kind}{', Kahan summation' if low else ''})"
    try:
        opt = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
        return opt, "torch.optim.AdamW(fused=True)"
    except (RuntimeError, ValueError) as err:
        opt = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=True)
        return opt, f"torch.optim.AdamW(foreach=True) (fused unavailable: {err})"


def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def compile_note(device: torch.device, variant: Variant) -> str | None:
    """Why a variant cannot run here (None: it can)."""
    if variant.cuda_graphs and device.type != "cuda":
        return "CUDA graphs need CUDA; skipped"
    return None


# ---------------------------------------------------------------------------------------- measuring
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _dynamo_counts() -> tuple[int, int, list[str]]:
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0, 0, []
    breaks = counters.get("graph_break", {})
    graphs = counters.get("stats", {}).get("unique_graphs", 0)
    return int(sum(breaks.values())), int(graphs), [str(k)[:160] for k in list(breaks)[:4]]


def _reset_dynamo() -> None:
    with contextlib.suppress(Exception):
        torch._dynamo.reset()
    with contextlib.suppress(Exception):
        from torch._dynamo.utils import counters

        counters.clear()


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    # CPU: the process's peak resident set (Linux reports KiB); not per variant.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_variant(args, bc: BenchConfig, variant: Variant, pool: list[Batch], device: torch.device,
                deadline: float) -> dict:
    cfg = our_config(bc, variant.attn)
    result: dict[str, Any] = {"config": bc.name, "variant": variant.describe(), "impl": variant.impl,
                              "status": "ok", "rows": len(pool[0].row_docs), "seq_len": bc.seq_len,
                              "preset": bc.preset}
    _reset_dynamo()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(args.seed)
    amp_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    if variant.impl == "transformers":
        model = hf_model(cfg, device)
        result["attn"] = "sdpa"
    else:
        with torch.device(device):
            model = ModernBertForMaskedLM(cfg).train()
        dtype = torch.bfloat16 if variant.bf16_weights else amp_dtype
        backend = resolve_backend(cfg.attn_backend, device=device, dtype=dtype,
                                  needs_window=cfg.num_hidden_layers > 1 and cfg.global_attn_every_n_layers > 1,
                                  needs_dropout=cfg.attention_dropout > 0)
        model.model.set_attn_backend(backend)
        result["attn"] = backend
        if variant.bf16_weights:
            # Parameters only: model.to(bfloat16) would also round the RoPE inv_freq buffers to bf16.
            with torch.no_grad():
                for p in model.parameters():
                    p.data = p.data.to(torch.bfloat16)
    optimizer, opt_desc = make_optimizer(model, variant.impl, args.optimizer, device)
    result["optimizer"] = opt_desc

    fn = model
    if variant.compile:
        mode = "reduce-overhead" if variant.cuda_graphs else variant.compile_mode
        if variant.impl == "ours" and variant.compile_scope == "encoder":
            model.model = torch.compile(model.model, mode=mode, dynamic=variant.dynamic)
        elif variant.impl == "ours" and variant.compile_scope == "layers":
            # regional compilation: identical layers share compiled code (one per global/local kind)
            for i, layer in enumerate(model.model.layers):
                model.model.layers[i] = torch.compile(layer, mode=mode, dynamic=variant.dynamic)
        else:
            fn = torch.compile(model, mode=mode, dynamic=variant.dynamic)
    inputs = "hf" if variant.impl == "transformers" else "ours"

    def step(batch: Batch) -> torch.Tensor:
        kwargs = getattr(batch, inputs)
        if variant.compile and inputs == "ours":
            if variant.static_shapes:
                kwargs = {**kwargs, "max_seqlen": bc.seq_len}
            torch._dynamo.maybe_mark_dynamic(kwargs["cu_seqlens"], 0)
            if not variant.static_shapes:
                torch._dynamo.maybe_mark_dynamic(kwargs["input_ids"], 0)
                torch._dynamo.maybe_mark_dynamic(kwargs["labels"], 0)
        with autocast(device):
            out = fn(**kwargs)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out.loss.detach()

    warmup = args.warmup
    if variant.compile:  # every batch shape is seen (and compiled for) before timing starts
        warmup = max(warmup, len(pool) + 2)
    t0 = time.perf_counter()
    for i in range(warmup):
        step(pool[i % len(pool)])
    sync(device)
    result["warmup_s"] = time.perf_counter() - t0
    _, graphs_before, _ = _dynamo_counts()

    n_params = non_embedding_params(cfg)
    batch_flop = [batch_flops(cfg, n_params, b.doc_lengths, b.masked_tokens) for b in pool]
    tokens = masked = steps = 0
    flops = 0.0
    sync(device)
    t0 = time.perf_counter()
    for i in range(args.steps):
        k = (warmup + i) % len(pool)
        loss = step(pool[k])
        tokens += pool[k].real_tokens
        masked += pool[k].masked_tokens
        flops += batch_flop[k]
        steps += 1
        if time.monotonic() > deadline:
            result["note"] = f"budget reached: {steps} of {args.steps} timed steps"
            break
    sync(device)
    elapsed = time.perf_counter() - t0
    loss_value = float(loss.float().item())
    if not math.isfinite(loss_value):
        raise FloatingPointError(f"loss is {loss_value}")
    breaks, graphs_after, reasons = _dynamo_counts()
    result.update({
        "steps": steps,
        "step_s": elapsed / steps,
        "real_tokens_per_s": tokens / elapsed,
        "tflops": flops / elapsed / 1e12,
        "mfu": flops / elapsed / (args.peak_tflops * 1e12),
        "peak_mem_gib": peak_memory_gib(device),
        "loss": loss_value,
        "masked_fraction": masked / tokens,
    })
    if variant.compile:
        result.update({"graph_breaks": breaks, "graphs": graphs_after,
                       "recompiled_while_timed": graphs_after != graphs_before})
        if reasons:
            result["graph_break_reasons"] = reasons
    return result


def build_pool(args, bc: BenchConfig, rows: int, static: bool, device: torch.device) -> tuple[list[Batch], dict]:
    cfg = our_config(bc, "sdpa")
    dist = bc.docs
    over = {k: getattr(args, f"doc_{k}") for k in ("median", "sigma", "tail_frac", "tail_min", "tail_alpha")}
    dist = dataclasses.replace(dist, **{k: v for k, v in over.items() if v is not None})
    rng = np.random.default_rng(args.seed)
    packer = RowSource(bc.seq_len, dist, rng)
    pool = [make_batch(rows, packer, cfg, rng, args.mask_prob, static, device) for _ in range(args.batches)]
    lengths = np.concatenate([b.doc_lengths for b in pool])
    real = sum(b.real_tokens for b in pool)
    n_params = non_embedding_params(cfg)
    flops = sum(batch_flops(cfg, n_params, b.doc_lengths, b.masked_tokens) for b in pool)
    stats = {
        "rows": rows, "seq_len": bc.seq_len, "batches": len(pool),
        "packing_efficiency": real / (len(pool) * rows * bc.seq_len),
        "docs_per_row": len(lengths) / (len(pool) * rows),
        "doc_len_mean": float(lengths.mean()), "doc_len_p50": float(np.percentile(lengths, 50)),
        "doc_len_p90": float(np.percentile(lengths, 90)), "doc_len_max": int(lengths.max()),
        "token_weighted_doc_len": float((lengths ** 2).sum() / lengths.sum()),
        "mflop_per_real_token": flops / real / 1e6,
        "non_embedding_params": n_params,
        "packer": packer.name,
        "doc_dist": dataclasses.asdict(dist),
    }
    return pool, stats


# ---------------------------------------------------------------------------------------- reporting
def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _pct(value: float) -> str:
    return f"{value:.1%}" if value >= 1e-3 else f"{value:.0e}"


def print_tables(results: list[dict], pools: dict, device: torch.device, args) -> None:
    on_target_card = device.type == "cuda" and not args.tiny
    for name in dict.fromkeys(r["config"] for r in results):
        rows = [r for r in results if r["config"] == name]
        stats = next((s for (n, _, _), s in pools.items() if n == name), None)
        print()
        head = f"== {name}"
        if stats:
            head += (f": rows {stats['rows']} x {stats['seq_len']}, packing {stats['packing_efficiency']:.1%}, "
                     f"docs mean {stats['doc_len_mean']:.0f} / p90 {stats['doc_len_p90']:.0f} tokens, "
                     f"{stats['mflop_per_real_token']:.1f} MFLOP per real token")
        print(head + (" [CPU tiny: not GPU figures]" if args.tiny else ""))
        print(f"{'variant':<52} {'attn':<12} {'real tok/s':>12} {'MFU':>7} {'peak GiB':>9} {'vs HF':>6} "
              f"{'step ms':>9}  notes")
        for r in rows:
            if r["status"] != "ok":
                print(f"{r['variant']:<52} {r.get('attn', '-'):<12} {r['status'].upper():>12}  {r.get('error', '')}")
                continue
            notes = []
            if "graph_breaks" in r:
                notes.append(f"graph breaks {r['graph_breaks']}, graphs {r['graphs']}")
                if r["recompiled_while_timed"]:
                    notes.append("recompiled while timed")
            if r.get("note"):
                notes.append(r["note"])
            if on_target_card and r["impl"] == "ours" and name in TARGETS:
                ok = r["real_tokens_per_s"] >= TARGETS[name] and (r.get("ratio_vs_transformers") or 0) >= TARGET_RATIO
                notes.append(f"target {TARGETS[name] // 1000}k & {TARGET_RATIO}x: {'met' if ok else 'not met'}")
            print(f"{r['variant']:<52} {r['attn']:<12} {r['real_tokens_per_s']:>12,.0f} {_pct(r['mfu']):>7} "
                  f"{r['peak_mem_gib']:>9.2f} {_fmt(r.get('ratio_vs_transformers'), '>6.2f'):>6} "
                  f"{r['step_s'] * 1e3:>9.1f}  {'; '.join(notes)}")
    if device.type == "cpu":
        print("\n(CPU: peak GiB is the process's peak resident memory, not per variant; MFU is against "
              f"--peak-tflops {args.peak_tflops:g}.)")


def environment(device: torch.device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device)}
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = None
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(Exception):
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True, timeout=5).stdout.strip() or None
    return env


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny presets and few steps (checks the code on CPU)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {list(CONFIGS)}")
    p.add_argument("--sweep", action="store_true", help="run the prepared set of variants (see sweep_variants)")
    lev = p.add_argument_group("levers for our model (one measurement unless --sweep)")
    lev.add_argument("--attn", default="auto", choices=("auto", "flash_attn", "torch_varlen", "flex", "sdpa"))
    lev.add_argument("--compile", action="store_true", help="torch.compile the whole model")
    lev.add_argument("--compile-scope", choices=("model", "encoder", "layers"), default="model",
                     help="encoder: ModernBertModel only (the sparse head stays eager); layers: each encoder "
                          "layer on its own (shorter compile)")
    lev.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    lev.add_argument("--compile-dynamic", choices=("auto", "true", "false"), default="auto",
                     help="torch.compile(dynamic=...): auto = None (recompile once, then dynamic)")
    lev.add_argument("--cuda-graphs", action="store_true", help="compile with mode=reduce-overhead (CUDA only)")
    lev.add_argument("--bf16-weights", action="store_true", help="bf16 parameters (StableAdamW adds Kahan sums)")
    lev.add_argument("--rows", type=int, default=None, help="our microbatch in rows of seq_len (default: config)")
    lev.add_argument("--no-static-shapes", action="store_true",
                     help="pass only real tokens and the true max_seqlen (shapes change every batch)")
    lev.add_argument("--optimizer", choices=("auto", "stableadamw", "adamw"), default="auto",
                     help="ours: auto = StableAdamW if torch-optimi imports, else fused AdamW")
    ref = p.add_argument_group("transformers baseline")
    ref.add_argument("--no-hf", action="store_true", help="skip transformers")
    ref.add_argument("--hf-rows", type=int, default=None, help="transformers microbatch (default: config)")
    ref.add_argument("--hf-compile", action="store_true", help="also torch.compile the transformers model")
    run = p.add_argument_group("measurement")
    run.add_argument("--steps", type=int, default=None, help="timed steps (GPU 10, tiny 2)")
    run.add_argument("--warmup", type=int, default=None, help="warmup steps (GPU 3, tiny 1); compiled: >= batches+2")
    run.add_argument("--batches", type=int, default=None, help="distinct batches cycled (GPU 6, tiny 2)")
    run.add_argument("--threads", type=int, default=None, help="CPU threads for torch (CPU default: 1)")
    run.add_argument("--max-seconds", type=float, default=0.0,
                     help="time budget: no new variant starts after it, a running one stops timing (0: none)")
    run.add_argument("--peak-tflops", type=float, default=989.0, help="MFU denominator (H100 SXM dense bf16)")
    run.add_argument("--mask-prob", type=float, default=0.3)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--json-out", type=Path, default=None, help="also write the JSON summary here")
    docs = p.add_argument_group("document lengths (override the config's distribution)")
    for name, help_ in (("median", "lognormal body median"), ("sigma", "lognormal body sigma"),
                        ("tail_frac", "share of documents from the Pareto tail"),
                        ("tail_min", "Pareto tail scale (tokens)"), ("tail_alpha", "Pareto tail exponent")):
        docs.add_argument(f"--doc-{name.replace('_', '-')}", dest=f"doc_{name}", type=float, default=None,
                          help=help_)
    args = p.parse_args(argv)
    args.steps = args.steps or (2 if args.tiny else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    args.batches = args.batches or (2 if args.tiny else 6)
    if args.steps < 1 or args.warmup < 0 or args.batches < 1:
        p.error("--steps and --batches must be >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    elif args.device == "cpu":
        torch.set_num_threads(1)  # small CPU ops contend badly for shared cores; one thread is steadier
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available; use --device cpu --tiny")
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown config(s) {unknown}; choose from {list(CONFIGS)}")
    return args


def plan(args) -> list[tuple[str, Variant]]:
    if args.sweep:
        todo = sweep_variants(args.configs)
        return [(c, v) for c, v in todo if not (args.no_hf and v.impl == "transformers")]
    ours = Variant("ours", attn=args.attn, compile=args.compile or args.cuda_graphs,
                   compile_scope=args.compile_scope, compile_mode=args.compile_mode, cuda_graphs=args.cuda_graphs,
                   dynamic={"auto": None, "true": True, "false": False}[args.compile_dynamic],
                   bf16_weights=args.bf16_weights, rows=args.rows, static_shapes=not args.no_static_shapes)
    todo = []
    for c in args.configs:
        if not args.no_hf:
            todo.append((c, Variant("transformers", compile=args.hf_compile, rows=args.hf_rows)))
        todo.append((c, ours))
    return todo


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    table = TINY_CONFIGS if args.tiny else CONFIGS
    torch.set_float32_matmul_precision("high")
    start = time.monotonic()
    deadline = start + args.max_seconds if args.max_seconds > 0 else float("inf")
    env = environment(device)
    print(f"train_throughput: {json.dumps(env)}", flush=True)
    if args.tiny:
        print("TINY MODE: tiny presets, a few steps; the figures check the code, they say nothing about GPU speed",
              flush=True)

    pools: dict[tuple[str, int, bool], dict] = {}
    cache: dict[tuple[str, int, bool], list[Batch]] = {}
    results: list[dict] = []
    for name, variant in plan(args):
        bc = table[name]
        rows = (variant.rows or bc.rows) * variant.rows_mult
        describe = variant.describe()
        if time.monotonic() > deadline:
            print(f"[{name}] {describe}: skipped (--max-seconds {args.max_seconds:g} reached)", flush=True)
            results.append({"config": name, "variant": describe, "impl": variant.impl, "status": "skipped",
                            "error": "time budget reached"})
            continue
        static = variant.static_shapes
        key = (name, rows, static)
        print(f"[{name}] {describe} ...", flush=True)
        try:
            note = compile_note(device, variant)
            if note:
                print(f"  note: {note}", flush=True)
                results.append({"config": name, "variant": describe, "impl": variant.impl, "status": "skipped",
                                "error": note})
                continue
            if key not in cache:
                cache[key], pools[key] = build_pool(args, bc, rows, static, device)
            res = run_variant(args, bc, variant, cache[key], device, deadline)
            res["packing_efficiency"] = pools[key]["packing_efficiency"]
            print(f"  {res['real_tokens_per_s']:,.0f} real tokens/s, MFU {_pct(res['mfu'])}, peak "
                  f"{res['peak_mem_gib']:.2f} GiB, step {res['step_s'] * 1e3:.1f} ms, warmup {res['warmup_s']:.1f} s, "
                  f"attn {res['attn']}, {res['optimizer']}"
                  + (f", graph breaks {res['graph_breaks']}" if "graph_breaks" in res else ""), flush=True)
        except Exception as err:  # OOM, missing backend, compile failure: report and go on
            msg = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:400]
            print(f"  FAILED {msg}", flush=True)
            if os.environ.get("BENCH_TRACEBACK"):
                traceback.print_exc()
            res = {"config": name, "variant": describe, "impl": variant.impl, "status": "failed", "error": msg}
        finally:
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        results.append(res)

    for name in dict.fromkeys(r["config"] for r in results):
        base = next((r for r in results if r["config"] == name and r["impl"] == "transformers"
                     and r["status"] == "ok" and not r["variant"].endswith("compiled")), None)
        for r in results:
            if r["config"] == name and r["status"] == "ok":
                r["ratio_vs_transformers"] = (r["real_tokens_per_s"] / base["real_tokens_per_s"]) if base else None
    print_tables(results, pools, device, args)
    summary = {
        "bench": "train_throughput",
        "tiny": args.tiny,
        "env": env,
        "peak_tflops": args.peak_tflops,
        "wall_s": time.monotonic() - start,
        "data": {f"{n}|rows={r}|{'static' if s else 'dynamic'}": v for (n, r, s), v in pools.items()},
        "results": results,
    }
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary), flush=True)
    return 0 if any(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
