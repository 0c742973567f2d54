"""Tiled initialization (model/tiling.py): centre tiling, whole heads, kind-preserving depth map, and a tiled model
that starts far below a random initialization's loss."""

from __future__ import annotations

import time

import pytest
import torch

from modernbert_pretrain import ModernBertConfig, ModernBertForMaskedLM
from modernbert_pretrain.model.hf import to_hf_state_dict
from modernbert_pretrain.model.tiling import centre_index, centre_tile, layer_map, tile_model, tile_state_dict

from .model_helpers import perturbed_model, tiny_config

VOCAB = 64  # small vocabulary for the learning test; ids 0-3 are the tiny preset's special tokens


def preset(name: str, **overrides) -> ModernBertConfig:
    values = dict(attention_output_dropout=0.0, attn_backend="sdpa")
    values.update(overrides)
    return ModernBertConfig.from_preset(name, **values)


def meta_model(config: ModernBertConfig) -> ModernBertForMaskedLM:
    with torch.device("meta"):
        return ModernBertForMaskedLM(config, init=False)


# ----------------------------------------------------------------------------- centre tiling
def test_centre_index_by_hand():
    assert centre_index(4, 4).tolist() == [0, 1, 2, 3]
    # 4 -> 6: the source sits in positions 1..4, wrapped copies on both sides.
    assert centre_index(4, 6).tolist() == [3, 0, 1, 2, 3, 0]
    # Exact odd multiple: plain repetition, the middle copy in the middle.
    assert centre_index(3, 9).tolist() == [0, 1, 2] * 3
    # Exact even multiple: repetition whose crop is centred on a whole source copy.
    assert centre_index(4, 8).tolist() == [2, 3, 0, 1, 2, 3, 0, 1]
    # The middle of the source lands in the middle of the target.
    assert centre_index(3, 7)[3].item() == 1
    assert centre_index(5, 11)[5].item() == 2


def test_centre_tile_2d_by_hand():
    t = torch.arange(6).view(2, 3)
    assert centre_tile(t, {1: 5}).tolist() == [[2, 0, 1, 2, 0], [5, 3, 4, 5, 3]]
    # An odd surplus puts the extra element after the source: 2 -> 3 rows is [0, 1, 0], 3 -> 4 columns [0, 1, 2, 0].
    assert centre_tile(t, {0: 3, 1: 4}).tolist() == [[0, 1, 2, 0], [3, 4, 5, 3], [0, 1, 2, 0]]
    with pytest.raises(ValueError, match="src <= dst"):
        centre_index(5, 3)


# ----------------------------------------------------------------------------- shapes and keys
def test_tiny_to_tiny_large_shapes_keys_and_tied_decoder():
    src = perturbed_model(0)
    dst_config = preset("tiny-large")
    state = tile_state_dict(src.state_dict(), src.config, dst_config)
    expected = ModernBertForMaskedLM(dst_config, init=False).state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert state[key].shape == value.shape, key
        assert torch.isfinite(state[key]).all(), key
    assert state["decoder.weight"] is state["model.embeddings.tok_embeddings.weight"]

    tiled = tile_model(src, dst_config)
    assert tiled.config is dst_config
    assert tiled.decoder.weight is tiled.model.embeddings.tok_embeddings.weight
    # A Hugging Face state dict (no decoder.weight, compile prefix) tiles the same way.
    hf_state = {f"_orig_mod.{k}": v for k, v in to_hf_state_dict(src).items()}
    assert "_orig_mod.decoder.weight" not in hf_state
    again = tile_state_dict(hf_state, src.config, dst_config)
    for key, value in state.items():
        assert torch.equal(again[key], value), key


def test_tile_model_keeps_dtype_and_does_not_alias_the_source():
    src = perturbed_model(7).to(torch.bfloat16)
    tiled = tile_model(src, preset("tiny-large"))
    assert all(p.dtype == torch.bfloat16 for p in tiled.parameters())
    assert tiled.model.layers[1].attn.rotary_emb.inv_freq.dtype == torch.float32
    assert tiled.decoder.weight is tiled.model.embeddings.tok_embeddings.weight
    assert tiled.decoder.bias.data_ptr() != src.decoder.bias.data_ptr()
    assert torch.equal(tiled.decoder.bias, src.decoder.bias)
    same = tile_state_dict(src.state_dict(), src.config, src.config)  # nothing grows: still fresh tensors
    assert all(v.data_ptr() != src.state_dict()[k].data_ptr() for k, v in same.items())
    fp32 = perturbed_model(8)
    ids = torch.randint(4, 8192, (1, 16))
    with torch.no_grad():  # tiling to the same config is the identity
        assert torch.equal(tile_model(fp32, fp32.config).eval()(ids).logits, fp32(ids).logits)


