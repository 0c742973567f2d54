"""Continued pretraining from released weights: load_from with a Hugging Face folder or Hub id."""

import shutil
import subprocess

import pytest
import torch
import transformers

from modernbert_pretrain.config import load
from modernbert_pretrain.export import write_folder
from modernbert_pretrain.schema import ConfigError
from modernbert_pretrain.train.builder import start_model
from modernbert_pretrain.train.preflight import check_paths

from .model_helpers import perturbed_model
from .train_helpers import ROOT, env, train_cmd

YAML = ROOT / "yamls" / "smoke" / "phase1.yaml"


def _transformers_folder(folder, **overrides):
    """A tiny-preset-shaped ModernBertForMaskedLM written by transformers itself, every weight moved off init."""
    torch.manual_seed(5)
    values = dict(vocab_size=8192, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                  max_position_embeddings=1024, local_attention=32, pad_token_id=2, bos_token_id=0, eos_token_id=1,
                  cls_token_id=0, sep_token_id=1)
    values.update(overrides)
    hf = transformers.ModernBertForMaskedLM(transformers.ModernBertConfig(**values))
    with torch.no_grad():
        for param in hf.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    hf.save_pretrained(folder)
    return {k: v.clone() for k, v in hf.state_dict().items()}


def _config(workdir, *overrides):
    return load(YAML, [f"workdir={workdir}", *overrides])[1]


def _assert_loaded(model, expected):
    ours = model.state_dict()
    for key, value in expected.items():
        assert torch.equal(ours[key], value), key


def test_transformers_folder_gives_weights_and_fresh_moments(smoke_workdir, tmp_path, caplog):
    expected = _transformers_folder(tmp_path / "released")
    cfg = _config(smoke_workdir, f"load_from.path={tmp_path / 'released'}")
    with caplog.at_level("INFO"):
        model, optim_state, _ = start_model(cfg, resuming=False)
    assert optim_state is None
    _assert_loaded(model, expected)
    assert model.config.global_rope_theta == 10000.0  # the YAML stays in charge ...
    assert "global_rope_theta=160000.0 there, 10000.0 here" in caplog.text  # ... and the difference is logged
    assert "optimizer moments start fresh" in caplog.text and "weights_only: false" in caplog.text


def test_our_exported_folder_loads(smoke_workdir, tmp_path):
    source = perturbed_model()
    meta = {"phase": "earlier", "step": 7, "tokens_seen": 700, "checkpoint": "memory"}
    folder, _ = write_folder(source, meta, tmp_path)
    model, optim_state, _ = start_model(_config(smoke_workdir, f"load_from.path={folder}",
                                             "load_from.weights_only=true"), resuming=False)
    assert optim_state is None
    _assert_loaded(model, source.state_dict())


@pytest.mark.parametrize("meta, prior", [
    # an export of a phase-2 checkpoint: its totals carry on
    ({"phase": "p2", "step": 7, "tokens_seen": 700, "total_tokens_seen": 1700, "total_steps": 17,
      "phases": ["p1", "p2"]}, {"tokens_seen": 1700, "steps": 17, "phases": ["p1", "p2"]}),
    # an export written before totals were recorded, of a run without load_from: its own count
    ({"phase": "p1", "step": 7, "tokens_seen": 700, "train_config": {"load_from": None}},
     {"tokens_seen": 700, "steps": 7, "phases": ["p1"]}),
    # ... and of a run with load_from: unknown
    ({"phase": "p2", "step": 7, "tokens_seen": 700, "train_config": {"load_from": {"path": "x"}}},
     {"tokens_seen": None, "steps": None, "phases": [None, "p2"]}),
])
def test_our_exported_folder_gives_the_tokens_seen_before(smoke_workdir, tmp_path, meta, prior):
    folder, _ = write_folder(perturbed_model(), {**meta, "checkpoint": "memory"}, tmp_path)
    _, _, got = start_model(_config(smoke_workdir, f"load_from.path={folder}", "load_from.weights_only=true"),
                            resuming=False)
    assert got == {**prior, "source": str(folder)}


def test_released_weights_have_an_unknown_prior_and_say_so(smoke_workdir, tmp_path, caplog):
    _transformers_folder(tmp_path / "released")
    with caplog.at_level("INFO"):
        _, _, prior = start_model(_config(smoke_workdir, f"load_from.path={tmp_path / 'released'}"), resuming=False)
    assert prior["tokens_seen"] is None and prior["steps"] is None and prior["phases"] == [None]
    line = next(r.getMessage() for r in caplog.records if "loaded the weights of the Hugging Face model" in
                r.getMessage())
    assert "tokens seen before this run: unknown" in line and "total_tokens_seen is null" in line


