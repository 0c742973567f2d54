"""End to end on CPU: the smoke recipe's three phases chain from checkpoints, as `python train.py` runs them."""

import json
import shutil

import torch

from modernbert_pretrain.checkpoints import decode_run_info, describe, load_checkpoint

from .train_helpers import metrics, run_train

# Phase 1 shrunk further for the test: 20 steps of batch-size warmup at 16 sequences, then 32 x 128.
P1 = ["max_tokens=204800", "data.batch_size_warmup_tokens=40960", "scheduler.warmup_tokens=16384",
      "save.interval=102400tok", "eval.interval=102400tok", "eval.batches=2"]
P2 = ["max_tokens=40960", "save.interval=20480tok", "eval.interval=20480tok", "eval.batches=2"]
P3 = ["max_tokens=40960", "save.interval=20480tok", "eval.interval=20480tok", "eval.batches=2"]


def test_smoke_phases_chain(smoke_workdir, tmp_path, monkeypatch):
    work = tmp_path / "w"
    shutil.copytree(smoke_workdir, work, ignore=shutil.ignore_patterns("corpus"))
    m1, m2, m3 = (work / f"m{i}.jsonl" for i in (1, 2, 3))
    run_train("smoke/phase1.yaml", work, *P1, f"logging.metrics_file={m1}")
    run_train("smoke/phase2.yaml", work, *P2, f"logging.metrics_file={m2}")
    # Phase 3 also logs to W&B, offline as on a machine without an API key or network.
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_train("smoke/phase3.yaml", work, *P3, f"logging.metrics_file={m3}", "logging.wandb=true")
    assert list((tmp_path / "wandb").glob("offline-run-*")), "W&B wrote an offline run"

    s1, s2, s3 = metrics(m1), metrics(m2), metrics(m3)
    done = json.loads((work / "checkpoints/smoke-phase3/training_complete.json").read_text())
    assert done["run_name"] == "smoke-phase3" and done["tokens"] >= 40960
    # Batch-size warmup: 16 -> 32 sequences in whole microbatches, then constant.
    sizes = [s["global_batch_size"] for s in s1]
    assert sizes[:21] == [16] * 20 + [32] and sizes[-1] == 32 and sizes == sorted(sizes)
    # The loss goes down over phase 1 and keeps going in phase 2.
    first, last = sum(s["loss"] for s in s1[:5]) / 5, sum(s["loss"] for s in s1[-5:]) / 5
    assert last < first - 1.0, (first, last)
    # Each later phase starts its own clock and takes its LR from its own YAML.
    assert s2[0]["batch"] == 1 and s2[0]["lr"] == 1e-3
    assert s3[0]["lr"] == 1e-3 and s3[-1]["lr"] < 0.2e-3  # 1-sqrt decay towards 0
    assert all(a["lr"] >= b["lr"] for a, b in zip(s3, s3[1:]))
    # Phase 2 continued from phase 1 (its first loss is far below a fresh model's ~9.0 = ln 8192).
    assert s2[0]["loss"] < s1[0]["loss"] - 1.0

    # The phase-2 checkpoint carries phase 2's hyperparameters, including optimi's max_lr.
    ckpt = torch.load(work / "checkpoints/smoke-phase2/latest-rank0.pt", map_location="cpu", weights_only=False)
    groups = next(iter(ckpt["state"]["optimizers"].values()))["param_groups"]
    assert {g["max_lr"] for g in groups} == {1e-3}
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 1e-5]
    info = decode_run_info(ckpt["state"]["callbacks"]["RunInfo"])
    assert info["model_config"]["global_rope_theta"] == 160000.0

    # Phase 3's checkpoint counts the tokens of all three phases; each clock alone restarts at 0.
    ends = [describe(load_checkpoint(work / f"checkpoints/smoke-phase{i}")) for i in (1, 2, 3)]
    assert ends[2]["total_tokens_seen"] == sum(e["tokens_seen"] for e in ends) > ends[2]["tokens_seen"]
    assert ends[2]["total_steps"] == sum(e["step"] for e in ends)
    assert ends[2]["phases"] == ["smoke-phase1", "smoke-phase2", "smoke-phase3"]

    # Tiled init (the large recipe, shrunk): tiny-large from the trained tiny base starts far below random.
    tiled, rand = work / "tiled.jsonl", work / "random.jsonl"
    short = ["max_tokens=4096", "data.batch_size_warmup_start=null", "eval=null", "save.interval=1000ba",
             "scheduler.warmup_tokens=0"]
    run_train("smoke/large/phase1.yaml", work, *short, f"logging.metrics_file={tiled}")
    run_train("smoke/large/phase1.yaml", work, *short, "init_from=null", "run_name=random-large",
              f"logging.metrics_file={rand}")
    tiled_loss, random_loss = metrics(tiled)[0]["loss"], metrics(rand)[0]["loss"]
    base_loss = s1[-1]["loss"]  # where the tiny base ended
    # Random starts near ln(8192) = 9.0; the tiled model starts near where its source ended.
    assert tiled_loss < random_loss - 1.5, (tiled_loss, random_loss)
    assert tiled_loss < base_loss + 1.0, (tiled_loss, base_loss)


def test_tiling_to_a_smaller_model_is_refused_before_training(smoke_workdir, tmp_path):
    import subprocess

    from .train_helpers import env, train_cmd

    work = tmp_path / "w"
    shutil.copytree(smoke_workdir, work, ignore=shutil.ignore_patterns("corpus"))
    run_train("smoke/phase1.yaml", work, "max_tokens=4096", "data.batch_size_warmup_start=null", "eval=null",
              "scheduler.warmup_tokens=0",
              "model.preset=tiny-large", "run_name=big")
    out = subprocess.run(train_cmd("smoke/large/phase1.yaml", work, "model.preset=tiny",
                                   f"init_from.path={work}/checkpoints/big"), capture_output=True, text=True,
                         env=env(), timeout=300)
    assert out.returncode == 2
    assert "cannot tile" in out.stderr and "hidden_size" in out.stderr


def test_heldout_evaluation_has_its_own_masking_rate(smoke_workdir):
    from modernbert_pretrain.config import load_config
    from modernbert_pretrain.train.builder import build_loaders

    from .train_helpers import ROOT

    cfg = load_config(ROOT / "yamls/smoke/phase1.yaml", [f"workdir={smoke_workdir}", "eval.data.mask_prob=0.15"])
    train, evaluator = build_loaders(cfg, rank=0, world_size=1)
    eval_loader = evaluator.dataloader.dataloader
    batch = next(iter(eval_loader))
    labels = torch.cat([mb["labels"] for mb in batch["microbatches"]])
    rate = float((labels != -100).float().mean())
    assert abs(rate - 0.15) < 0.04, rate
    assert eval_loader.spec.cfg.split == "val" and train.spec.cfg.split == "train"
