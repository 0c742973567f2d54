"""Our model <-> transformers' ModernBertForMaskedLM, fp32, logits within 1e-4."""

import json

import pytest
import torch
import transformers

from modernbert_pretrain import ModernBertConfig, ModernBertForMaskedLM

from .model_helpers import perturbed_model, ragged_batch

LENGTHS = [200, 37, 130, 3]  # several longer than the 32-token local window, one row mostly padding


def _hf_from(folder):
    return transformers.AutoModelForMaskedLM.from_pretrained(folder, attn_implementation="sdpa").eval()


def test_no_norm_is_one_and_no_bias_is_zero():
    model = perturbed_model()
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            assert not torch.isclose(param, torch.ones_like(param)).any(), name
        if name.endswith("bias"):
            assert not (param == 0).any(), name


def test_ours_to_transformers(tmp_path):
    model = perturbed_model()
    model.save_pretrained(tmp_path)
    hf = _hf_from(tmp_path)
    assert type(hf).__name__ == "ModernBertForMaskedLM"
    ids, mask = ragged_batch(LENGTHS, model.config.vocab_size)
    with torch.no_grad():
        ours = model(ids, attention_mask=mask).logits
        theirs = hf(input_ids=ids, attention_mask=mask).logits
    valid = mask.bool()
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours[valid], theirs[valid], atol=1e-4, rtol=0)


def test_transformers_to_ours(tmp_path):
    torch.manual_seed(1)
    cfg = transformers.ModernBertConfig(
        vocab_size=512, hidden_size=64, intermediate_size=80, num_hidden_layers=4, num_attention_heads=4,
        max_position_embeddings=512, local_attention=16, global_rope_theta=160000.0, local_rope_theta=10000.0,
        pad_token_id=2, bos_token_id=0, eos_token_id=1, cls_token_id=0, sep_token_id=1,
    )
    hf = transformers.ModernBertForMaskedLM(cfg)
    with torch.no_grad():
        for param in hf.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    hf.save_pretrained(tmp_path)
    hf.eval()
    ours = ModernBertForMaskedLM.from_pretrained(tmp_path, attn_backend="sdpa").eval()
    assert ours.config.local_attention == 16 and ours.config.global_rope_theta == 160000.0
    ids, mask = ragged_batch([90, 17, 64], 512, seed=3)
    with torch.no_grad():
        a = ours(ids, attention_mask=mask).logits
        b = hf(input_ids=ids, attention_mask=mask).logits
    valid = mask.bool()
    torch.testing.assert_close(a[valid], b[valid], atol=1e-4, rtol=0)


def test_saved_config_has_real_rope_thetas(tmp_path):
    model = perturbed_model(global_rope_theta=160000.0, local_rope_theta=10000.0)
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["global_rope_theta"] == 160000.0
    assert cfg["local_rope_theta"] == 10000.0
    assert cfg["model_type"] == "modernbert"


def test_round_trip_keeps_weights_and_config(tmp_path):
    model = perturbed_model()
    model.save_pretrained(tmp_path)
    again = ModernBertForMaskedLM.from_pretrained(tmp_path, attn_backend="sdpa")
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert again.decoder.weight is again.model.embeddings.tok_embeddings.weight
    assert again.config.attention_output_dropout == model.config.attention_output_dropout


def test_refuses_non_modernbert_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(ValueError, match="modernbert"):
        ModernBertForMaskedLM.from_pretrained(tmp_path)


def test_missing_folder_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        ModernBertForMaskedLM.from_pretrained(tmp_path / "nope")


def test_preset_parameter_counts():
    counts = {name: ModernBertForMaskedLM(ModernBertConfig.from_preset(name), init=False).num_parameters()
              for name in ("base", "large")}
    hf_counts = {}
    for name in ("base", "large"):
        ours = ModernBertConfig.from_preset(name)
        hf_cfg = transformers.ModernBertConfig(**{k: v for k, v in ours.to_hf_dict().items()
                                                  if k not in ("architectures", "modernbert_pretrain")})
        with torch.device("meta"):
            hf_counts[name] = transformers.ModernBertForMaskedLM(hf_cfg).num_parameters()
    assert counts == hf_counts
    assert counts == {"base": 149_655_232, "large": 395_881_664}


