"""Unpadded execution: padded == flat, documents are isolated, sparse head, bad input."""

import pytest
import torch

from modernbert_pretrain import ModernBertForMaskedLM
from modernbert_pretrain.model import available_backends, positions_from_cu_seqlens

from .model_helpers import perturbed_model, ragged_batch, tiny_config


def _flat(ids, mask):
    lengths = mask.sum(1)
    flat = torch.cat([ids[i, :n] for i, n in enumerate(lengths.tolist())])
    cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    return flat, cu, int(lengths.max())


def test_positions_restart_per_document():
    cu = torch.tensor([0, 3, 3, 7], dtype=torch.int32)
    assert positions_from_cu_seqlens(cu, 7).tolist() == [0, 1, 2, 0, 1, 2, 3]


def test_padded_and_unpadded_agree():
    model = perturbed_model()
    ids, mask = ragged_batch([150, 40, 97], model.config.vocab_size)
    flat, cu, longest = _flat(ids, mask)
    with torch.no_grad():
        padded = model(ids, attention_mask=mask).logits
        unpadded = model(flat, cu_seqlens=cu, max_seqlen=longest).logits
    torch.testing.assert_close(padded[mask.bool()], unpadded, atol=1e-5, rtol=0)
    assert (padded[~mask.bool()] == 0).all()


def test_changing_one_document_leaves_the_others_alone():
    model = perturbed_model()
    ids, mask = ragged_batch([120, 64, 80], model.config.vocab_size)
    flat, cu, longest = _flat(ids, mask)
    changed = flat.clone()
    changed[cu[1]:cu[2]] = torch.randint(5, model.config.vocab_size, (int(cu[2] - cu[1]),))
    with torch.no_grad():
        a = model(flat, cu_seqlens=cu, max_seqlen=longest).logits
        b = model(changed, cu_seqlens=cu, max_seqlen=longest).logits
    keep = torch.ones(flat.shape[0], dtype=torch.bool)
    keep[cu[1]:cu[2]] = False
    assert torch.equal(a[keep], b[keep])
    assert not torch.allclose(a[~keep], b[~keep])


def test_document_alone_equals_document_in_a_pack():
    model = perturbed_model()
    ids, mask = ragged_batch([70, 90], model.config.vocab_size)
    flat, cu, longest = _flat(ids, mask)
    with torch.no_grad():
        packed = model(flat, cu_seqlens=cu, max_seqlen=longest).logits
        alone = model(ids[1:2, :90]).logits[0]
    torch.testing.assert_close(packed[70:], alone, atol=1e-5, rtol=0)


def test_sparse_prediction_only_runs_on_labelled_positions():
    model = perturbed_model()
    ids, mask = ragged_batch([60, 40], model.config.vocab_size)
    flat, cu, longest = _flat(ids, mask)
    labels = torch.full_like(flat, -100)
    picked = torch.tensor([0, 5, 61, 99])
    labels[picked] = flat[picked]
    with torch.no_grad():
        out = model(flat, labels=labels, cu_seqlens=cu, max_seqlen=longest)
        dense = model(flat, cu_seqlens=cu, max_seqlen=longest).logits
    assert out.logits.shape == (4, model.config.vocab_size)
    torch.testing.assert_close(out.logits, dense[picked], atol=1e-5, rtol=0)
    expected = torch.nn.functional.cross_entropy(dense[picked], flat[picked])
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=0)


def test_backward_runs_on_cpu_and_reaches_every_parameter():
    model = perturbed_model().train()
    ids, mask = ragged_batch([64, 48], model.config.vocab_size)
    labels = ids.masked_fill(torch.rand(ids.shape) > 0.3, -100).masked_fill(mask == 0, -100)
    out = model(ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("backend", [b for b in ("flash_attn", "torch_varlen", "flex") if b not in available_backends()])
def test_requested_backend_that_is_missing_never_falls_back(backend):
    model = ModernBertForMaskedLM(tiny_config(attn_backend=backend))
    with pytest.raises(RuntimeError, match=f"{backend}.*not available"):
        model(torch.randint(5, 100, (10,)))


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="attn_backend.*unknown backend 'fast'"):
        tiny_config(attn_backend="fast")


def test_out_of_vocab_ids():
    model = perturbed_model()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([1, 2, model.config.vocab_size]))


def test_too_long_sequence():
    model = perturbed_model()
    n = model.config.max_position_embeddings + 1
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.randint(5, 100, (1, n)))


@pytest.mark.parametrize("shape", [(2, 3, 4), ()])
def test_wrong_shapes(shape):
    model = perturbed_model()
    with pytest.raises(ValueError, match="input_ids must be"):
        model(torch.zeros(shape, dtype=torch.long))


def test_mismatched_mask_and_labels():
    model = perturbed_model()
    ids = torch.randint(5, 100, (2, 8))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(ids, attention_mask=torch.ones(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="labels has shape"):
        model(ids, labels=torch.ones(2, 7, dtype=torch.long))


def test_bad_cu_seqlens():
    model = perturbed_model()
    with pytest.raises(ValueError, match="cu_seqlens must start at 0"):
        model(torch.randint(5, 100, (10,)), cu_seqlens=torch.tensor([0, 4, 9], dtype=torch.int32), max_seqlen=5)
