"""Model configuration: field names follow transformers' ModernBertConfig so that a
`config.json` maps onto it directly."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from ..constants import IGNORE_INDEX
from ..schema import check_keys
from .attention import backend_choices

log = logging.getLogger(__name__)

ACTIVATIONS = ("gelu", "gelu_pytorch_tanh", "gelu_new", "silu")

# Keys of a transformers config.json that carry no architecture information for the MLM model
# (bookkeeping, generation, other heads). They are accepted on load and ignored.
_HF_IGNORED_KEYS = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path",
    "classifier_pooling", "classifier_dropout", "reference_compile", "repad_logits_with_grad",
    "sparse_prediction", "sparse_pred_ignore_index", "deterministic_flash_attn",
    "position_embedding_type", "id2label", "label2id", "problem_type", "use_cache", "return_dict",
    "output_hidden_states", "output_attentions", "torchscript", "pruned_heads", "chunk_size_feed_forward",
    "is_encoder_decoder", "is_decoder", "add_cross_attention", "tokenizer_class", "prefix",
    "task_specific_params", "finetuning_task", "num_labels", "_attn_implementation_autoset",
    "modernbert_pretrain", "initializer_range", "initializer_cutoff_factor", "classifier_activation",
    "gradient_checkpointing", "head_dim", "output_router_logits", "bos_token_id", "eos_token_id",
    "bos_token_id_", "eos_token_id_",
}


@dataclass
class ModernBertConfig:
    """Shape and behaviour of a ModernBERT encoder with its MLM head."""

    vocab_size: int = 50368
    """Rows of the token embedding and of the decoder."""
    hidden_size: int = 768
    """Width of the residual stream."""
    intermediate_size: int = 1152
    """Width of one GLU half: `mlp.Wi` has 2 * intermediate_size output rows."""
    num_hidden_layers: int = 22
    """Number of encoder layers."""
    num_attention_heads: int = 12
    """Attention heads; hidden_size must be divisible by it."""
    hidden_activation: str = "gelu"
    """Activation of the GLU (GeGLU with exact gelu in the recipe) and of the MLM head."""
    max_position_embeddings: int = 8192
    """Longest document (in tokens) the model accepts."""
    norm_eps: float = 1e-5
    """LayerNorm epsilon."""
    norm_bias: bool = False
    """Whether LayerNorms have a bias (none in ModernBERT)."""
    attention_bias: bool = False
    """Bias on Wqkv and attn.Wo."""
    mlp_bias: bool = False
    """Bias on mlp.Wi and mlp.Wo."""
    classifier_bias: bool = False
    """Bias on head.dense."""
    decoder_bias: bool = True
    """Bias on the decoder."""
    tie_word_embeddings: bool = True
    """The MLM decoder shares the token embedding's weight (ModernBERT). False gives the decoder its own
    (vocab_size, hidden_size) matrix, as transformers does for `tie_word_embeddings: false`."""
    global_rope_theta: float = 160000.0
    """RoPE base of the global-attention layers (10k in phase 1, 160k after context extension)."""
    local_rope_theta: float = 10000.0
    """RoPE base of the sliding-window layers."""
    global_attn_every_n_layers: int = 3
    """Layer i uses global attention when i % N == 0, a sliding window otherwise."""
    local_attention: int = 128
    """Sliding window width: a token sees +- local_attention // 2 neighbours."""
    embedding_dropout: float = 0.0
    """Dropout after the embedding norm."""
    attention_dropout: float = 0.0
    """Dropout on attention probabilities (0 in the recipe; only the sdpa and flash_attn backends support it)."""
    attention_output_dropout: float = 0.1
    """Dropout on the attention output projection (0.1 in the recipe)."""
    mlp_dropout: float = 0.0
    """Dropout inside the GLU."""
    pad_token_id: int = 50283
    """[PAD] id."""
    bos_token_id: int = 50281
    """Same as [CLS] in ModernBERT."""
    eos_token_id: int = 50282
    """Same as [SEP] in ModernBERT."""
    cls_token_id: int = 50281
    """[CLS] id."""
    sep_token_id: int = 50282
    """[SEP] id."""
    mask_token_id: int | None = 50284
    """[MASK] id (transformers' config has none; the tokenizer is the authority)."""
    init_std: float = 0.02
    """Megatron init: std of every input projection and embedding."""
    init_cutoff_factor: float = 2.0
    """Truncated normal cut at this many std."""
    attn_backend: str = "auto"
    """Attention implementation: auto or a backend registered in model/attention.py (flash_attn, sdpa, ...)."""
    validate_inputs: bool = True
    """Check token ids and document lengths on every forward (one host sync per step)."""
    preset: str | None = field(default=None)
    """Name of the preset this config came from, if any (informational)."""

    def __post_init__(self) -> None:
        def need(cond: bool, name: str, msg: str) -> None:
            if not cond:
                raise ValueError(f"ModernBertConfig.{name}: {msg}")

        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "max_position_embeddings", "global_attn_every_n_layers"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value > 0, name,
                 f"must be a positive integer, got {value!r}")
        need(self.hidden_size % self.num_attention_heads == 0, "hidden_size",
             f"{self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}")
        need((self.hidden_size // self.num_attention_heads) % 2 == 0, "num_attention_heads",
             "head_dim = hidden_size / num_attention_heads must be even for RoPE")
        need(isinstance(self.local_attention, int) and self.local_attention >= 0
             and self.local_attention % 2 == 0, "local_attention",
             f"must be a non-negative even integer (window +- local_attention/2), got {self.local_attention!r}")
        for name in ("global_rope_theta", "local_rope_theta"):
            value = getattr(self, name)
            need(isinstance(value, (int, float)) and value > 0, name,
                 f"must be a positive number, got {value!r} (the published exporter wrote -1 here, which "
                 "gives NaN logits)")
        for name in ("embedding_dropout", "attention_dropout", "attention_output_dropout", "mlp_dropout"):
            value = getattr(self, name)
            need(isinstance(value, (int, float)) and 0.0 <= value < 1.0, name, f"must be in [0, 1), got {value!r}")
        need(isinstance(self.tie_word_embeddings, bool), "tie_word_embeddings",
             f"must be true or false, got {self.tie_word_embeddings!r}")
        need(self.hidden_activation in ACTIVATIONS, "hidden_activation",
             f"{self.hidden_activation!r} is not supported; use one of {ACTIVATIONS}")
        need(self.attn_backend in backend_choices(), "attn_backend",
             f"unknown backend {self.attn_backend!r}; choose one of {backend_choices()}")
        for name in ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id"):
            value = getattr(self, name)
            if value is None and name == "mask_token_id":
                continue
            need(isinstance(value, int) and 0 <= value < self.vocab_size, name,
                 f"{value!r} is outside the vocabulary [0, {self.vocab_size})")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def is_global_layer(self, layer_idx: int) -> bool:
        return layer_idx % self.global_attn_every_n_layers == 0

    # ----- presets -------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ModernBertConfig:
        """A named shape (`tiny`, `base`, `large`) with field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        values = dict(PRESETS[name])
        values["preset"] = name
        _check_keys(overrides, "ModernBertConfig.from_preset overrides")
        values.update(overrides)
        return cls(**values)

    # ----- transformers interop -------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModernBertConfig:
        """Build from our own field names; unknown keys are an error naming the closest field."""
        _check_keys(values, "model config")
        return cls(**values)

    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any]) -> ModernBertConfig:
        """Map a transformers ModernBertConfig dict (config.json) onto ours."""
        if hf.get("model_type", "modernbert") != "modernbert":
            raise ValueError(f"config.json has model_type={hf.get('model_type')!r}; only 'modernbert' can be mapped")
        hf = _normalize_hf_spellings(dict(hf))
        ours = dict(hf.get("modernbert_pretrain", {}))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = []
        for key, value in hf.items():
            if key in names:
                ours.setdefault(key, value)
            elif key == "initializer_range":
                ours.setdefault("init_std", value)
            elif key == "initializer_cutoff_factor":
                ours.setdefault("init_cutoff_factor", value)
            elif key not in _HF_IGNORED_KEYS:
                unknown.append(key)
        head_act = hf.get("classifier_activation", ours.get("hidden_activation", "gelu"))
        if head_act != ours.get("hidden_activation", "gelu"):
            raise ValueError(f"config.json: classifier_activation={head_act!r} differs from hidden_activation="
                             f"{ours.get('hidden_activation')!r}; this model uses one activation for both")
        if unknown and hf.get("model_type") != "modernbert":
            raise ValueError(
                f"config.json has keys that cannot be mapped to ModernBERT: {sorted(unknown)}. "
                "Is this a ModernBERT checkpoint?"
            )
        if unknown:
            # transformers' ModernBertForMaskedLM reads none of these either, so ignoring them keeps parity.
            log.warning("config.json: ignoring keys that ModernBERT does not use: %s", sorted(unknown))
        # transformers uses one field for both attention dropouts; keep ours unless recorded.
        if "attention_output_dropout" not in hf.get("modernbert_pretrain", {}):
            ours["attention_output_dropout"] = hf.get("attention_dropout", 0.0)
        ours.setdefault("mask_token_id", None)
        if ours.get("local_rope_theta") is None:
            ours["local_rope_theta"] = ours.get("global_rope_theta", 160000.0)
        return cls(**ours)

    def to_hf_dict(self) -> dict[str, Any]:
        """A config.json that transformers' ModernBertForMaskedLM loads."""
        hf = {
            "architectures": ["ModernBertForMaskedLM"],
            "model_type": "modernbert",
            "initializer_range": self.init_std,
            "initializer_cutoff_factor": self.init_cutoff_factor,
            "classifier_activation": self.hidden_activation,
            "classifier_pooling": "mean",
            "classifier_dropout": 0.0,
            "sparse_prediction": False,
            "sparse_pred_ignore_index": IGNORE_INDEX,
        }
        skip = {"init_std", "init_cutoff_factor", "attn_backend", "validate_inputs", "preset",
                "attention_output_dropout", "mask_token_id"}
        for f in dataclasses.fields(self):
            if f.name not in skip:
                hf[f.name] = getattr(self, f.name)
        # transformers applies `attention_dropout` to both probabilities and output; ours are separate.
        hf["modernbert_pretrain"] = {
            "attention_output_dropout": self.attention_output_dropout,
            "attention_dropout": self.attention_dropout,
            "mask_token_id": self.mask_token_id,
            "preset": self.preset,
        }
        return hf

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _normalize_hf_spellings(hf: dict[str, Any]) -> dict[str, Any]:
    """Older and newer transformers spellings of the same facts -> the 4.48+ keys this config uses:
    `layer_norm_eps` (sentence-transformers era), and transformers 5's `rope_parameters` per layer type
    plus `layer_types`."""
    if "layer_norm_eps" in hf:
        eps = hf.pop("layer_norm_eps")
        if "norm_eps" in hf and hf["norm_eps"] != eps:
            raise ValueError(f"config.json: layer_norm_eps={eps} and norm_eps={hf['norm_eps']} disagree")
        hf.setdefault("norm_eps", eps)
    rope = hf.pop("rope_parameters", None)
    if rope:
        for kind, ours in (("full_attention", "global_rope_theta"), ("sliding_attention", "local_rope_theta")):
            params = rope.get(kind, {})
            if params.get("rope_type", "default") != "default":
                raise ValueError(f"config.json: rope_parameters.{kind}.rope_type={params['rope_type']!r} "
                                 "(RoPE scaling) is not supported; only 'default' maps to ModernBERT")
            if "rope_theta" in params:
                hf.setdefault(ours, params["rope_theta"])
    layer_types = hf.pop("layer_types", None)
    if layer_types:
        every = hf.get("global_attn_every_n_layers", 3)
        expected = ["full_attention" if i % every == 0 else "sliding_attention" for i in range(len(layer_types))]
        if list(layer_types) != expected:
            raise ValueError(f"config.json: layer_types {layer_types} is not 'global every {every} layers "
                             "from layer 0'; this model cannot express that pattern")
    window = hf.pop("sliding_window", None)
    if window is not None and "local_attention" not in hf:
        hf["local_attention"] = 2 * int(window)
    return hf


def _check_keys(values: dict[str, Any], where: str) -> None:
    check_keys(values, [f.name for f in dataclasses.fields(ModernBertConfig)], where)


PRESETS: dict[str, dict[str, Any]] = {
    # Shapes: docs/architecture.md, "Model shapes". Phase-1 RoPE thetas (10k / 10k); later phases override the
    # global one.
    "base": dict(hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12,
                 global_rope_theta=10000.0, local_rope_theta=10000.0),
    "large": dict(hidden_size=1024, intermediate_size=2624, num_hidden_layers=28, num_attention_heads=16,
                  global_rope_theta=10000.0, local_rope_theta=10000.0),
    # Small enough for CPU tests, large enough to hold 512-token documents and several local windows.
    # The token ids are those of the tokenizer that data_prep/train_tokenizer.py writes.
    "tiny": dict(vocab_size=8192, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                 num_attention_heads=4, max_position_embeddings=1024, local_attention=32,
                 global_rope_theta=10000.0, local_rope_theta=10000.0,
                 cls_token_id=0, sep_token_id=1, pad_token_id=2, mask_token_id=3,
                 bos_token_id=0, eos_token_id=1),
    # A tiny "large": twice as wide and deep, for tiling tests.
    "tiny-large": dict(vocab_size=8192, hidden_size=128, intermediate_size=192, num_hidden_layers=6,
                       num_attention_heads=8, max_position_embeddings=1024, local_attention=32,
                       global_rope_theta=10000.0, local_rope_theta=10000.0,
                       cls_token_id=0, sep_token_id=1, pad_token_id=2, mask_token_id=3,
                       bos_token_id=0, eos_token_id=1),
}
