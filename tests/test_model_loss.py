"""The MLM loss (model/loss.py) against torch's cross-entropy and max: value, gradient, predictions."""

import pytest
import torch
import torch.nn.functional as F

from modernbert_pretrain.model.loss import masked_lm_loss


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
