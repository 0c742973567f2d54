"""Two real ranks (processes, gloo) as a launcher starts them: disjoint data, shared state, exact resume."""

from __future__ import annotations

import json
import os

import torch.distributed as dist
import torch.multiprocessing as mp

from tests.data_fixtures import assert_same_batches, fresh_dir, make_cfg, take
from tests.train_helpers import free_port

WORLD = 2


def _rank_main(rank: int, cfg_dict: dict, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        from modernbert_pretrain.data import DataConfig, build_train_loader

        cfg = DataConfig.from_dict(cfg_dict)
        loader = build_train_loader(cfg, rank=rank, world_size=WORLD)
        iterator = iter(loader)
        first = [next(iterator) for _ in range(3)]
        saved = loader.dataset.state_dict(3 * 4, True)  # what Composer calls on every rank
        expected = [next(iterator) for _ in range(2)]
        consumed = loader.pipeline.source.ids_for_epoch(0)[:loader.pipeline.source.cursor].tolist()
        resumed = build_train_loader(cfg, rank=rank, world_size=WORLD)
        resumed.dataset.load_state_dict(saved)  # every rank gets rank 0's copy of the saved object
        assert_same_batches(take(resumed, 2), expected)
        result = {"ranks_saved": len(saved["ranks"]), "consumed": consumed,
                  "sizes": [b["num_rows"] for b in first + expected], "first_ids": first[0]["microbatches"][0][
                      "input_ids"][:50].tolist()}
    except Exception as err:  # report to the parent instead of dying silently
        result = {"error": f"{type(err).__name__}: {err}"}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()


def test_two_rank_processes_split_data_and_resume_exactly():
    cfg = make_cfg(device_microbatch_size=4, global_batch_size=16, batch_size_warmup_start=8,
                   batch_size_warmup_tokens=2 * 8 * 256)
    out_dir = fresh_dir("dist")
    mp.start_processes(_rank_main, args=(cfg.to_dict(), free_port(), out_dir), nprocs=WORLD, start_method="spawn")
    results = []
    for rank in range(WORLD):
        with open(os.path.join(out_dir, f"rank{rank}.json")) as f:
            results.append(json.load(f))
    for result in results:
        assert "error" not in result, result.get("error")
        assert result["ranks_saved"] == WORLD  # the saved object holds every rank's state
        assert result["sizes"] == [4, 4, 8, 8, 8]  # warmup 8 -> 16 rows globally, 4 -> 8 per rank
    assert not set(results[0]["consumed"]) & set(results[1]["consumed"])
    assert results[0]["first_ids"] != results[1]["first_ids"]
