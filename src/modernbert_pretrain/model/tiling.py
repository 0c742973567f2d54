"""Tiled initialization: build a larger ModernBERT from a smaller one (large is tiled from base: docs/recipe.md,
"Settings shared by all phases").

Width. Every dimension that grows is centre-tiled: the source is repeated along that dimension and the window of
the target size is taken so that the middle of the source lands in the middle of the target. Target index j
reads source index `(j - (dst - src) // 2) mod src` (see `centre_index`): an odd number of copies with one copy
in the middle, cropped symmetrically. The same hidden-size map is used for every hidden dimension (embedding
columns, norms, in/out dims of every projection), so a tiled residual stream stays a tiling of the source one.
Attention heads are copied whole (a target head computes exactly what its source head computes on the tiled
input): Wqkv is tiled over the head axis of q, k and v separately and attn.Wo's input
columns follow the same head map. The GLU's input and gate halves of Wi are tiled separately with one
intermediate map (so input/gate pairs stay matched) and mlp.Wo's input columns follow it.

Depth. Target layers of each attention kind (global / local, from each config's `is_global_layer`) are mapped
onto the source layers of the same kind by centred proportional position within the kind (`layer_map`), so global
layers are never initialized from local ones (a defect of the published code: docs/published-defects.md,
"Tiling mapped layers by depth only").

Scale (`rescale=True`, the default). Plain copies (`rescale=False`) multiply every
activation by the repeat factor: a linear layer whose input is a tiled vector sums each source column as many
times as it is repeated, so q.k logits, GLU outputs, residual updates and the tied decoder's logits all blow up.
On the tiny -> tiny-large test (tests/test_tiling.py, 2x wider and deeper; seeds 0-7) plain copies started at a
loss of 7.5-14.4, far above a random initialization (~4.2), while the source model was at 0.8-1.0. So instead:
- width: the input columns of every linear layer (Wqkv, attn.Wo, mlp.Wi, mlp.Wo, head.dense) are divided by how
  often that input index is repeated, and so is head.norm (the input of the tied decoder). A tiled vector then
  maps to the tiled source output exactly, for any sizes (not only multiples); only LayerNorm statistics differ
  when the target size is not a multiple. Width-only tiling of the test model reproduces its loss exactly.
- depth: a source layer used by k target layers has its residual-writing projections (attn.Wo, mlp.Wo) divided
  by k in each copy, so the k copies take steps of 1/k that together approximate the source's one step (the
  residual-ODE view).
With both, the tiled model starts at 0.9-1.4 on that test, 0.1-0.34 above its source. The depth scaling earns
its place: in a longer-trained variant (source 0.67-0.70) width scaling alone gave 1.0-1.7, both gave 0.75-0.9.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from .config import ModernBertConfig
from .hf import normalize_key
from .modeling import ModernBertForMaskedLM

_TOK = "model.embeddings.tok_embeddings.weight"
_DECODER = "decoder.weight"
_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)$")

# How each tensor is tiled: one letter per axis of its view, commas between the tensor's own dimensions (a
# dimension with several letters is viewed as those axes). h = hidden, H = attention heads, d = head_dim (never
# grows), I = intermediate, v = vocab (never grows), 3 / 2 = the q/k/v and input/gate blocks. A dimension marked
# "/" is an input that gets divided by its repeat count when rescaling (see the module docstring): the input
# columns of every linear layer, and head.norm, whose output is the input of the tied decoder.
_LAYER_LAYOUT = {
    "attn_norm.weight": "h",
    "attn_norm.bias": "h",
    "attn.Wqkv.weight": "3Hd,/h",
    "attn.Wqkv.bias": "3Hd",
    "attn.Wo.weight": "h,/Hd",
    "attn.Wo.bias": "h",
    "mlp_norm.weight": "h",
    "mlp_norm.bias": "h",
    "mlp.Wi.weight": "2I,/h",
    "mlp.Wi.bias": "2I",
    "mlp.Wo.weight": "h,/I",
    "mlp.Wo.bias": "h",
}
# Projections that write into the residual stream; divided by the number of copies of their layer when rescaling.
_RESIDUAL_WRITERS = ("attn.Wo.weight", "attn.Wo.bias", "mlp.Wo.weight", "mlp.Wo.bias")
_TOP_LAYOUT = {
    _TOK: "v,h",
    "model.embeddings.norm.weight": "h",
    "model.embeddings.norm.bias": "h",
    "model.final_norm.weight": "h",
    "model.final_norm.bias": "h",
    "head.dense.weight": "h,/h",
    "head.dense.bias": "h",
    "head.norm.weight": "/h",
    "head.norm.bias": "/h",
    "decoder.bias": "v",
}


def centre_index(src: int, dst: int) -> Tensor:
    """Source index for each of `dst` target positions: the source repeated and the centred window of size
    `dst` taken, so that the middle of the source lands in the middle of the target (identity when equal).

    >>> centre_index(4, 6).tolist()
    [3, 0, 1, 2, 3, 0]
    """
    if src <= 0 or dst < src:
        raise ValueError(f"centre tiling needs 0 < src <= dst, got src={src}, dst={dst}")
    return (torch.arange(dst) - (dst - src) // 2) % src


def centre_tile(tensor: Tensor, sizes: dict[int, int]) -> Tensor:
    """Centre-tile `tensor` along each axis in `sizes` (axis -> target size)."""
    out = tensor
    for axis, size in sizes.items():
        index = centre_index(out.shape[axis], size).to(out.device)
        out = out.index_select(axis, index)
    return out


def _kinds(config: ModernBertConfig) -> list[bool]:
    return [config.is_global_layer(i) for i in range(config.num_hidden_layers)]


def layer_map(src_config: ModernBertConfig, dst_config: ModernBertConfig) -> list[int]:
    """For each target layer, the source layer it is initialized from.

    Global-attention target layers come from global source layers and local ones from local ones. Within a kind,
    the p-th of n_dst target layers takes the source layer of that kind at centred proportional position
    floor((p + 1/2) * n_src / n_dst): the order is kept, the first target layer of a kind comes from the first
    source layer of that kind, the last from the last, and repeats are spread evenly over the depth.
    """
    src_kinds, dst_kinds = _kinds(src_config), _kinds(dst_config)
    mapping = [-1] * len(dst_kinds)
    for is_global in (True, False):
        kind = "global" if is_global else "local"
        src_idx = [i for i, g in enumerate(src_kinds) if g == is_global]
        dst_idx = [i for i, g in enumerate(dst_kinds) if g == is_global]
        if dst_idx and not src_idx:
            raise ValueError(
                f"cannot tile: the target has {kind}-attention layers {dst_idx[:4]}... but the source "
                f"({src_config.num_hidden_layers} layers, global_attn_every_n_layers="
                f"{src_config.global_attn_every_n_layers}) has no {kind} layer to initialize them from")
        n_src, n_dst = len(src_idx), len(dst_idx)
        for p, target in enumerate(dst_idx):
            mapping[target] = src_idx[(2 * p + 1) * n_src // (2 * n_dst)]
    return mapping


def _check_configs(src: ModernBertConfig, dst: ModernBertConfig) -> None:
    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        s, d = getattr(src, name), getattr(dst, name)
        if s > d:
            raise ValueError(f"cannot tile to a smaller model: source {name}={s} > target {name}={d}")
    if src.vocab_size != dst.vocab_size:
        raise ValueError(f"cannot tile across vocabularies: source vocab_size={src.vocab_size} != target "
                         f"vocab_size={dst.vocab_size} (token embedding and decoder bias rows are token ids)")
    if not (src.tie_word_embeddings and dst.tie_word_embeddings):
        raise ValueError("cannot tile an untied decoder (tie_word_embeddings: false): tiling rebuilds the decoder from "
                         "the token embedding, so the source's own decoder would be lost")
    if src.head_dim != dst.head_dim:
        raise ValueError(
            f"cannot tile: heads are copied whole, so head_dim must match; source head_dim={src.head_dim} "
            f"(hidden_size={src.hidden_size} / num_attention_heads={src.num_attention_heads}) != target "
            f"head_dim={dst.head_dim} (hidden_size={dst.hidden_size} / num_attention_heads="
            f"{dst.num_attention_heads})")


def _tile_by_layout(tensor: Tensor, layout: str, src: ModernBertConfig, dst: ModernBertConfig, key: str,
                    rescale: bool) -> Tensor:
    sizes = {
        "h": (src.hidden_size, dst.hidden_size),
        "H": (src.num_attention_heads, dst.num_attention_heads),
        "d": (src.head_dim, dst.head_dim),
        "I": (src.intermediate_size, dst.intermediate_size),
        "v": (src.vocab_size, dst.vocab_size),
        "3": (3, 3),
        "2": (2, 2),
    }
    groups = layout.split(",")
    divided = [i for i, g in enumerate(groups) if g.startswith("/")]
    groups = [g.lstrip("/") for g in groups]
    letters = "".join(groups)
    src_shape = tuple(torch.Size([sizes[c][0] for c in g]).numel() for g in groups)
    if tuple(tensor.shape) != src_shape:
        raise ValueError(f"{key}: shape {tuple(tensor.shape)} does not match the source config (expected {src_shape})")
    grow = {axis: sizes[c][1] for axis, c in enumerate(letters) if sizes[c][1] != sizes[c][0]}
    out = centre_tile(tensor.reshape([sizes[c][0] for c in letters]), grow)
    if rescale and divided:
        first = sum(len(g) for g in groups[: divided[0]])
        for axis in range(first, first + len(groups[divided[0]])):
            if axis in grow:
                index = centre_index(sizes[letters[axis]][0], grow[axis])
                count = torch.bincount(index)[index].to(device=out.device, dtype=out.dtype)
                shape = [1] * out.dim()
                shape[axis] = -1
                out = out / count.view(shape)
    return out.reshape([torch.Size([sizes[c][1] for c in g]).numel() for g in groups])


def tile_state_dict(src_state: dict[str, Tensor], src_config: ModernBertConfig,
                    dst_config: ModernBertConfig, *, rescale: bool = True) -> dict[str, Tensor]:
    """A state dict for `ModernBertForMaskedLM(dst_config)` tiled from a smaller model's state dict.

    Keys are transformers' ModernBERT names (wrappers such as `_orig_mod.` are stripped). `decoder.weight` is
    tied: it is the same tensor as the token embedding (a source `decoder.weight` is ignored). Parameters the
    target has and the source lacks are initialized as the model's init would: a bias the source config does not
    have is zeros, and a target attn_norm whose layer maps from source layer 0 (which has no attn_norm) is ones.
    A bias the source has but the target config drops is an error rather than silently lost.
    """
    _check_configs(src_config, dst_config)
    state = {normalize_key(k): v for k, v in src_state.items()}
    state.pop(_DECODER, None)
    if _TOK not in state:
        raise ValueError(f"source state dict has no {_TOK}: is it a ModernBERT masked-LM checkpoint?")
    like = state[_TOK]

    with torch.device("meta"):
        expected = ModernBertForMaskedLM(dst_config, init=False).state_dict()
    mapping = layer_map(src_config, dst_config)

    def source_key(key: str) -> tuple[str, str]:
        match = _LAYER_KEY.match(key)
        if match is None:
            return key, _TOP_LAYOUT[key]
        i, rest = int(match.group(1)), match.group(2)
        return f"model.layers.{mapping[i]}.{rest}", _LAYER_LAYOUT[rest]

    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for key, meta in expected.items():
        if key == _DECODER:
            continue
        src_key, layout = source_key(key)
        if src_key in state:
            tensor = _tile_by_layout(state[src_key], layout, src_config, dst_config, src_key, rescale)
            match = _LAYER_KEY.match(key)
            if rescale and match and match.group(2) in _RESIDUAL_WRITERS:
                copies = mapping.count(mapping[int(match.group(1))])
                if copies > 1:
                    tensor = tensor / copies
            used.add(src_key)
        elif key.endswith(".bias"):
            tensor = torch.zeros(meta.shape, dtype=like.dtype, device=like.device)
        elif key.endswith("attn_norm.weight") and src_key.startswith("model.layers.0."):
            # Source layer 0 feeds the embedding norm's output straight into attention (no attn_norm); a deeper
            # copy of it gets a fresh LayerNorm, weight ones, the model's own initialization.
            tensor = torch.ones(meta.shape, dtype=like.dtype, device=like.device)
        else:
            raise ValueError(f"source state dict has no {src_key} (needed for target {key})")
        if tensor.shape != meta.shape:
            raise ValueError(f"{key}: tiled shape {tuple(tensor.shape)} != target shape {tuple(meta.shape)}")
        # A fresh tensor even where nothing grew, so the result never aliases the source (or another layer).
        out[key] = tensor.clone(memory_format=torch.contiguous_format)
    out[_DECODER] = out[_TOK]

    dropped, unknown = [], []
    for key in sorted(set(state) - used):
        match = _LAYER_KEY.match(key)
        if match and match.group(2) in _LAYER_LAYOUT and int(match.group(1)) < src_config.num_hidden_layers:
            if int(match.group(1)) in mapping:
                dropped.append(key)
            # else: a source layer no target layer reads (only when one attention kind shrinks); not an error.
        elif key in _TOP_LAYOUT:
            dropped.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"source state dict has keys that are not ModernBERT masked-LM parameters of a "
                         f"{src_config.num_hidden_layers}-layer model: {unknown[:6]}")
    if dropped:
        raise ValueError(f"the target config has no place for source parameters {dropped[:6]}: enable the "
                         "matching bias (attention_bias, mlp_bias, norm_bias, ...) in the target config")
    return out


def tile_model(src_model: ModernBertForMaskedLM, dst_config: ModernBertConfig, *,
               rescale: bool = True) -> ModernBertForMaskedLM:
    """A new `ModernBertForMaskedLM(dst_config)` tiled from `src_model`, decoder tied. Parameters keep the source's
    device and dtypes; RoPE buffers are built fresh (float32) on that device."""
    state = tile_state_dict(src_model.state_dict(), src_model.config, dst_config, rescale=rescale)
    with torch.device(state[_TOK].device):
        model = ModernBertForMaskedLM(dst_config, init=False)
    model.load_state_dict(state, strict=True, assign=True)  # assign: keep the tiled tensors' dtypes
    model.tie_weights()
    return model.train(src_model.training)
