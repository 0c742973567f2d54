"""The shipped recipe YAMLs plan exactly the published values (docs/recipe.md, "The three phases"), via
--dry-run."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from modernbert_pretrain.train.main import main

ROOT = Path(__file__).resolve().parents[1]
T = 10**12
B = 10**9

# (yaml, expected subset of the plan) - numbers from arXiv 2412.13663 tables 3-4; microbatches are the largest
# that the memory plan fits on 8 x H100 (docs/memory.md).
RECIPES = {
    "phase1": dict(max_tokens=1719 * B, seq_len=1024, global_batch_size=4608, device_microbatch_size=48, lr=8e-4,
                   weight_decay=1e-5, betas=[0.9, 0.98], eps=1e-6, warmup_tokens=3 * B,
                   batch_size_warmup={"start": 768, "tokens": 50 * B}, decay=None, rope_theta_global=10000.0,
                   rope_theta_local=10000.0, mask_prob=0.3, load_from=None, init_from=None,
                   model={"preset": "base", "params": 149_655_232}),
    "phase2": dict(max_tokens=250 * B, seq_len=8192, global_batch_size=576, device_microbatch_size=9, lr=3e-4,
                   weight_decay=1e-5, warmup_tokens=0, batch_size_warmup=None, decay=None,
                   rope_theta_global=160000.0, rope_theta_local=10000.0, mask_prob=0.3),
    "phase3": dict(max_tokens=50 * B, seq_len=8192, global_batch_size=576, lr=3e-4, weight_decay=1e-5,
                   decay={"shape": "1-sqrt", "tokens": 50 * B, "final_lr_fraction": 0.0},
                   rope_theta_global=160000.0, rope_theta_local=10000.0),
    "large/phase1": dict(max_tokens=1719 * B, seq_len=1024, global_batch_size=4928, device_microbatch_size=28,
                         lr=5e-4, weight_decay=1e-5, warmup_tokens=2 * B,
                         batch_size_warmup={"start": 448, "tokens": 10 * B},
                         lr_drops=[{"at_tokens": 919 * B, "lr_fraction": 0.1}], rope_theta_global=10000.0,
                         model={"preset": "large", "params": 395_881_664}),
    "large/phase2": dict(max_tokens=250 * B, seq_len=8192, global_batch_size=616, device_microbatch_size=1,
                         lr=5e-5, weight_decay=1e-6, rope_theta_global=160000.0),
    "large/phase3": dict(max_tokens=50 * B, seq_len=8192, global_batch_size=624, device_microbatch_size=3, lr=5e-5,
                         weight_decay=1e-6, decay={"shape": "1-sqrt", "tokens": 50 * B, "final_lr_fraction": 0.0}),
    "anneal/domain": dict(decay={"shape": "1-sqrt", "tokens": 50 * B, "final_lr_fraction": 0.0}, seq_len=8192),
}


def _plan(yaml: str, *extra: str) -> tuple[dict, str]:
    """What `python train.py <yaml> --dry-run --world-size 8` prints, run in-process for speed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(ROOT / "yamls" / f"{yaml}.yaml"), "--dry-run", "--world-size", "8", *extra])
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue().strip().splitlines()[-1]), err.getvalue()


@pytest.mark.parametrize("yaml", sorted(RECIPES))
def test_recipe_plan_matches_published_values(yaml):
    plan, _ = _plan(yaml)
    for key, value in RECIPES[yaml].items():
        assert plan[key] == value, key
    assert isinstance(plan["max_tokens"], int) and isinstance(plan["steps"], int)


def test_tokens_per_step_are_constant_across_base_phases():
    plans = [_plan(p)[0] for p in ("phase1", "phase2", "phase3")]
    assert {p["global_batch_size"] * p["seq_len"] for p in plans} == {4608 * 1024}


def test_later_phases_start_from_the_previous_phase_and_large_tiles_from_base():
    assert _plan("phase2")[0]["load_from"].endswith("checkpoints/modernbert-base-phase1")
    assert _plan("phase3")[0]["load_from"].endswith("checkpoints/modernbert-base-phase2")
    init = _plan("large/phase1")[0]["init_from"]
    assert init["mode"] == "tile" and init["path"].endswith("modernbert-base-phase1")


def test_dry_run_warns_about_missing_paths_but_plans(tmp_path):
    plan, err = _plan("phase2", f"workdir={tmp_path}")
    assert "does not exist" in err and str(tmp_path) in err
    assert plan["load_from"] == f"{tmp_path}/checkpoints/modernbert-base-phase1"


def test_cli_dry_run_prints_json_last(tmp_path):
    cmd = [sys.executable, str(ROOT / "train.py"), str(ROOT / "yamls/phase1.yaml"), "--dry-run", f"workdir={tmp_path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout.strip().splitlines()[-1])
    assert plan["steps"] > 0 and plan["memory"]["fits"]
    assert len(out.stdout.strip().splitlines()) > 1  # the memory table comes first
    # --no-memory (launch/recipe.sh's up-front check): the same plan without the memory table
    quick = subprocess.run([*cmd, "--no-memory"], capture_output=True, text=True, timeout=120)
    assert quick.returncode == 0, quick.stderr
    (line,) = quick.stdout.strip().splitlines()
    assert json.loads(line) == {**plan, "memory": None}


def test_real_run_refuses_a_missing_path(tmp_path):
    out = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "train.py"),
                          str(ROOT / "yamls/smoke/phase2.yaml"), f"workdir={tmp_path}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "cannot start" in out.stderr and "does not exist" in out.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" in imported and "composer" not in imported  # refused before the trainer's imports
