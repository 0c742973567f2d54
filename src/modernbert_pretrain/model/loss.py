"""The MLM loss on the masked rows' logits: mean cross-entropy and the top-1 predictions, in one pass.

`F.cross_entropy` keeps the log-probabilities for backward, and its backward computes `exp` over every logit
again and first fills a zero gradient the size of the logits; a masked-accuracy metric then reads the logits
once more for their argmax, after backward, when they have left the cache. Here forward takes the row maximum
with its index (the prediction; the same first-maximum index as `logits.max(-1).indices`) while the logits are
hot, keeps the softmax probabilities, and reads the log-sum-exp off the top probability; backward is
`probs - one_hot` without another `exp`.

Measured on the tiny preset (2-core CPU, one thread, alone): 300 steps of the smoke recipe (`train.py
yamls/smoke/phase1.yaml max_tokens=1228800 eval=null`, start-up included) took 71.0 s instead of 79.4 s. The
loss equals `F.cross_entropy` to float rounding (tests/test_model_loss.py); the golden loss curve moved by at
most 2e-6.

On CPU, training goes one step further (`decoder_masked_lm_loss`): the decoder's matmul, the loss and their
gradients run in blocks of rows that stay in cache, and the full (rows, vocab) logits are never written.
Forward computes the gradients of hidden, weight and bias at once (the loss is the last op, so backward only
scales them). Measured on the tiny preset's decoder (640 masked rows, vocab 8192, one thread, alone): decoder
plus loss, forward and backward, 44.4 ms -> 28.8 ms; blocks of 32, 64 and 96 rows were within 1%
(`_FUSED_BLOCK_ELEMENTS`). On GPU the plain path stays: this blocking was measured on CPU only.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

_FUSED_BLOCK_ELEMENTS = 1 << 19
"""Logits per block of the fused CPU path: 64 rows of an 8192 vocabulary (2 MiB of float32, one core's L2)."""


class _SoftmaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor):
        # logits: (rows, vocab) float32; target: (rows,)
        top, predictions = logits.max(dim=1)  # (rows,), (rows,)
        probs = torch.softmax(logits, dim=1)  # (rows, vocab)
        # softmax divides exp(x - top) by their sum s, so the top entry is 1 / s (to rounding, and never
        # underflows: s <= vocab): log-sum-exp = top + log(s) = top - log(that entry)
        lse = top - probs.gather(1, predictions[:, None]).squeeze(1).log()
        loss = (lse - logits.gather(1, target[:, None]).squeeze(1)).mean()
        ctx.save_for_backward(probs, target)
        ctx.mark_non_differentiable(predictions)
        return loss, predictions

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: torch.Tensor, _grad_predictions):
        probs, target = ctx.saved_tensors
        scale = grad_loss / probs.shape[0]
        grad = probs * scale  # a new tensor: the saved probabilities stay intact for a retained graph
        grad[torch.arange(probs.shape[0], device=probs.device), target] -= scale
        return grad, None


def masked_lm_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of `logits` (rows, vocab) against `target` (rows,), computed in float32, and the
    top-1 prediction of each row (rows,). No rows: a zero loss that still reaches the logits in backward."""
    if target.numel() == 0:
        return logits.sum() * 0.0, target.clone()
    return _SoftmaxCrossEntropy.apply(logits.float(), target)


class _FusedDecoderCrossEntropy(torch.autograd.Function):
    """loss, predictions = mean CE(hidden @ weight.T + bias, target), with the gradients made in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, block_rows: int):
        # hidden: (rows, hidden) float32; weight: (vocab, hidden); bias: (vocab,) or None; target: (rows,)
        rows = hidden.shape[0]
        want_h, want_w, want_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros_like(weight) if want_w else None
        grad_b = torch.zeros_like(bias) if want_b else None
        losses = hidden.new_empty(rows)
        predictions = target.new_empty(rows)
        scale = 1.0 / rows
        for start in range(0, rows, block_rows):
            end = min(start + block_rows, rows)
            h, t = hidden[start:end], target[start:end]
            logits = h @ weight.t() if bias is None else torch.addmm(bias, h, weight.t())  # (block, vocab)
            top, predictions[start:end] = logits.max(dim=1)
            target_logit = logits.gather(1, t[:, None]).squeeze(1)
            probs = logits.sub_(top[:, None]).exp_()  # in place: the logits are not needed again
            total = probs.sum(dim=1)
            losses[start:end] = top + total.log() - target_logit
            # d(mean loss)/d(logits) = (softmax - one_hot) / rows
            probs.mul_((scale / total)[:, None])
            probs[torch.arange(end - start, device=probs.device), t] -= scale
            if want_h:
                torch.mm(probs, weight, out=grad_h[start:end])
            if want_w:
                grad_w.addmm_(probs.t(), h)
            if want_b:
                grad_b.add_(probs.sum(dim=0))
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.mark_non_differentiable(predictions)
        return losses.mean(), predictions

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: torch.Tensor, _grad_predictions):
        # New tensors, so that a retained graph gives the same gradients again.
        grads = [None if g is None else g * grad_loss for g in ctx.saved_tensors]
        return *grads, None, None


def _fused_applies(hidden: torch.Tensor, decoder: nn.Linear) -> bool:
    """The fused path: CPU training in float32, outside autocast and compilation."""
    return (torch.is_grad_enabled() and hidden.device.type == "cpu" and hidden.dtype == torch.float32
            and decoder.weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and (hidden.requires_grad or decoder.weight.requires_grad)
            and not torch.compiler.is_compiling())


def decoder_masked_lm_loss(hidden: torch.Tensor, decoder: nn.Linear, target: torch.Tensor, *, may_fuse: bool
                           ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """logits, loss, predictions for the masked rows' head output `hidden` (rows, hidden_size).

    With `may_fuse` (the caller needs no logits), CPU training takes the fused path and returns no logits
    (None); everything else decodes the logits (rows, vocab) and returns them with `masked_lm_loss`'s loss
    and predictions."""
    if may_fuse and target.numel() and _fused_applies(hidden, decoder):
        block_rows = max(1, _FUSED_BLOCK_ELEMENTS // decoder.weight.shape[0])
        loss, predictions = _FusedDecoderCrossEntropy.apply(hidden, decoder.weight, decoder.bias, target,
                                                           block_rows)
        return None, loss, predictions
    logits = decoder(hidden)
    loss, predictions = masked_lm_loss(logits, target)
    return logits, loss, predictions
