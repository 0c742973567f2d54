"""The attention-backend registry: one entry makes a backend a config choice, an `auto` candidate and a benchmark
choice; a missing backend says why; per-batch state (flex block masks) is built once per forward and window kind."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from modernbert_pretrain.model import attention
from modernbert_pretrain.model.attention import BACKENDS, AttentionBackend, register_backend, resolve_backend

from .model_helpers import perturbed_model, ragged_batch, tiny_config

BENCH = Path(__file__).resolve().parents[1] / "bench" / "train_throughput.py"
CPU = torch.device("cpu")


@pytest.fixture
def register():
    """register_backend for this test only: removes what it added."""
    added = []

    def _register(backend: AttentionBackend) -> AttentionBackend:
        assert backend.name not in BACKENDS
        added.append(backend.name)
        return register_backend(backend)

    yield _register
    for name in added:
        BACKENDS.pop(name, None)


def _bench_parse_args(argv):
    spec = importlib.util.spec_from_file_location("bench_train_throughput_registry", BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        return bench.parse_args(argv)
    finally:
        torch.set_num_threads(threads)


def test_one_registry_entry_makes_a_backend_selectable_everywhere(register):
    with pytest.raises(ValueError, match="attn_backend.*unknown backend 'counting'"):
        tiny_config(attn_backend="counting")
    calls = []

    def counting(q, k, v, cu_seqlens, max_seqlen, window, dropout_p=0.0):
        calls.append(window)
        return attention.sdpa_attention(q, k, v, cu_seqlens, max_seqlen, window, dropout_p)

    register(AttentionBackend("counting", counting, supports_dropout=True, auto_priority=1000, devices=("cpu",)))

    # a config choice, run by every layer
    ids, mask = ragged_batch([40, 17], 8192)
    model = perturbed_model(attn_backend="counting")
    with torch.no_grad():
        got = model(ids, attention_mask=mask).logits
    assert model.model.attn_backend == "counting"
    assert len(calls) == model.config.num_hidden_layers
    with torch.no_grad():
        want = perturbed_model(attn_backend="sdpa")(ids, attention_mask=mask).logits
    torch.testing.assert_close(got, want)
    # auto's first choice by priority, on the devices it declares only
    assert resolve_backend("auto", device=CPU, dtype=torch.float32, needs_window=True, needs_dropout=True) == "counting"
    assert resolve_backend("auto", device=torch.device("cuda"), dtype=torch.float32, needs_window=True,
                           needs_dropout=True) != "counting"
    # and a choice of the benchmark's --attn
    assert _bench_parse_args(["--device", "cpu", "--tiny", "--attn", "counting"]).attn == "counting"


def test_auto_skips_a_backend_that_lacks_a_needed_feature(register):
    register(AttentionBackend("no_window", attention.sdpa_attention, supports_window=lambda: False,
                              supports_dropout=True, auto_priority=1000, devices=("cpu",)))
    assert resolve_backend("auto", device=CPU, dtype=torch.float32, needs_window=True, needs_dropout=False) == "sdpa"
    assert resolve_backend("auto", device=CPU, dtype=torch.float32, needs_window=False,
                           needs_dropout=False) == "no_window"


def test_auto_skips_a_backend_for_a_dtype_it_does_not_take(register):
    register(AttentionBackend("bf16_only", attention.sdpa_attention, supports_dropout=True, auto_priority=1000,
                              devices=("cpu",), dtypes=(torch.bfloat16,)))
    assert resolve_backend("auto", device=CPU, dtype=torch.float32, needs_window=True, needs_dropout=False) == "sdpa"
    assert resolve_backend("auto", device=CPU, dtype=torch.bfloat16, needs_window=True,
                           needs_dropout=False) == "bf16_only"


def test_unavailable_backend_reports_its_reason(register):
    register(AttentionBackend("missing", attention.sdpa_attention, available=lambda: False,
                              why_missing="needs the frobnicator package", auto_priority=1000, devices=("cpu",)))
    assert "missing" not in attention.available_backends()
    model = perturbed_model(attn_backend="missing")  # a valid choice ...
    with pytest.raises(RuntimeError, match="'missing' was requested but is not available here: needs the frobnicator"):
        model(torch.randint(5, 100, (10,)))  # ... that never falls back silently
    # auto passes over it
    assert resolve_backend("auto", device=CPU, dtype=torch.float32, needs_window=True, needs_dropout=False) == "sdpa"


def test_backend_state_is_built_once_per_forward_and_window_kind(register):
    prepared, seen = [], []

    def prepare(cu_seqlens, total, max_seqlen, window):
        token = object()
        prepared.append((window, token))
        return token

    def with_state(q, k, v, cu_seqlens, max_seqlen, window, dropout_p=0.0, state=None):
        seen.append((window, state))
        return attention.sdpa_attention(q, k, v, cu_seqlens, max_seqlen, window, dropout_p)

    register(AttentionBackend("stateful", with_state, devices=("cpu",), prepare=prepare))
    model = perturbed_model(attn_backend="stateful")
    windows = [layer.attn.window for layer in model.model.layers]
    assert len(set(windows)) == 2 and len(windows) > 2  # tiny: one global and two local layers
    ids, mask = ragged_batch([40, 17], 8192)
    for forward in range(2):
        prepared.clear(), seen.clear()
        with torch.no_grad():
            model(ids, attention_mask=mask)
        assert sorted(w for w, _ in prepared) == sorted(set(windows)), forward
        by_window = dict(prepared)
        assert [w for w, _ in seen] == windows
        assert all(state is by_window[w] for w, state in seen)


def _packed_batch(lengths: list[int], vocab: int, seed: int = 0):
    """Flat ids of several packed documents, their cu_seqlens and per-token targets."""
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    ids = torch.randint(5, vocab, (total,), generator=g)
    targets = torch.randint(5, vocab, (total,), generator=g)
    cu_seqlens = torch.nn.functional.pad(torch.tensor(lengths).cumsum(0), (1, 0)).to(torch.int32)
    return ids, cu_seqlens, max(lengths), targets


def _logits_and_grads(model, ids, cu_seqlens, max_seqlen, targets):
    model.zero_grad()
    logits = model(ids, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen).logits  # (total_tokens, vocab)
    torch.nn.functional.cross_entropy(logits, targets).backward()
    return logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def test_flex_matches_sdpa_in_logits_and_gradients_on_cpu(monkeypatch):
    """Eager FlexAttention trains on CPU: the registry offers it here, and the model built with it computes the same
    logits and gradients as sdpa (fp32, within 1e-5) on packed documents, through local and global layers."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    monkeypatch.setattr(attention, "_flex_compiled", None)
    built, real = [], attention.flex_block_mask

    def counted(cu_seqlens, total, max_seqlen, window):
        built.append(window)
        return real(cu_seqlens, total, max_seqlen, window)

    # every mask build is counted: the model's (prepare_backend) and any the attention call would make itself
    monkeypatch.setattr(attention, "flex_block_mask", counted)
    monkeypatch.setitem(BACKENDS, "flex", dataclasses.replace(BACKENDS["flex"], prepare=counted))
    assert "flex" in attention.available_backends()
    # documents longer and shorter than the local window (32 tokens), one of a single token
    ids, cu_seqlens, max_seqlen, targets = _packed_batch([300, 64, 17, 1, 129, 40], 8192)
    flex, sdpa = perturbed_model(attn_backend="flex"), perturbed_model(attn_backend="sdpa")
    flex.model.resolve_attn_backend(CPU, torch.float32)  # the registry's availability check, as the trainer does
    windows = {layer.attn.window for layer in flex.model.layers}
    assert (-1, -1) in windows and len(windows) == 2  # global and local layers

    got_logits, got_grads = _logits_and_grads(flex, ids, cu_seqlens, max_seqlen, targets)
    want_logits, want_grads = _logits_and_grads(sdpa, ids, cu_seqlens, max_seqlen, targets)
    assert flex.model.attn_backend == "flex" and sorted(built) == sorted(windows)  # once per forward and window kind
    assert attention._flex_compiled is None  # eager on CPU: inductor compiles flex on CPU for inference only
    torch.testing.assert_close(got_logits, want_logits, atol=1e-5, rtol=1e-5)
    assert got_grads.keys() == want_grads.keys()
    for name, grad in got_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, want_grads[name], atol=1e-5, rtol=1e-5, msg=name)

