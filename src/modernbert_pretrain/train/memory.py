"""The dry run's memory plan: estimated peak GPU memory per device for one training microbatch.

Parts (docs/memory.md holds the method, its validation and its error bound):
- parameters, gradients, optimizer state: counted from the model (fp32 weights, fp32 gradients plus DDP's
  gradient buckets when there are several ranks, StableAdamW's two fp32 moments);
- activations: the bytes autograd saves during one forward of the real model at the config's shape, counted on
  fake CUDA tensors under the run's autocast (train/saved_tensors.py); for a compiled run, the encoder's saved
  tensors are those the partitioner that torch.compile uses keeps;
- head: the MLM head's saved tensors (log-softmax of the masked-token logits) plus its backward temporaries.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import torch

from ..config import TrainConfig
from ..model import ModernBertConfig, ModernBertForMaskedLM
from ..schema import ConfigError

GB = 10**9
DEFAULT_GPU_MEMORY = "80GB"
"""An H100 80GB: CUDA sees 81,559 MiB (85.5 GB); the 5.5 GB above 80 GB is left for the CUDA context,
library workspaces and allocator fragmentation, which the plan does not count."""
ERROR_BOUND = 0.10
"""Relative error bound of the total (docs/memory.md, "Error bound")."""

_UNITS = {"": GB, "gb": GB, "gib": 2**30, "mb": 10**6, "mib": 2**20, "tb": 10**12}


def parse_memory(text: str) -> int:
    """'80GB', '79.6GiB', '40000MiB' -> bytes. A bare number is GB."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
        raise ConfigError(f"--gpu-memory: {text!r} is not a memory size; write e.g. 80GB, 79.6GiB or 40000MiB")
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass(frozen=True)
class RunSetup:
    """What the run will do on a GPU, as far as memory is concerned."""

    precision: str
    """amp_bf16 or fp32."""
    compiled: bool
    """Whether the encoder is compiled (train/builder.py compiles `model.model` on GPU unless compile: off)."""
    attention: str
    """'flash-like' (flash_attn, torch_varlen, flex: q, k, v, output and a log-sum-exp are kept) or 'sdpa'."""


def gpu_setup(cfg: TrainConfig) -> RunSetup:
    """The setup train/builder.py picks on a GPU for this config."""
    precision = "amp_bf16" if cfg.precision == "auto" else cfg.precision
    # Every backend that `auto` may pick on CUDA is a fused varlen kernel with the same saved tensors.
    attention = "sdpa" if cfg.model_config().attn_backend == "sdpa" else "flash-like"
    return RunSetup(precision=precision, compiled=cfg.compile != "off", attention=attention)


def state_bytes(model: ModernBertForMaskedLM, world_size: int) -> dict[str, int]:
    """fp32 weights, fp32 gradients (+ DDP's bucket copy of them on several ranks) and StableAdamW's exp_avg and
    exp_avg_sq in the weights' dtype. Tied weights count once."""
    numel = sum(p.numel() for p in model.parameters())
    buckets = 4 * numel if world_size > 1 else 0  # Composer's DDP keeps gradient_as_bucket_view=False
    return {"parameters": 4 * numel, "gradients": 4 * numel + buckets, "optimizer_state": 8 * numel}


def head_backward_bytes(masked: int, vocab: int, setup: RunSetup) -> int:
    """Beyond the saved log-softmax: the fp32 gradient of the log-softmax and the fp32 gradient of the logits
    exist together in cross-entropy's backward, while the logits themselves (in the compute dtype) are still held
    by the step's outputs."""
    logits = 2 if setup.precision == "amp_bf16" else 4
    return masked * vocab * (4 + 4 + logits)


def masked_tokens(cfg: TrainConfig) -> int:
    return math.ceil(cfg.data.mask_prob * cfg.data.device_microbatch_size * cfg.data.seq_len)


_SAVED_CACHE: dict[tuple, dict[str, int]] = {}


def activation_bytes(model_cfg: ModernBertConfig, rows: int, seq_len: int, masked: int,
                     setup: RunSetup) -> dict[str, int]:
    """Saved-for-backward bytes of one microbatch of `rows` x `seq_len` tokens, by 'encoder' and 'head'. Cached
    per process by the config's repr: base phases 1-3 share one shape (tokens per microbatch are constant)."""
    from .fake_forward import saved_bytes

    key = (repr(model_cfg), rows, seq_len, masked, setup)
    if key not in _SAVED_CACHE:
        _SAVED_CACHE[key] = saved_bytes(model_cfg, rows, seq_len, masked, setup)
    return dict(_SAVED_CACHE[key])


def memory_plan(cfg: TrainConfig, world_size: int, gpu_memory: int) -> dict:
    setup = gpu_setup(cfg)
    model_cfg = cfg.model_config()
    with torch.device("meta"):
        model = ModernBertForMaskedLM(model_cfg, init=False)
    masked = masked_tokens(cfg)
    saved = activation_bytes(model_cfg, cfg.data.device_microbatch_size, cfg.data.seq_len, masked, setup)
    parts = state_bytes(model, world_size)
    parts["activations"] = saved["encoder"]
    parts["head"] = saved["head"] + head_backward_bytes(masked, model_cfg.vocab_size, setup)
    total = sum(parts.values())
    upper = int(total * (1 + ERROR_BOUND))
    verdict = "fits" if upper <= gpu_memory else "may not fit" if total <= gpu_memory else "does not fit"
    return {"estimate": True, "setup": asdict(setup), "microbatch": cfg.data.device_microbatch_size,
            "seq_len": cfg.data.seq_len, "masked_tokens": masked, "bytes": parts, "total_bytes": total,
            "error_bound": ERROR_BOUND, "upper_bytes": upper, "gpu_memory_bytes": gpu_memory, "verdict": verdict,
            "fits": verdict == "fits"}


def format_table(plan: dict) -> str:
    """The plan as lines for a person; the JSON object carries the same numbers."""
    setup = plan["setup"]
    compiled = "compiled" if setup["compiled"] else "eager"
    lines = [f"memory plan per GPU (estimate, +-{plan['error_bound']:.0%}): microbatch {plan['microbatch']} x "
             f"{plan['seq_len']} tokens, {plan['masked_tokens']} masked; {setup['precision']}, {compiled}, "
             f"{setup['attention']} attention"]
    for name, value in plan["bytes"].items():
        lines.append(f"  {name.replace('_', ' '):<18}{value / GB:8.1f} GB")
    lines.append(f"  {'total':<18}{plan['total_bytes'] / GB:8.1f} GB (up to {plan['upper_bytes'] / GB:.1f} GB)")
    lines.append(f"  {plan['verdict']} in {plan['gpu_memory_bytes'] / GB:.1f} GB")
    return "\n".join(lines)
