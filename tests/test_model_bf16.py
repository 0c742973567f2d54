"""bf16 autocast on CPU against fp32: the model, its loss and its gradients, and a short training run.

Composer applies no bf16 autocast on CPU (the trainer refuses `precision: amp_bf16` there), so this is where the
bf16 path runs in CI: the model under `torch.autocast("cpu", torch.bfloat16)`, as Composer wraps it on GPU.

Tolerances are in units of bf16's machine epsilon, EPS = 2**-7 (8 significant bits). Measured on the tiny model
(2-core CPU, torch 2.7, sdpa and flex alike): logits 0.6 EPS relative (Frobenius), loss 1e-5 relative, the worst
parameter gradient 1.6 EPS relative with cosine similarity > 0.9999, and 20 training steps within 0.0015 nats of
fp32's loss.
"""

import pytest
import torch
import torch.nn.functional as F

from modernbert_pretrain import ModernBertForMaskedLM
from modernbert_pretrain.config import OptimizerConfig
from modernbert_pretrain.constants import IGNORE_INDEX
from modernbert_pretrain.train.optim import build_optimizer

from .model_helpers import perturbed_model, tiny_config

EPS = torch.finfo(torch.bfloat16).eps  # 2**-7


def _packed(lengths, vocab=8192, seed=0, learnable=False):
    """Flat ids of packed documents, cu_seqlens, max_seqlen and labels on 30% of the tokens (the token itself when
    `learnable`, else a random one)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (sum(lengths),), generator=g)
    picked = torch.rand(ids.shape, generator=g) < 0.3
    targets = ids if learnable else torch.randint(5, vocab, ids.shape, generator=g)
    labels = torch.where(picked, targets, IGNORE_INDEX)
    cu_seqlens = F.pad(torch.tensor(lengths).cumsum(0), (1, 0)).to(torch.int32)
    return ids, cu_seqlens, max(lengths), labels


def _step(model, batch, bf16: bool):
    ids, cu_seqlens, max_seqlen, labels = batch
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        out = model(ids, labels=labels, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
    out.loss.backward()
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_model_and_loss_under_bf16_autocast_match_fp32(backend):
    batch = _packed([300, 64, 17, 1, 129, 40])  # local (32-token window) and global layers both matter
    ref, low = perturbed_model(attn_backend=backend), perturbed_model(attn_backend=backend)
    want, got = _step(ref, batch, bf16=False), _step(low, batch, bf16=True)
    assert got.logits.dtype == torch.bfloat16  # autocast reached the decoder
    assert got.loss.dtype == torch.float32  # the cross-entropy runs in fp32 over bf16 logits
    # Every matmul rounds its inputs to bf16 (half an EPS each) and accumulates in fp32, so rounding errors
    # average out over a dot product: the logits stay within about one rounding of fp32 (0.6 EPS measured).
    assert _rel(got.logits, want.logits) < 1.5 * EPS
    # The loss averages those errors over every masked token.
    assert got.loss.item() == pytest.approx(want.loss.item(), rel=EPS / 4)
    # Backward multiplies rounded activations by rounded gradients: 1.6 EPS for the worst parameter, measured.
    # 2.5 EPS leaves room for other CPUs' bf16 kernels, and still catches a bf16-only defect: rotary angles rounded
    # to bf16 under autocast move the worst gradient to 3.0 EPS.
    for (name, p), q in zip(ref.named_parameters(), low.parameters()):
        assert torch.isfinite(q.grad).all(), name
        assert _rel(q.grad, p.grad) < 2.5 * EPS, name
        assert F.cosine_similarity(q.grad.flatten(), p.grad.flatten(), dim=0) > 0.999, name


def _train(bf16: bool, steps: int = 20) -> list[float]:
    torch.manual_seed(0)
    model = ModernBertForMaskedLM(tiny_config()).train()
    optimizer = build_optimizer(model, OptimizerConfig(lr=3e-3))
    data = [_packed([200, 64, 17, 129, 102], seed=i, learnable=True) for i in range(4)]
    losses = []
    for step in range(steps):
        losses.append(_step(model, data[step % len(data)], bf16).loss.item())
        optimizer.step()
        optimizer.zero_grad()
    return losses


def test_training_under_bf16_autocast_stays_finite_and_close_to_fp32():
    fp32, bf16 = _train(bf16=False), _train(bf16=True)
    assert all(torch.isfinite(torch.tensor(bf16)))
    assert bf16[-1] < bf16[0] - 1.0  # it learns (fp32 falls from 9.03 to 6.76 here)
    # Rounding perturbs each update by well under 1% and the differences add up slowly (measured <= 0.0015 nats
    # over 20 steps): 0.02 nats is under 1% of what the run learns, and far from a diverging run.
    assert bf16 == pytest.approx(fp32, abs=0.02)
