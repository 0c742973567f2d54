"""Batch-size warmup: whole microbatches, equal steps per size, reaches full, consistent step counts."""

from __future__ import annotations

from collections import Counter

import pytest

from modernbert_pretrain.data import BatchSizeWarmup, DataConfig, DataConfigError, batch_size_schedule


def simulate(warmup: BatchSizeWarmup, steps: int) -> list[int]:
    """Global batch sizes of the first ``steps`` steps, advancing the slot clock as the loader does."""
    tokens, sizes = 0, []
    for _ in range(steps):
        size = warmup.batch_size_at(tokens)
        sizes.append(size)
        tokens += size * warmup.seq_len
    return sizes


@pytest.mark.parametrize("granularity", [768, 96 * 2, 16 * 8])
def test_recipe_warmup_768_to_4608_over_50b_tokens(granularity):
    warmup = BatchSizeWarmup(768, 4608, 50 * 10**9, 1024, granularity)
    sizes = simulate(warmup, warmup.warmup_steps + 10)
    counts = Counter(sizes[:warmup.warmup_steps])
    assert sorted(counts) == list(range(768, 4608, granularity))  # every whole-microbatch size below full
    assert len(set(counts.values())) == 1  # an equal number of steps at each size
    assert all(s % granularity == 0 for s in sizes)
    assert sizes == sorted(sizes)
    assert sizes[warmup.warmup_steps:] == [4608] * 10
    # the warmup spans the requested tokens to within one step at each size
    assert abs(warmup.warmup_end_tokens - 50 * 10**9) <= sum(warmup.sizes) * 1024 / 2


def test_steps_for_matches_the_clock():
    warmup = BatchSizeWarmup(64, 256, 1_000_000, 128, 32)
    for budget in [1, 128 * 64, 999_999, 1_000_000, warmup.warmup_end_tokens, warmup.warmup_end_tokens + 1,
                   5_000_000]:
        steps = warmup.steps_for(budget)
        assert warmup.tokens_after(steps) >= budget
        assert warmup.tokens_after(steps - 1) < budget
    sizes = simulate(warmup, 40)
    assert [warmup.tokens_after(n) for n in range(5)] == [128 * sum(sizes[:n]) for n in range(5)]


def test_constant_schedule_and_bad_arguments():
    constant = BatchSizeWarmup.constant(256, 128, 32)
    assert simulate(constant, 5) == [256] * 5 and constant.warmup_steps == 0
    assert constant.steps_for(256 * 128 * 3) == 3
    with pytest.raises(ValueError, match="start=100 must be a positive multiple of the granularity 32"):
        BatchSizeWarmup(100, 256, 10**6, 128, 32)
    with pytest.raises(ValueError, match="exceeds the full batch size"):
        BatchSizeWarmup(512, 256, 10**6, 128, 32)


def test_schedule_from_config_checks_the_world_size():
    cfg = DataConfig(tokenizer="t", local="/m", seq_len=1024, device_microbatch_size=96, global_batch_size=4608,
                     batch_size_warmup_start=768, batch_size_warmup_tokens="50B")
    schedule = batch_size_schedule(cfg, world_size=8)
    assert schedule.granularity == 768 and schedule.sizes[0] == 768 and schedule.full == 4608
    with pytest.raises(DataConfigError, match=r"global_batch_size=4608 is not a multiple .* = 672"):
        batch_size_schedule(cfg, world_size=7)


def test_warmup_start_rounds_to_whole_microbatches_at_any_world_size(caplog):
    """The warmup's first size is rounded up to whole microbatches on every rank, and the log says so;
    the full batch is never changed (a partial microbatch there is still an error)."""
    cfg = DataConfig(tokenizer="t", local="/m", seq_len=1024, device_microbatch_size=96, global_batch_size=4800,
                     batch_size_warmup_start=768, batch_size_warmup_tokens="50B")
    with caplog.at_level("WARNING"):
        schedule = batch_size_schedule(cfg, world_size=5)  # unit 480: 768 -> 960
    assert schedule.sizes[0] == 960 and schedule.full == 4800
    assert "batch_size_warmup_start=768" in caplog.text and "starts at 960" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert batch_size_schedule(cfg, world_size=1).sizes[0] == 768
    assert caplog.text == ""
    # A start rounded up to the full batch means no warmup at that world size.
    small = DataConfig(tokenizer="t", local="/m", seq_len=128, device_microbatch_size=8, global_batch_size=32,
                       batch_size_warmup_start=8, batch_size_warmup_tokens=102400)
    assert small.warmup_start_at(4) == 32 and batch_size_schedule(small, world_size=4).sizes == []
    assert batch_size_schedule(small, world_size=2).sizes[0] == 16
