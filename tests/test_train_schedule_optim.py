"""Token schedules, weight-decay groups, and phase-change optimizer hygiene."""

import math

import pytest
import torch

from modernbert_pretrain.config import DecayConfig, LrDrop, OptimizerConfig, SchedulerConfig
from modernbert_pretrain.train.optim import apply_phase_hyperparameters, build_optimizer, param_groups
from modernbert_pretrain.train.schedule import lr_multiplier

from .model_helpers import perturbed_model


def test_warmup_then_constant():
    cfg = SchedulerConfig(warmup_tokens=100)
    assert lr_multiplier(0, cfg, 1000) == 0.0
    assert lr_multiplier(50, cfg, 1000) == pytest.approx(0.5)
    assert lr_multiplier(100, cfg, 1000) == 1.0
    assert lr_multiplier(999, cfg, 1000) == 1.0


@pytest.mark.parametrize("shape,mid", [("linear", 0.5), ("cosine", 0.5), ("1-sqrt", 1 - math.sqrt(0.5))])
def test_decay_shapes_end_at_final_fraction(shape, mid):
    cfg = SchedulerConfig(warmup_tokens=0, decay=DecayConfig(shape=shape, tokens=400, final_lr_fraction=0.1))
    assert lr_multiplier(600, cfg, 1000) == 1.0  # stable until the decay starts
    assert lr_multiplier(800, cfg, 1000) == pytest.approx(0.1 + 0.9 * mid)
    assert lr_multiplier(1000, cfg, 1000) == pytest.approx(0.1)


def test_decay_over_whole_phase_and_drops():
    cfg = SchedulerConfig(decay=DecayConfig(shape="1-sqrt", tokens=0))
    assert lr_multiplier(0, cfg, 100) == 1.0
    assert lr_multiplier(25, cfg, 100) == pytest.approx(0.5)
    drops = SchedulerConfig(drops=[LrDrop(at_tokens=500, lr_fraction=0.1)])
    assert lr_multiplier(499, drops, 1000) == 1.0
    assert lr_multiplier(500, drops, 1000) == 0.1


def test_no_weight_decay_on_norms_and_biases():
    model = perturbed_model()
    decay, no_decay = param_groups(model, 1e-5)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("norm" in names[id(p)] or names[id(p)].endswith("bias") for p in no_decay["params"])
    assert all("norm" not in names[id(p)] and not names[id(p)].endswith("bias") for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 1e-5
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_phase_change_resets_every_hyperparameter_including_max_lr():
    model = perturbed_model()
    old = build_optimizer(model, OptimizerConfig(lr=8e-4, weight_decay=1e-5))
    model(torch.randint(5, 100, (2, 16)), labels=torch.randint(5, 100, (2, 16))).loss.backward()
    old.step()
    state = old.state_dict()
    new = build_optimizer(model, OptimizerConfig(lr=1e-3))
    new.load_state_dict(state)
    assert new.param_groups[0]["max_lr"] == 8e-4  # torch copies the stale value ...
    apply_phase_hyperparameters(new, OptimizerConfig(lr=3e-4, weight_decay=2e-5, betas=(0.8, 0.9)))
    for group in new.param_groups:  # ... and the phase change replaces it
        assert group["lr"] == group["max_lr"] == 3e-4
        assert (group["beta1"], group["beta2"]) == (0.8, 0.9)
        assert group["weight_decay"] == (2e-5 if group["name"] == "decay" else 0.0)
    moments = [s for s in new.state.values() if s]
    assert moments, "the moments of the earlier phase are kept"
