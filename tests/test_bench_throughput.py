"""bench/train_throughput.py at tiny sizes on CPU: it runs, and its JSON summary is complete and sane.
No timing assertions: the figures of a tiny CPU run say nothing about speed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "train_throughput.py"
CONFIGS = ("base@1024", "large@1024", "base@8192")
RESULT_FIGURES = ("real_tokens_per_s", "mfu", "peak_mem_gib", "step_s", "tflops", "ratio_vs_transformers",
                  "packing_efficiency", "masked_fraction", "loss")


def _run(*extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"no output; stderr:\n{proc.stderr[-3000:]}"
    return proc, json.loads(lines[-1])


def _positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_tiny_cpu_run_reports_every_figure():
    proc, summary = _run()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["bench"] == "train_throughput" and summary["tiny"] is True
    assert summary["env"]["device"] == "cpu"
    assert _positive_finite(summary["peak_tflops"])
    results = summary["results"]
    for name in CONFIGS:
        got = {r["impl"]: r for r in results if r["config"] == name}
        assert set(got) == {"ours", "transformers"}, (name, results)
        for impl, r in got.items():
            assert r["status"] == "ok", (name, impl, r.get("error"))
            for key in RESULT_FIGURES:
                assert _positive_finite(r[key]), (name, impl, key, r.get(key))
            assert r["mfu"] < 1 and 0 < r["packing_efficiency"] <= 1
            assert 0.2 < r["masked_fraction"] < 0.4
            assert r["steps"] >= 1 and r["rows"] >= 1
        assert got["transformers"]["ratio_vs_transformers"] == 1.0
        assert got["transformers"]["attn"] == "sdpa"
    assert len(summary["data"]) == len(CONFIGS)
    for stats in summary["data"].values():
        for key in ("packing_efficiency", "mflop_per_real_token", "doc_len_mean", "non_embedding_params"):
            assert _positive_finite(stats[key]), (key, stats)
    # the human-readable tables come before the JSON line
    for name in CONFIGS:
        assert f"== {name}" in proc.stdout


def test_a_failing_variant_is_reported_and_the_run_goes_on(capsys):
    # In-process (cheap). torch's varlen attention is CUDA-only, so our variant fails before any step.
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_train_throughput", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        code = bench.main(["--device", "cpu", "--tiny", "--configs", "base@1024", "--attn", "torch_varlen", "--no-hf"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert code == 1  # nothing succeeded
    (result,) = summary["results"]
    assert result["status"] == "failed" and "torch_varlen" in result["error"]
    assert "FAILED" in out