def test_base_to_large_shapes_on_meta():
    base, large = preset("base"), preset("large")
    state = tile_state_dict(meta_model(base).state_dict(), base, large)
    expected = meta_model(large).state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert state[key].shape == value.shape, key
    assert sum(v.numel() for k, v in state.items() if k != "decoder.weight") == 395_881_664


def test_biases_tiled_and_missing_biases_zero():
    src = perturbed_model(1, attention_bias=True, mlp_bias=True, norm_bias=True, classifier_bias=True)
    dst = preset("tiny-large", attention_bias=True, mlp_bias=True, norm_bias=True, classifier_bias=True)
    state = tile_state_dict(src.state_dict(), src.config, dst)
    src_state = src.state_dict()
    hidden = centre_index(64, 128)
    assert torch.equal(state["model.final_norm.bias"], src_state["model.final_norm.bias"][hidden])
    assert torch.equal(state["model.final_norm.weight"], src_state["model.final_norm.weight"][hidden])
    assert torch.equal(state["decoder.bias"], src_state["decoder.bias"])
    # Source without biases, target with: zeros, as the model's own init.
    plain = perturbed_model(2)
    state = tile_state_dict(plain.state_dict(), plain.config, dst)
    assert not state["model.layers.2.attn.Wqkv.bias"].any()
    # Source with a bias the target has no place for: refused, not silently dropped.
    with pytest.raises(ValueError, match="attn.Wqkv.bias"):
        tile_state_dict(src.state_dict(), src.config, preset("tiny-large"))


# ----------------------------------------------------------------------------- depth
@pytest.mark.parametrize("names", [("tiny", "tiny-large"), ("base", "large")])
def test_layer_map_global_from_global_local_from_local(names):
    src, dst = preset(names[0]), preset(names[1])
    mapping = layer_map(src, dst)
    assert len(mapping) == dst.num_hidden_layers
    assert mapping[0] == 0 and mapping[-1] == src.num_hidden_layers - 1
    for target, source in enumerate(mapping):
        assert src.is_global_layer(source) == dst.is_global_layer(target), (target, source)
    for is_global in (True, False):
        chosen = [s for t, s in enumerate(mapping) if dst.is_global_layer(t) == is_global]
        assert chosen == sorted(chosen)  # order kept within a kind
        assert set(chosen) == {i for i in range(src.num_hidden_layers) if src.is_global_layer(i) == is_global}


def test_layer_map_values():
    assert layer_map(preset("tiny"), preset("tiny-large")) == [0, 1, 1, 0, 2, 2]
    base_to_large = layer_map(preset("base"), preset("large"))
    assert base_to_large[::3] == [0, 3, 6, 6, 9, 12, 15, 18, 18, 21]  # 8 global layers spread over 10
    same = preset("tiny")
    assert layer_map(same, same) == [0, 1, 2]
    with pytest.raises(ValueError, match="no local layer"):
        layer_map(preset("tiny", num_hidden_layers=1), preset("tiny-large"))


def test_attn_norm_from_layer0_is_ones():
    src = perturbed_model(3)
    tiled = tile_model(src, preset("tiny-large"))
    assert layer_map(src.config, tiled.config)[3] == 0
    assert torch.equal(tiled.model.layers[3].attn_norm.weight, torch.ones(128))
    assert isinstance(tiled.model.layers[0].attn_norm, torch.nn.Identity)
    # Other attn_norms are tiled from their source layer.
    src_w = src.model.layers[2].attn_norm.weight
    assert torch.equal(tiled.model.layers[5].attn_norm.weight, src_w[centre_index(64, 128)])


