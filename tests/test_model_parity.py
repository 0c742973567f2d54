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
