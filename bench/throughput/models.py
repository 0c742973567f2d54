"""Both models and their optimizers. Ours uses the trainer's optimizer (modernbert_pretrain.train.optim)."""

from __future__ import annotations

import torch

from modernbert_pretrain import ModernBertConfig, ModernBertForMaskedLM
from modernbert_pretrain.config import OptimizerConfig
from modernbert_pretrain.data import IGNORE_INDEX
from modernbert_pretrain.train.optim import build_optimizer, param_groups

from .configs import BenchConfig, Variant


def our_config(bc: BenchConfig, attn: str) -> ModernBertConfig:
    return ModernBertConfig.from_preset(bc.preset, attn_backend=attn, validate_inputs=False,
                                        max_position_embeddings=max(bc.seq_len, 1024), **bc.overrides)


def _hf_config(cfg: ModernBertConfig):
    """transformers' ModernBertConfig with our shape, sdpa attention and the sparse head."""
    import inspect

    import transformers

    hf_cls = transformers.ModernBertConfig
    accepted = set(inspect.signature(hf_cls.__init__).parameters)
    # Keys 5.x takes through **kwargs (RoPE bases, layer pattern); named parameters on 4.x.
    accepted |= {"global_rope_theta", "local_rope_theta", "global_attn_every_n_layers"}
    values = {k: v for k, v in cfg.to_hf_dict().items() if k in accepted}
    values["sparse_prediction"] = True
    values["sparse_pred_ignore_index"] = IGNORE_INDEX
    if int(transformers.__version__.split(".")[0]) < 5:
        # 4.x compiles parts of the model itself when triton is importable; 5.x deprecates that. Keep both
        # eager so the baseline is the same on both versions (--hf-compile compiles the whole model instead).
        values["reference_compile"] = False
    return hf_cls(**values, attn_implementation="sdpa")


def hf_model(cfg: ModernBertConfig, device: torch.device):
    """transformers' ModernBertForMaskedLM (sdpa, sparse head); works on transformers 4.48+ and 5.x."""
    import transformers

    hf_cfg = _hf_config(cfg)
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


def our_model(cfg: ModernBertConfig, variant: Variant, device: torch.device) -> tuple[ModernBertForMaskedLM, str]:
    """Our model with its attention backend resolved up front (as the trainer does before compiling) and,
    for --bf16-weights, bf16 parameters. Returns (model, backend)."""
    with torch.device(device):
        model = ModernBertForMaskedLM(cfg).train()
    amp_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    dtype = torch.bfloat16 if variant.bf16_weights else amp_dtype
    backend = model.model.resolve_attn_backend(device, dtype)
    if variant.bf16_weights:
        # Parameters only: model.to(bfloat16) would also round the RoPE inv_freq buffers to bf16.
        with torch.no_grad():
            for p in model.parameters():
                p.data = p.data.to(torch.bfloat16)
    return model, backend


def compile_model(model: torch.nn.Module, variant: Variant):
    """Apply the variant's torch.compile scope; returns the callable to train through."""
    if not variant.compile:
        return model
    mode = "reduce-overhead" if variant.cuda_graphs else variant.compile_mode
    if variant.impl == "ours" and variant.compile_scope == "encoder":
        model.model = torch.compile(model.model, mode=mode, dynamic=variant.dynamic)
        return model
    if variant.impl == "ours" and variant.compile_scope == "layers":
        # regional compilation: identical layers share compiled code (one per global/local kind)
        for i, layer in enumerate(model.model.layers):
            model.model.layers[i] = torch.compile(layer, mode=mode, dynamic=variant.dynamic)
        return model
    return torch.compile(model, mode=mode, dynamic=variant.dynamic)


def make_optimizer(model: torch.nn.Module, impl: str, choice: str, device: torch.device):
    """ours: the trainer's optimizer (train.optim.build_optimizer: torch-optimi StableAdamW) unless optimi is
    missing or --optimizer adamw; transformers: torch AdamW, fused. Both use the trainer's hyperparameters
    (OptimizerConfig defaults) and parameter groups. Returns (optimizer, description)."""
    cfg = OptimizerConfig()
    if impl == "ours" and choice in ("auto", "stableadamw"):
        try:
            opt = build_optimizer(model, cfg)
        except ImportError:
            if choice == "stableadamw":
                raise
            print("  note: torch-optimi is not installed; ours falls back to torch AdamW (fused)", flush=True)
        else:
            low = any(p.dtype in (torch.bfloat16, torch.float16) for p in model.parameters())
            kind = "triton" if device.type == "cuda" and _has_triton() else "foreach/torch"
            return opt, f"optimi.StableAdamW ({kind}{', Kahan summation' if low else ''})"
    groups = param_groups(model, cfg.weight_decay)
    try:
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=True)
        return opt, "torch.optim.AdamW(fused=True)"
    except (RuntimeError, ValueError) as err:
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, foreach=True)
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
