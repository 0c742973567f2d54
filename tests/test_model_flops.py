"""The FLOP count behind MFU."""

import pytest

from modernbert_pretrain import ModernBertConfig
from modernbert_pretrain.model.flops import non_embedding_params, training_flops


def test_base_at_1024_is_about_825_mflop_per_token():
    cfg = ModernBertConfig.from_preset("base")
    docs = [1024] * 64
    tokens = sum(docs)
    per_token = training_flops(cfg, docs, masked=int(0.3 * tokens)) / tokens
    assert per_token == pytest.approx(825e6, rel=0.01)


def test_counts_scale_as_documented():
    cfg = ModernBertConfig.from_preset("tiny")
    n = non_embedding_params(cfg)
    assert training_flops(cfg, [], masked=0) == 0.0
    one = training_flops(cfg, [10], masked=0, n_params=n)
    assert one == pytest.approx(6 * n * 10 + 12 * cfg.hidden_size * 10 * 10 * cfg.num_hidden_layers)
    head = training_flops(cfg, [10], masked=3, n_params=n) - one
    assert head == pytest.approx(3 * 6 * (cfg.hidden_size ** 2 + cfg.hidden_size * cfg.vocab_size))
    long_doc = training_flops(cfg, [500], masked=0, n_params=n) - 6 * n * 500
    n_global = sum(cfg.is_global_layer(i) for i in range(cfg.num_hidden_layers))
    expected = 12 * cfg.hidden_size * 500 * (n_global * 500 + (3 - n_global) * (cfg.local_attention + 1))
    assert long_doc == pytest.approx(expected)
