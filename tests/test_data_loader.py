"""The training/eval loader: batch form, packing and masks on real shards, exact resume, ranks, Composer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modernbert_pretrain.data import (
    IGNORE_INDEX,
    ResumeStateError,
    StreamConfig,
    build_eval_loader,
    build_train_loader,
    tokenizer_info,
)
from tests.data_fixtures import assert_same_batches, make_cfg, own_shm, small_data, synthetic_mds, take


@pytest.fixture(autouse=True)
def _shm():
    with own_shm():
        yield


def test_batch_form():
    cfg = make_cfg(device_microbatch_size=4, global_batch_size=12)
    loader = build_train_loader(cfg, rank=0, world_size=1)
    for batch in take(loader, 5):
        assert set(batch) == {"microbatches", "num_rows", "num_slot_tokens", "num_real_tokens"}
        assert len(batch["microbatches"]) == 3 and batch["num_rows"] == 12
        assert batch["num_slot_tokens"] == 12 * 256
        for mb in batch["microbatches"]:
            ids, labels, cu = mb["input_ids"], mb["labels"], mb["cu_seqlens"]
            assert ids.dtype == labels.dtype == torch.long and cu.dtype == torch.int32
            assert ids.dim() == 1 and ids.shape == labels.shape
            assert cu[0] == 0 and cu[-1] == ids.numel() == mb["num_real_tokens"]
            lengths = cu[1:] - cu[:-1]
            assert (lengths >= 1).all() and mb["max_seqlen"] == int(lengths.max()) <= 256
            assert mb["num_rows"] == 4 and mb["num_slot_tokens"] == 4 * 256
        assert sum(mb["num_real_tokens"] for mb in batch["microbatches"]) == batch["num_real_tokens"]
    assert loader.metrics["step"] == 5 and loader.tokens_seen == 5 * 12 * 256
    assert 0 < loader.metrics["packing_efficiency"] <= 1


def test_packing_and_masks_on_heavy_tailed_shards():
    local, _ = synthetic_mds(3000, 256)
    cfg = make_cfg(local, seq_len=256, device_microbatch_size=8, global_batch_size=32, packing_buffer_docs=512)
    loader = build_train_loader(cfg, rank=0, world_size=1)
    info = tokenizer_info(small_data().tokenizer)
    special = info.special_lookup()
    selectable = chosen = as_mask = special_hit = 0
    for batch in take(loader, 30):
        for mb in batch["microbatches"]:
            inputs, labels = mb["input_ids"].numpy(), mb["labels"].numpy()
            picked = labels != IGNORE_INDEX
            original = np.where(picked, labels, inputs)
            selectable += int((~special[original]).sum())
            chosen += int(picked.sum())
            as_mask += int((inputs[picked] == info.mask_id).sum())
            special_hit += int(special[original][picked].sum())
            replaced = picked & (inputs != labels) & (inputs != info.mask_id)
            assert not special[inputs[replaced]].any()
    assert loader.metrics["packing_efficiency_total"] >= 0.99
    assert abs(chosen / selectable - 0.3) < 0.01
    assert abs(as_mask / chosen - 0.8) < 0.02
    assert special_hit == 0


@pytest.mark.parametrize("stop", [4, 24])
def test_resume_yields_the_same_batches_and_reads_only_the_buffer(stop):
    # ~300 short documents: an epoch lasts about 20 steps, so resuming at 24 crosses an epoch;
    # the batch grows from 4 to 8 rows after 15 steps, so the clock is restored too
    local, _ = synthetic_mds(300, 256, seed=5)
    cfg = make_cfg(local, device_microbatch_size=4, global_batch_size=8, batch_size_warmup_start=4,
                   batch_size_warmup_tokens=15 * 4 * 256, packing_buffer_docs=48)
    reference = take(build_train_loader(cfg, rank=0, world_size=1), stop + 12)
    assert {b["num_rows"] for b in reference} == {4, 8}

    interrupted = build_train_loader(cfg, rank=0, world_size=1)
    take(interrupted, stop)
    state = json.loads(json.dumps(interrupted.state_dict()))  # plain data: survives JSON and torch.save
    resumed = build_train_loader(cfg, rank=0, world_size=1)
    resumed.load_state_dict(state)
    restore_reads = resumed.pipeline.source.reads
    assert restore_reads == len({ref[0] for ref in state["packer"]["pieces"]}) <= cfg.packing_buffer_docs
    assert resumed.step == stop and resumed.tokens_seen == interrupted.tokens_seen
    assert_same_batches(take(resumed, 12), reference[stop:])
    if stop > 20:
        assert resumed.metrics["epoch"] >= 1


def test_composer_state_saves_and_restores_the_loader():
    from composer.core import DataSpec, State
    from composer.devices import DeviceCPU

    def state_for(loader):
        spec = DataSpec(loader, split_batch=lambda b, n: b["microbatches"],
                        get_num_samples_in_batch=lambda b: b["num_rows"])
        return State(model=torch.nn.Linear(2, 2), rank_zero_seed=0, run_name="t", device=DeviceCPU(),
                     train_dataloader=spec, max_duration="10ba")

    cfg = make_cfg()
    first = build_train_loader(cfg, rank=0, world_size=1)
    iterator = iter(first)
    for _ in range(3):
        next(iterator)
    saved = state_for(first)._dataset_state_dict()  # what Composer writes into a checkpoint
    assert saved["train"]["ranks"][0]["step"] == 3
    second = build_train_loader(cfg, rank=0, world_size=1)
    restored = state_for(second)
    restored._load_dataset_state(saved)  # what Composer does on load
    assert restored.dataset_resumption == {"train": True}  # so Composer will not spin the loader
    assert_same_batches(take(second, 2), [next(iterator), next(iterator)])


def test_two_ranks_get_disjoint_data_and_agree_on_batch_size():
    cfg = make_cfg(device_microbatch_size=4, global_batch_size=16, batch_size_warmup_start=8,
                   batch_size_warmup_tokens=6 * 8 * 256)
    loaders = [build_train_loader(cfg, rank=r, world_size=2) for r in (0, 1)]
    orders = [loader.pipeline.source.ids_for_epoch(0) for loader in loaders]
    assert not set(orders[0].tolist()) & set(orders[1].tolist())
    total = loaders[0].pipeline.source.dataset.num_samples
    assert len(set(orders[0].tolist()) | set(orders[1].tolist())) == total
    sizes = [[], []]
    for rank, loader in enumerate(loaders):
        for step, batch in enumerate(loader):
            sizes[rank].append(loader.metrics["global_batch_size"])
            assert batch["num_rows"] == loader.metrics["global_batch_size"] // 2
            if step == 9:
                break
    assert sizes[0] == sizes[1] and set(sizes[0]) == {8, 16}
    consumed = [set(orders[r][:loaders[r].pipeline.source.cursor].tolist()) for r in (0, 1)]
    assert consumed[0] and consumed[1] and not consumed[0] & consumed[1]


def test_rank_arguments_must_match_the_launcher(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ValueError, match="world_size=2 disagrees with the environment WORLD_SIZE=4"):
        build_train_loader(make_cfg(), rank=0, world_size=2)


def test_resume_refuses_other_ranks_or_data():
    cfg = make_cfg()
    loader = build_train_loader(cfg, rank=0, world_size=1)
    take(loader, 2)
    state = loader.state_dict()
    with pytest.raises(ResumeStateError, match="same world size"):
        build_train_loader(cfg, rank=0, world_size=2).load_state_dict(state)
    with pytest.raises(ResumeStateError, match="seed, shuffle"):
        build_train_loader(cfg.with_overrides(seed=4), rank=0, world_size=1).load_state_dict(state)
    with pytest.raises(ResumeStateError, match="holds loader states of 1 ranks, this run has 2"):
        build_train_loader(cfg, rank=1, world_size=2).load_state_dict({"ranks": [state]})


def test_resume_names_a_changed_seq_len_or_data_mix_and_the_fix():
    from modernbert_pretrain.data import StreamConfig
    from modernbert_pretrain.schema import ConfigError

    cfg = make_cfg()
    loader = build_train_loader(cfg, rank=0, world_size=1)
    take(loader, 2)
    state = loader.dataset.state_dict()
    with pytest.raises(ResumeStateError, match="data.seq_len is 128, the checkpoint was saved with 256; .*load_from"):
        build_train_loader(cfg.with_overrides(seq_len=128), rank=0, world_size=1).dataset.load_state_dict(state)
    local, _ = synthetic_mds()
    mixed = make_cfg(local=None, streams=[StreamConfig(local=small_data().mds), StreamConfig(local=local)])
    with pytest.raises(ResumeStateError, match="data mix changed: the checkpoint read 1 stream.*has 2.*load_from"):
        build_train_loader(mixed, rank=0, world_size=1).dataset.load_state_dict(state)
    halved = make_cfg(local=None, streams=[StreamConfig(local=small_data().mds, proportion=0.5)])
    with pytest.raises(ResumeStateError, match="data mix changed: stream proportion/repeat/choose") as err:
        build_train_loader(halved, rank=0, world_size=1).dataset.load_state_dict(state)
    assert isinstance(err.value, ConfigError) and "\n" not in str(err.value)  # train.py: one line, exit 2


def test_resume_names_a_changed_batch_size_schedule():
    cfg = make_cfg(batch_size_warmup_start=4, batch_size_warmup_tokens=2048)
    loader = build_train_loader(cfg, rank=0, world_size=1)
    take(loader, 2)
    state = loader.dataset.state_dict()
    with pytest.raises(ResumeStateError, match=r"data.global_batch_size is 16, the checkpoint was saved with 8; "
                                               r".*load_from"):
        build_train_loader(cfg.with_overrides(global_batch_size=16), rank=0, world_size=1).dataset.load_state_dict(state)
    with pytest.raises(ResumeStateError, match=r"data.batch_size_warmup_start is None, the checkpoint was saved with 4"):
        build_train_loader(cfg.with_overrides(batch_size_warmup_start=None), rank=0,
                           world_size=1).dataset.load_state_dict(state)
    same = build_train_loader(cfg, rank=0, world_size=1)
    same.dataset.load_state_dict(state)
    assert same.step == 2


def test_eval_loader_is_one_identical_pass_over_everything():
    local, tokens = synthetic_mds(300, 256, seed=5)
    cfg = make_cfg(local, global_batch_size=8, batch_size_warmup_start=4, batch_size_warmup_tokens=1000,
                   mask_prob=0.15)
    loader = build_eval_loader(cfg, rank=0, world_size=1)
    first, second = list(loader), list(loader)
    assert_same_batches(first, second)
    assert sum(b["num_real_tokens"] for b in first) == tokens  # every token once, no warmup
    assert all(b["num_rows"] == 8 for b in first[:-1])


def test_background_process_builds_the_same_batches():
    cfg = make_cfg(packing_buffer_docs=32)
    in_process = build_train_loader(cfg, rank=0, world_size=1)
    expected = take(in_process, 6)
    background = build_train_loader(cfg.with_overrides(num_workers=1, prefetch_steps=2), rank=0, world_size=1)
    assert background.pipeline is None
    got = take(background, 3)
    state = background.state_dict()
    background.close()
    assert state["step"] == 3  # the state of what was handed out, not of what was prefetched
    resumed = build_train_loader(cfg.with_overrides(num_workers=1), rank=0, world_size=1)
    resumed.load_state_dict(state)
    got += take(resumed, 3)
    resumed.close()
    assert_same_batches(got, expected)
    assert resumed.state_dict() == in_process.state_dict()


def test_mixture_follows_proportions():
    text, _ = synthetic_mds(300, 256, seed=5)
    cfg = make_cfg(local=None, streams=[StreamConfig(local=text, proportion=3.0, name="text"),
                                        StreamConfig(local=small_data().mds, proportion=1.0, name="code")],
                   epoch_size=800)
    loader = build_train_loader(cfg, rank=0, world_size=1)
    source = loader.pipeline.source
    ids = source.ids_for_epoch(0)
    streams = source.dataset.stream_per_shard[[source.dataset.spanner[int(i)][0] for i in ids]]
    assert ids.size == 800 and abs((streams == 0).mean() - 0.75) < 0.01
    assert take(loader, 2)[1]["num_rows"] == 8


def test_a_shared_memory_prefix_taken_at_the_same_moment_is_retried(monkeypatch):
    """Two jobs that start a dataset at once can pick the same streaming prefix; the slower one retries."""
    import streaming

    real, calls = streaming.StreamingDataset, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise FileExistsError(17, "File exists", "/000001_locals")
        return real(*args, **kwargs)

    monkeypatch.setattr(streaming, "StreamingDataset", racing)
    cfg = make_cfg()
    with own_shm():
        first = take(build_train_loader(cfg, rank=0, world_size=1), 2)
        assert len(calls) == 2
        reference = take(build_train_loader(cfg, rank=0, world_size=1), 2)
    assert_same_batches(first, reference)

    def always(*args, **kwargs):
        calls.append(1)
        raise FileExistsError(17, "File exists", "/000001_locals")

    monkeypatch.setattr(streaming, "StreamingDataset", always)
    calls.clear()
    with own_shm(), pytest.raises(FileExistsError):
        build_train_loader(cfg, rank=0, world_size=1)
    assert len(calls) == 5
