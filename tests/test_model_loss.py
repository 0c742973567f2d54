"""The MLM loss (model/loss.py) against torch's cross-entropy and max: value, gradient, predictions."""

import pytest
import torch
import torch.nn.functional as F

from modernbert_pretrain.model import loss as loss_module
from modernbert_pretrain.model.loss import decoder_masked_lm_loss, masked_lm_loss


def _logits(rows=300, vocab=512, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, vocab, generator=g) * 4).to(dtype)
    target = torch.randint(0, vocab, (rows,), generator=g)
    return logits, target


@pytest.mark.parametrize("scale", [1.0, 40.0])  # 40: logits far apart, most probabilities underflow
def test_loss_gradient_and_predictions_equal_torchs(scale):
    logits, target = _logits()
    logits = logits * scale
    logits[0, 7] = logits[0, 9] = logits[0].max() + 1  # a tied maximum: the first index wins, as in max()
    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss, predictions = masked_lm_loss(ours, target)
    expected = F.cross_entropy(theirs, target)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-9)
    assert torch.equal(predictions, logits.max(dim=-1).indices) and predictions[0] == 7
    assert not predictions.requires_grad


def test_bf16_logits_are_computed_in_float32():
    logits, target = _logits(dtype=torch.bfloat16)
    ours = logits.clone().requires_grad_()
    loss, _ = masked_lm_loss(ours, target)
    loss.backward()
    assert loss.dtype == torch.float32 and ours.grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss, F.cross_entropy(logits.float(), target), rtol=1e-6, atol=1e-6)


def test_a_retained_graph_gives_the_same_gradient_twice():
    logits, target = _logits()
    ours = logits.clone().requires_grad_()
    loss, _ = masked_lm_loss(ours, target)
    loss.backward(retain_graph=True)
    first = ours.grad.clone()
    loss.backward()
    torch.testing.assert_close(ours.grad, 2 * first)


def test_no_masked_rows_give_a_zero_loss_that_backpropagates():
    logits = torch.randn(0, 64, requires_grad=True)
    loss, predictions = masked_lm_loss(logits, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and predictions.shape == (0,) and logits.grad.shape == (0, 64)


# ------------------------------------------------------------------- the fused CPU decoder + loss
def _decoder_case(rows=150, hidden=24, vocab=700, bias=True, seed=1):
    g = torch.Generator().manual_seed(seed)
    decoder = torch.nn.Linear(hidden, vocab, bias=bias)
    with torch.no_grad():
        decoder.weight.copy_(torch.randn(vocab, hidden, generator=g) * 0.3)
        if bias:
            decoder.bias.copy_(torch.randn(vocab, generator=g))
    h = torch.randn(rows, hidden, generator=g)
    target = torch.randint(0, vocab, (rows,), generator=g)
    return decoder, h, target


def _grads(decoder, h, target, fused: bool, loss_scale=1.0):
    decoder.zero_grad(set_to_none=True)
    h = h.clone().requires_grad_()
    logits, loss, predictions = decoder_masked_lm_loss(h, decoder, target, may_fuse=fused)
    (loss * loss_scale).backward()
    grads = [h.grad] + [p.grad for p in decoder.parameters()]
    return logits, loss, predictions, grads


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("block_elements", [700 * 64, 700 * 7, 1])  # whole blocks, a ragged last block, 1 row
def test_fused_decoder_loss_equals_decoder_then_cross_entropy(monkeypatch, bias, block_elements):
    monkeypatch.setattr(loss_module, "_FUSED_BLOCK_ELEMENTS", block_elements)
    decoder, h, target = _decoder_case(bias=bias)
    logits, loss, predictions, grads = _grads(decoder, h, target, fused=True, loss_scale=0.25)
    assert logits is None  # the fused path ran
    ref_h = h.clone().requires_grad_()
    ref_logits = decoder(ref_h)
    decoder.zero_grad(set_to_none=True)
    (F.cross_entropy(ref_logits, target) * 0.25).backward()
    ref_grads = [ref_h.grad] + [p.grad for p in decoder.parameters()]
    torch.testing.assert_close(loss, F.cross_entropy(ref_logits, target), rtol=1e-6, atol=1e-6)
    assert torch.equal(predictions, ref_logits.max(dim=-1).indices) and not predictions.requires_grad
    assert len(grads) == len(ref_grads) == (3 if bias else 2)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)


def test_fused_path_only_where_asked_and_on_cpu_training():
    decoder, h, target = _decoder_case()
    assert _grads(decoder, h, target, fused=False)[0].shape == (150, 700)  # the caller wants logits
    with torch.no_grad():
        assert decoder_masked_lm_loss(h, decoder, target, may_fuse=True)[0] is not None  # evaluation
    with torch.autocast("cpu", torch.bfloat16):
        logits, _, _ = decoder_masked_lm_loss(h.requires_grad_(), decoder, target, may_fuse=True)
    assert logits.dtype == torch.bfloat16  # autocast keeps the decoder in bf16, as before
    logits, loss, _ = decoder_masked_lm_loss(h[:0], decoder, target[:0], may_fuse=True)  # no masked rows
    assert loss.item() == 0.0 and logits.shape == (0, 700)


def test_fused_gradients_skip_frozen_inputs_and_repeat_for_a_retained_graph():
    decoder, h, target = _decoder_case()
    decoder.weight.requires_grad_(False)
    h = h.clone().requires_grad_()
    _, loss, _ = decoder_masked_lm_loss(h, decoder, target, may_fuse=True)
    loss.backward(retain_graph=True)
    first = h.grad.clone()
    loss.backward()
    torch.testing.assert_close(h.grad, 2 * first)
    assert decoder.weight.grad is None and decoder.bias.grad is not None


def test_model_trains_the_same_with_and_without_logits():
    from .model_helpers import perturbed_model

    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 8192, (400,), generator=g)
    labels = torch.where(torch.rand(400, generator=g) < 0.3, ids, -100)
    cu = torch.tensor([0, 130, 250, 251, 400], dtype=torch.int32)
    runs = []
    for return_logits in (True, False):
        model = perturbed_model()
        out = model(ids, labels=labels, cu_seqlens=cu, max_seqlen=150, return_logits=return_logits)
        out.loss.backward()
        runs.append((out, {n: p.grad for n, p in model.named_parameters()}))
    (full, full_grads), (fused, fused_grads) = runs
    assert full.logits is not None and fused.logits is None
    torch.testing.assert_close(fused.loss, full.loss, rtol=1e-6, atol=1e-6)
    assert torch.equal(fused.predictions, full.predictions)
    for name, grad in full_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)
