"""Every available attention backend computes the same function as the SDPA reference."""

import pytest
import torch

from modernbert_pretrain.model.attention import (
    BACKENDS,
    available_backends,
    resolve_backend,
    sdpa_attention,
    sdpa_layout,
)


def _naive(q, k, v, cu, window):
    """Dense per-document softmax attention with an explicit band mask, the slow obvious way."""
    out = torch.empty_like(q)
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        qd, kd, vd = (t[s:e].transpose(0, 1).float() for t in (q, k, v))  # (heads, n, dim)
        scores = qd @ kd.transpose(-1, -2) / qd.shape[-1] ** 0.5
        i = torch.arange(e - s)
        rel = i[None, :] - i[:, None]
        if window[0] >= 0:
            scores = scores.masked_fill(rel < -window[0], float("-inf"))
        if window[1] >= 0:
            scores = scores.masked_fill(rel > window[1], float("-inf"))
        out[s:e] = (scores.softmax(-1) @ vd).transpose(0, 1).to(q.dtype)
    return out


def _inputs(device="cpu", dtype=torch.float32, lengths=(100, 7, 64, 1)):
    torch.manual_seed(0)
    total = sum(lengths)
    q, k, v = (torch.randn(total, 4, 16, device=device, dtype=dtype) for _ in range(3))
    cu = torch.nn.functional.pad(torch.tensor(lengths).cumsum(0), (1, 0)).to(torch.int32).to(device)
    return q, k, v, cu, max(lengths)


@pytest.mark.parametrize("window", [(-1, -1), (16, 16), (3, 3)])
def test_sdpa_matches_naive(window):
    q, k, v, cu, m = _inputs()
    torch.testing.assert_close(sdpa_attention(q, k, v, cu, m, window), _naive(q, k, v, cu.cpu(), window),
                               atol=1e-5, rtol=1e-5)


def test_sdpa_gradients_are_finite_with_short_documents():
    q, k, v, cu, m = _inputs(lengths=(1, 50, 2))
    for t in (q, k, v):
        t.requires_grad_(True)
    sdpa_attention(q, k, v, cu, m, (4, 4)).sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize("window", [(-1, -1), (3, 3)])
def test_sdpa_packs_short_documents_into_shared_rows(window):
    lengths = (5,) * 20 + (40, 3, 17, 1, 39)
    q, k, v, cu, m = _inputs(lengths=lengths)
    layout = sdpa_layout(cu, q.shape[0], m, window)
    # Greedy, in order, at most max_seqlen (40) tokens a row: 8 x 5 | 8 x 5 | 4 x 5 | 40 | 3, 17, 1 | 39
    assert (layout.rows, layout.width) == (6, 40)  # one padded row per document: 25
    assert layout.slots.unique().numel() == q.shape[0]  # every token has its own slot
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    reference = [t.clone().requires_grad_() for t in (q, k, v)]
    out = sdpa_attention(*inputs, cu, m, window, layout=layout)
    want = _naive(*reference, cu, window)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    weights = torch.randn_like(want)
    (out * weights).sum().backward()
    (want * weights).sum().backward()
    for got, expected in zip(inputs, reference):
        torch.testing.assert_close(got.grad, expected.grad, atol=1e-5, rtol=1e-5)


def test_auto_on_cpu_is_sdpa():
    assert resolve_backend("auto", device=torch.device("cpu"), dtype=torch.float32,
                           needs_window=True, needs_dropout=False) == "sdpa"


@pytest.mark.gpu
@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("window", [(-1, -1), (64, 64)])
def test_gpu_backends_match_sdpa(backend, window):
    if backend not in available_backends():
        pytest.skip(f"{backend} not installed here")
    if backend == "torch_varlen" and window != (-1, -1):
        from modernbert_pretrain.model.attention import _varlen_has_window

        if not _varlen_has_window():
            pytest.skip("varlen_attn without window_size (torch < 2.11)")
    q, k, v, cu, m = _inputs("cuda", torch.bfloat16, lengths=(300, 17, 129, 1, 512))
    ref = sdpa_attention(q.float(), k.float(), v.float(), cu, m, window)
    out = BACKENDS[backend](q, k, v, cu, m, window)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
def test_gpu_model_auto_matches_sdpa_model():
    from .model_helpers import perturbed_model, ragged_batch

    ref = perturbed_model().cuda()
    fast = perturbed_model(attn_backend="auto").cuda()
    ids, mask = ragged_batch([300, 64, 17], ref.config.vocab_size)
    ids, mask = ids.cuda(), mask.cuda()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        a = ref(ids, attention_mask=mask).logits.float()
        b = fast(ids, attention_mask=mask).logits.float()
    valid = mask.bool()
    assert (a[valid] - b[valid]).abs().max() < 0.1