def test_config_spellings_of_other_transformers_versions():
    v5 = {
        "model_type": "modernbert", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 80,
        "num_hidden_layers": 4, "num_attention_heads": 4, "max_position_embeddings": 512, "local_attention": 16,
        "pad_token_id": 2, "cls_token_id": 0, "sep_token_id": 1, "layer_norm_eps": 2e-5,
        "layer_types": ["full_attention", "sliding_attention", "sliding_attention", "full_attention"],
        "rope_parameters": {"full_attention": {"rope_theta": 160000.0, "rope_type": "default"},
                            "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}},
    }
    cfg = ModernBertConfig.from_hf_dict(v5)
    assert (cfg.global_rope_theta, cfg.local_rope_theta, cfg.norm_eps) == (160000.0, 10000.0, 2e-5)
    scaled = json.loads(json.dumps(v5))
    scaled["rope_parameters"]["full_attention"]["rope_type"] = "yarn"
    with pytest.raises(ValueError, match="RoPE scaling"):
        ModernBertConfig.from_hf_dict(scaled)
    odd = dict(v5, layer_types=["sliding_attention"] * 4)
    with pytest.raises(ValueError, match="cannot express"):
        ModernBertConfig.from_hf_dict(odd)


def _untied_transformers_folder(folder, **extra):
    torch.manual_seed(2)
    cfg = transformers.ModernBertConfig(
        vocab_size=512, hidden_size=64, intermediate_size=80, num_hidden_layers=4, num_attention_heads=4,
        max_position_embeddings=512, local_attention=16, pad_token_id=2, bos_token_id=0, eos_token_id=1,
        cls_token_id=0, sep_token_id=1, tie_word_embeddings=False, **extra,
    )
    hf = transformers.ModernBertForMaskedLM(cfg)
    with torch.no_grad():
        for param in hf.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    assert hf.decoder.weight is not hf.model.embeddings.tok_embeddings.weight
    hf.save_pretrained(folder)
    return hf.eval()


def _logits(model, ids, mask, ours: bool):
    with torch.no_grad():
        out = model(ids, attention_mask=mask) if ours else model(input_ids=ids, attention_mask=mask)
    return out.logits[mask.bool()]


def test_untied_decoder_from_transformers_and_back(tmp_path, caplog):
    """transformers writes an untied decoder under its own key; ours keeps it apart from the embedding, gives the
    same logits, and exports it so that transformers reads the same model back."""
    hf = _untied_transformers_folder(tmp_path / "theirs")
    with caplog.at_level("WARNING"):
        ours = ModernBertForMaskedLM.from_pretrained(tmp_path / "theirs", attn_backend="sdpa").eval()
    assert not ours.config.tie_word_embeddings
    assert ours.decoder.weight is not ours.model.embeddings.tok_embeddings.weight
    torch.testing.assert_close(ours.decoder.weight, hf.decoder.weight, atol=0, rtol=0)
    torch.testing.assert_close(ours.model.embeddings.tok_embeddings.weight,
                               hf.model.embeddings.tok_embeddings.weight, atol=0, rtol=0)
    ids, mask = ragged_batch([90, 17, 64], 512, seed=4)
    expected = _logits(hf, ids, mask, ours=False)
    torch.testing.assert_close(_logits(ours, ids, mask, ours=True), expected, atol=1e-4, rtol=0)

    ours.save_pretrained(tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["tie_word_embeddings"] is False
    again = _hf_from(tmp_path / "ours")
    assert again.decoder.weight is not again.model.embeddings.tok_embeddings.weight
    torch.testing.assert_close(_logits(again, ids, mask, ours=False), expected, atol=1e-4, rtol=0)
    round_trip = ModernBertForMaskedLM.from_pretrained(tmp_path / "ours")
    for key, value in ours.state_dict().items():
        assert torch.equal(value, round_trip.state_dict()[key]), key


def test_untied_decoder_trains_apart_from_the_embedding():
    model = ModernBertForMaskedLM(ModernBertConfig.from_preset("tiny", tie_word_embeddings=False))
    names = {n for n, _ in model.named_parameters()}
    assert {"decoder.weight", "model.embeddings.tok_embeddings.weight"} <= names
    tied = ModernBertForMaskedLM(ModernBertConfig.from_preset("tiny"))
    assert model.num_parameters() - tied.num_parameters() == 8192 * 64
    ids = torch.randint(5, 8192, (64,))
    labels = ids.clone()
    model(ids, labels=labels).loss.backward()
    assert model.decoder.weight.grad is not None and model.decoder.weight.grad.abs().sum() > 0


def test_transformers_keys_we_do_not_use_are_ignored_and_logged(tmp_path, caplog):
    _untied_transformers_folder(tmp_path, type_vocab_size=2)
    assert json.loads((tmp_path / "config.json").read_text())["type_vocab_size"] == 2
    with caplog.at_level("WARNING"):
        model = ModernBertForMaskedLM.from_pretrained(tmp_path)
    assert model.config.vocab_size == 512
    assert any("type_vocab_size" in r.getMessage() and "ignoring" in r.getMessage() for r in caplog.records)


def test_tied_config_over_untied_weights_is_refused(tmp_path):
    """The old behaviour: the config said tied, so decoder.weight silently overwrote the embedding."""
    _untied_transformers_folder(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["tie_word_embeddings"] = True
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="differs from model.embeddings.tok_embeddings.weight.*tie_word_embeddings"):
        ModernBertForMaskedLM.from_pretrained(tmp_path)
    perturbed_model().save_pretrained(tmp_path / "tied")
    with pytest.raises(ValueError, match="no decoder.weight"):
        ModernBertForMaskedLM.from_pretrained(tmp_path / "tied", tie_word_embeddings=False)


def test_saved_weights_follow_the_umask(tmp_path):
    """safetensors creates its file 0600; a saved model is as readable as any other file the umask allows."""
    import os

    old = os.umask(0o022)
    try:
        perturbed_model().save_pretrained(tmp_path)
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {"config.json": 0o644,
                                                                            "model.safetensors": 0o644}