# ----------------------------------------------------------------------------- heads and GLU
@pytest.mark.parametrize("rescale", [True, False])
def test_heads_copied_whole(rescale):
    src = perturbed_model(4, attention_bias=True)
    dst = preset("tiny-large", attention_bias=True)
    state = tile_state_dict(src.state_dict(), src.config, dst, rescale=rescale)
    heads, hidden = centre_index(4, 8), centre_index(64, 128)
    count = torch.bincount(hidden)[hidden].float() if rescale else torch.ones(128)
    w_src = src.state_dict()["model.layers.1.attn.Wqkv.weight"].view(3, 4, 16, 64)
    w_dst = state["model.layers.1.attn.Wqkv.weight"].view(3, 8, 16, 128)
    b_src = src.state_dict()["model.layers.1.attn.Wqkv.bias"].view(3, 4, 16)
    b_dst = state["model.layers.1.attn.Wqkv.bias"].view(3, 8, 16)
    for h in range(8):
        # q, k and v of the target head are the source head's rows, hidden columns tiled (and divided by their
        # repeat count when rescaling: exact here, the count is 2).
        assert torch.equal(w_dst[:, h] * count, w_src[:, heads[h]][..., hidden]), h
        assert torch.equal(b_dst[:, h], b_src[:, heads[h]]), h
    # On a tiled input, a rescaled target head computes exactly the source head's q, k, v.
    if rescale:
        x = torch.randn(5, 64)
        out_src = (x @ w_src.reshape(-1, 64).T + b_src.reshape(-1)).view(5, 3, 4, 16)
        out_dst = (x[:, hidden] @ w_dst.reshape(-1, 128).T + b_dst.reshape(-1)).view(5, 3, 8, 16)
        torch.testing.assert_close(out_dst, out_src[:, :, heads])
    # attn.Wo's input columns follow the head map, whole heads of head_dim columns.
    wo_src = src.state_dict()["model.layers.1.attn.Wo.weight"].view(64, 4, 16)
    wo_dst = state["model.layers.1.attn.Wo.weight"].view(128, 8, 16)
    # Rescaling divides by 2 (each source head appears twice) and by 2 again (source layer 1 has two copies).
    factor = 4.0 if rescale else 1.0
    assert torch.equal(wo_dst * factor, wo_src[hidden][:, heads])


def test_glu_halves_stay_paired():
    src = perturbed_model(5)
    dst = preset("tiny-large")
    state = tile_state_dict(src.state_dict(), src.config, dst, rescale=False)
    inter, hidden = centre_index(96, 192), centre_index(64, 128)
    assert layer_map(src.config, dst)[5] == 2
    wi_src = src.state_dict()["model.layers.2.mlp.Wi.weight"].view(2, 96, 64)
    wi_dst = state["model.layers.5.mlp.Wi.weight"].view(2, 192, 128)
    assert torch.equal(wi_dst, wi_src[:, inter][..., hidden])  # input row j and gate row j: same source unit
    wo_src = src.state_dict()["model.layers.2.mlp.Wo.weight"]
    assert torch.equal(state["model.layers.5.mlp.Wo.weight"], wo_src[hidden][:, inter])