def test_a_fresh_run_counts_from_zero(smoke_workdir):
    _, _, prior = start_model(_config(smoke_workdir), resuming=False)
    assert prior == {"tokens_seen": 0, "steps": 0, "phases": [], "source": None}


def test_untied_folder_needs_an_untied_run(smoke_workdir, tmp_path):
    expected = _transformers_folder(tmp_path / "untied", tie_word_embeddings=False)
    cfg = _config(smoke_workdir, f"load_from.path={tmp_path / 'untied'}")
    with pytest.raises(ConfigError, match="tie_word_embeddings=False.*set model.tie_word_embeddings: false"):
        start_model(cfg, resuming=False)
    model, _, _ = start_model(_config(smoke_workdir, f"load_from.path={tmp_path / 'untied'}",
                                   "model.tie_word_embeddings=false"), resuming=False)
    _assert_loaded(model, expected)
    assert model.decoder.weight is not model.model.embeddings.tok_embeddings.weight


def test_wrong_size_is_one_config_error(smoke_workdir, tmp_path):
    _transformers_folder(tmp_path / "wide", hidden_size=128, num_attention_heads=8)
    with pytest.raises(ConfigError, match="does not fit this run's model.*hidden_size|shape"):
        start_model(_config(smoke_workdir, f"load_from.path={tmp_path / 'wide'}"), resuming=False)


def _hub_cache(cache, repo_id, source):
    """The layout huggingface_hub's cache has after a download of `repo_id`."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(source, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)


def test_hub_id_is_resolved_through_the_hub_cache_offline(smoke_workdir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    expected = _transformers_folder(tmp_path / "src")
    _hub_cache(tmp_path / "hub", "acme/tiny-modernbert", tmp_path / "src")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cfg = _config(smoke_workdir, "load_from.path=acme/tiny-modernbert")
    assert cfg.load_from.path == "acme/tiny-modernbert"  # not turned into a path beside the YAML
    assert check_paths(cfg, strict=True) == []
    model, optim_state, _ = start_model(cfg, resuming=False)
    assert optim_state is None
    _assert_loaded(model, expected)


def test_hub_id_offline_and_not_cached_is_one_line(smoke_workdir, tmp_path):
    run_env = env()
    run_env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty-hub"))
    out = subprocess.run(train_cmd("smoke/phase1.yaml", smoke_workdir, "load_from.path=acme/not-downloaded",
                                   f"save.folder={tmp_path / 'ckpt'}"),
                         capture_output=True, text=True, env=run_env, cwd=ROOT, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("config error:")]
    assert len(errors) == 1 and errors[0].startswith(
        "config error: load_from.path: 'acme/not-downloaded' is not a local path and could not be fetched")
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").glob("*.pt"))



def test_train_from_untied_released_weights_and_export(smoke_workdir, tmp_path):
    """The whole path: transformers' untied folder -> two training steps -> checkpoint -> export -> transformers."""
    from modernbert_pretrain.checkpoints import list_checkpoints, model_from_checkpoint
    from modernbert_pretrain.export import export_checkpoint

    from .model_helpers import ragged_batch
    from .train_helpers import run_train

    released = _transformers_folder(tmp_path / "released", tie_word_embeddings=False)
    work = tmp_path / "w"
    shutil.copytree(smoke_workdir, work, ignore=shutil.ignore_patterns("corpus"))
    out = run_train("smoke/phase1.yaml", work, f"load_from.path={tmp_path / 'released'}",
                    "model.tie_word_embeddings=false", "max_tokens=8192", "data.batch_size_warmup_start=null",
                    "eval=null", "scheduler.warmup_tokens=0", "save.interval=2ba")
    assert "optimizer moments start fresh" in out.stderr
    ckpt = list_checkpoints(work / "checkpoints/smoke-phase1")[-1]
    ours = model_from_checkpoint(ckpt, attn_backend="sdpa").eval()
    assert not ours.config.tie_word_embeddings
    assert not torch.equal(ours.decoder.weight, released["decoder.weight"])  # it trained ...
    assert not torch.equal(ours.decoder.weight, ours.model.embeddings.tok_embeddings.weight)  # ... apart
    folder, _ = export_checkpoint(ckpt, tmp_path / "hf")
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    assert not theirs.config.tie_word_embeddings
    ids, mask = ragged_batch([100, 40], ours.config.vocab_size, seed=6)
    with torch.no_grad():
        a = ours(ids, attention_mask=mask).logits[mask.bool()]
        b = theirs(input_ids=ids, attention_mask=mask).logits[mask.bool()]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)

