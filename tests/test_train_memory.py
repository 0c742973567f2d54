"""The dry run's memory plan (docs/memory.md): the fake-tensor count equals the real one at tiny size, eager and
compiled; parameters, gradients and optimizer state equal a real step's; every shipped YAML fits its GPUs."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

from modernbert_pretrain.model import ModernBertConfig, ModernBertForMaskedLM
from modernbert_pretrain.train.fake_forward import (
    attention_backend,
    batch,
    compiled_encoder_bytes,
    count_forward,
    count_model,
)
from modernbert_pretrain.train.main import main
from modernbert_pretrain.train.memory import RunSetup, parse_memory, state_bytes

ROOT = Path(__file__).resolve().parents[1]
ROWS, SEQ, MASKED = 3, 64, 19


def tiny(**overrides) -> ModernBertConfig:
    values = dict(attention_output_dropout=0.1, validate_inputs=False, num_hidden_layers=4)
    values.update(overrides)
    return ModernBertConfig.from_preset("tiny", **values)


def real_inputs(vocab: int) -> dict:
    """The fake forward's batch with real values: ids in the vocabulary and exactly MASKED labelled tokens."""
    torch.manual_seed(0)
    inputs = batch(ROWS, SEQ)
    inputs["input_ids"] = torch.randint(5, vocab, (ROWS * SEQ,))
    labels = torch.full((ROWS * SEQ,), -100)
    labels[torch.randperm(ROWS * SEQ)[:MASKED]] = 1
    inputs["labels"] = labels
    return inputs


def real_count(config: ModernBertConfig, setup: RunSetup, compile_encoder: bool = False) -> dict[str, int]:
    model = ModernBertForMaskedLM(config).train()
    with attention_backend(model, setup.attention):
        encoder = torch.compile(model.model, dynamic=True) if compile_encoder else None
        return count_forward(model, real_inputs(config.vocab_size), None, setup.precision, encoder)


@pytest.mark.parametrize("precision", ["fp32", "amp_bf16"])
@pytest.mark.parametrize("attention", ["flash-like", "sdpa"])
def test_fake_count_equals_real_count_at_tiny_size(precision, attention):
    setup = RunSetup(precision=precision, compiled=False, attention=attention)
    fake = count_model(tiny(), ROWS, SEQ, MASKED, setup, compiled=False)
    assert fake == real_count(tiny(), setup)
    assert fake["encoder"] > 0 and fake["head"] > 0


def test_compiled_count_equals_inductor_at_tiny_size():
    """The partition the plan counts is the one torch.compile (inductor, CPU) makes: same saved bytes."""
    torch._dynamo.reset()
    setup = RunSetup(precision="fp32", compiled=True, attention="flash-like")
    fake = count_model(tiny(), ROWS, SEQ, MASKED, setup, compiled=True)
    assert fake["encoder"] == real_count(tiny(), setup, compile_encoder=True)["encoder"]
    eager = count_model(tiny(), ROWS, SEQ, MASKED, setup, compiled=False)
    assert fake["encoder"] < eager["encoder"]  # inductor recomputes what eager keeps


def test_depth_extrapolation_equals_the_full_trace():
    config = tiny(num_hidden_layers=8)
    setup = RunSetup(precision="amp_bf16", compiled=True, attention="flash-like")
    full = count_model(config, ROWS, SEQ, MASKED, setup, compiled=True)["encoder"]
    assert abs(compiled_encoder_bytes(config, ROWS, SEQ, MASKED, setup) - full) <= 1024


def test_state_bytes_equal_a_real_step():
    from modernbert_pretrain.config import OptimizerConfig
    from modernbert_pretrain.train.optim import build_optimizer

    model = ModernBertForMaskedLM(tiny()).train()
    optimizer = build_optimizer(model, OptimizerConfig())
    model(**real_inputs(model.config.vocab_size)).loss.backward()
    optimizer.step()

    def nbytes(tensors) -> int:
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
        return sum(storages.values())

    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    planned = state_bytes(model, world_size=1)
    assert planned == {"parameters": nbytes(model.parameters()),
                       "gradients": nbytes(p.grad for p in model.parameters()), "optimizer_state": nbytes(state)}


def _dry_run(yaml: Path, *extra: str) -> tuple[int, list[str], str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(yaml), "--dry-run", *extra])
    return code, out.getvalue().strip().splitlines(), err.getvalue()


SHIPPED = sorted(p for p in (ROOT / "yamls").rglob("*.yaml") if "eval" not in p.parts)


@pytest.mark.parametrize("yaml", SHIPPED, ids=lambda p: str(p.relative_to(ROOT / "yamls")))
def test_every_shipped_yaml_fits_its_gpus(yaml, tmp_path):
    """Recipes are for 8 x H100 (80 GB, the default); smoke recipes run on one device."""
    world = "1" if "smoke" in yaml.parts else "8"
    code, lines, err = _dry_run(yaml, "--world-size", world, f"workdir={tmp_path}")
    assert code == 0, err
    memory = json.loads(lines[-1])["memory"]
    assert memory["fits"], "\n".join(lines[:-1])
    assert memory["upper_bytes"] <= memory["gpu_memory_bytes"] == 80 * 10**9
    assert any(line.startswith("memory plan per GPU (estimate") for line in lines)


def test_a_plan_that_does_not_fit_says_so(tmp_path):
    code, lines, err = _dry_run(ROOT / "yamls/smoke/phase1.yaml", "--gpu-memory", "10MB", f"workdir={tmp_path}")
    assert code == 0
    assert json.loads(lines[-1])["memory"]["verdict"] == "does not fit"
    assert "warning: memory plan: does not fit in 10MB" in err


def test_gpu_memory_is_refused_in_one_line(tmp_path):
    code, _, err = _dry_run(ROOT / "yamls/smoke/phase1.yaml", "--gpu-memory", "lots", f"workdir={tmp_path}")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--gpu-memory" in err
    assert parse_memory("80GB") == 80 * 10**9 and parse_memory("1GiB") == 2**30