def test_width_only_tiling_preserves_the_function():
    """Same depth, every width doubled: the rescaled tiling computes exactly the source's logits."""
    kw = dict(attention_bias=True, mlp_bias=True, norm_bias=True, classifier_bias=True)
    src = perturbed_model(6, **kw)
    wide = tiny_config(hidden_size=128, num_attention_heads=8, intermediate_size=192, **kw)
    tiled = tile_model(src, wide).eval()
    ids = torch.randint(4, 8192, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(tiled(ids).logits, src(ids).logits, atol=2e-5, rtol=1e-4)
    # Sizes that are not multiples still tile (LayerNorm statistics make it approximate).
    odd = tiny_config(hidden_size=96, num_attention_heads=6, intermediate_size=160, num_hidden_layers=5, **kw)
    with torch.no_grad():
        assert torch.isfinite(tile_model(src, odd).eval()(ids).logits).all()


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("field,value", [
    ("hidden_size", 32), ("intermediate_size", 64), ("num_hidden_layers", 2), ("num_attention_heads", 2),
])
def test_refuses_smaller_target(field, value):
    dst = preset("tiny", **{field: value})  # every other size equal to the source's
    src = preset("tiny")
    with pytest.raises(ValueError, match=f"source {field}={getattr(src, field)} > target {field}={value}"):
        tile_state_dict(meta_model(src).state_dict(), src, dst)


def test_refuses_tiling_large_to_tiny_and_other_mismatches():
    large, tiny = preset("tiny-large"), preset("tiny")
    with pytest.raises(ValueError, match="hidden_size=128 > target hidden_size=64"):
        tile_model(ModernBertForMaskedLM(large), tiny)
    with pytest.raises(ValueError, match="vocab_size"):
        tile_state_dict(meta_model(tiny).state_dict(), tiny, preset("tiny-large", vocab_size=4096))
    with pytest.raises(ValueError, match="head_dim"):
        tile_state_dict(meta_model(tiny).state_dict(), tiny, preset("tiny", hidden_size=128))
    untied = preset("tiny", tie_word_embeddings=False)
    with pytest.raises(ValueError, match="untied decoder"):
        tile_state_dict(meta_model(untied).state_dict(), untied, preset("tiny-large"))
    state = dict(meta_model(tiny).state_dict())
    state["model.layers.7.attn.Wo.weight"] = state.pop("model.layers.2.attn.Wo.weight")
    with pytest.raises(ValueError, match="model.layers.2.attn.Wo.weight"):
        tile_state_dict(state, tiny, preset("tiny-large"))


# ----------------------------------------------------------------------------- it helps
def _markov_chain(seed: int, states: int = VOCAB - 4, fanout: int = 3):
    """Each state has `fanout` successors with fixed random probabilities: bidirectional context makes masked
    tokens quite predictable (entropy well under ln(fanout) per token)."""
    g = torch.Generator().manual_seed(seed)
    successors = torch.stack([torch.randperm(states, generator=g)[:fanout] for _ in range(states)])
    probs = torch.softmax(torch.randn(states, fanout, generator=g), dim=-1)
    return successors, probs


def _mlm_batch(chain, g: torch.Generator, batch: int = 16, seq: int = 64, mask_id: int = 3):
    successors, probs = chain
    tokens = torch.empty(batch, seq, dtype=torch.long)
    state = torch.randint(0, successors.shape[0], (batch,), generator=g)
    for t in range(seq):
        tokens[:, t] = state
        choice = torch.multinomial(probs[state], 1, generator=g).squeeze(1)
        state = successors[state, choice]
    ids = tokens + 4  # ids 0-3 are special tokens
    masked = torch.rand(batch, seq, generator=g) < 0.3
    return ids.masked_fill(masked, mask_id), torch.where(masked, ids, -100)


def _eval_loss(model: ModernBertForMaskedLM, batches) -> float:
    model.eval()
    with torch.no_grad():
        return sum(model(ids, labels=labels).loss.item() for ids, labels in batches) / len(batches)


def _train_tile_and_compare(seed: int, steps: int = 250) -> dict[str, float]:
    chain = _markov_chain(seed)
    eval_batches = [_mlm_batch(chain, torch.Generator().manual_seed(1000 + seed + k), batch=32) for k in range(4)]
    src_config, dst_config = preset("tiny", vocab_size=VOCAB), preset("tiny-large", vocab_size=VOCAB)

    torch.manual_seed(seed)
    src = ModernBertForMaskedLM(src_config).train()
    opt = torch.optim.AdamW(src.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        ids, labels = _mlm_batch(chain, g)
        loss = src(ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    losses = {"train_s": time.perf_counter() - start, "source": _eval_loss(src, eval_batches),
              "tiled": _eval_loss(tile_model(src, dst_config), eval_batches),
              "plain_copies": _eval_loss(tile_model(src, dst_config, rescale=False), eval_batches)}
    torch.manual_seed(seed + 1)
    losses["random"] = _eval_loss(ModernBertForMaskedLM(dst_config), eval_batches)
    return losses


def test_tiled_model_starts_far_below_random_init():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is as fast, and far faster on a busy machine
    try:
        losses = _train_tile_and_compare(seed=0)
    finally:
        torch.set_num_threads(threads)
    print("  ".join(f"{k} {v:.3f}" for k, v in losses.items()))
    # Seeds 0-7 of this setup: random init 4.14-4.21 (~ln 60), source 0.80-1.04, tiled 0.90-1.37 (at most 0.34
    # above its source, at most 0.33 x random), plain unscaled copies 7.5-14.4. So 0.5 x random holds with a wide
    # margin across seeds yet fails if tiling loses what the source learned; the second bound checks that most
    # of it is kept.
    assert losses["source"] < 0.5 * losses["random"]
    assert losses["tiled"] < 0.5 * losses["random"]
    assert losses["tiled"] < losses["source"] + 0.75
