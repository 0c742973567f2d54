"""What the run prints: a progress line per variant, one table per configuration, and the JSON summary."""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
from pathlib import Path

import torch

from .configs import TARGET_RATIO, TARGETS

ROOT = Path(__file__).resolve().parents[2]
_COLUMNS = (f"{'variant':<52} {'attn':<12} {'real tok/s':>12} {'MFU':>7} {'peak GiB':>9} {'vs HF':>6} "
            f"{'step ms':>9}  notes")


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _pct(value: float) -> str:
    return f"{value:.1%}" if value >= 1e-3 else f"{value:.0e}"


def print_progress(res: dict) -> None:
    print(f"  {res['real_tokens_per_s']:,.0f} real tokens/s, MFU {_pct(res['mfu'])}, peak "
          f"{res['peak_mem_gib']:.2f} GiB, step {res['step_s'] * 1e3:.1f} ms, warmup {res['warmup_s']:.1f} s, "
          f"attn {res['attn']}, {res['optimizer']}"
          + (f", graph breaks {res['graph_breaks']}" if "graph_breaks" in res else ""), flush=True)


def add_ratios(results: list[dict]) -> None:
    """ratio_vs_transformers: real tok/s over the eager transformers run of the same configuration."""
    for name in dict.fromkeys(r["config"] for r in results):
        base = next((r for r in results if r["config"] == name and r["impl"] == "transformers"
                     and r["status"] == "ok" and not r["variant"].endswith("compiled")), None)
        for r in results:
            if r["config"] == name and r["status"] == "ok":
                r["ratio_vs_transformers"] = (r["real_tokens_per_s"] / base["real_tokens_per_s"]) if base else None


def _table_head(name: str, stats: dict | None, tiny: bool) -> str:
    head = f"== {name}"
    if stats:
        head += (f": rows {stats['rows']} x {stats['seq_len']}, packing {stats['packing_efficiency']:.1%}, "
                 f"docs mean {stats['doc_len_mean']:.0f} / p90 {stats['doc_len_p90']:.0f} tokens, "
                 f"{stats['mflop_per_real_token']:.1f} MFLOP per real token")
    return head + (" [CPU tiny: not GPU figures]" if tiny else "")


def _table_row(r: dict, on_target_card: bool) -> str:
    if r["status"] != "ok":
        return f"{r['variant']:<52} {r.get('attn', '-'):<12} {r['status'].upper():>12}  {r.get('error', '')}"
    notes = []
    if "graph_breaks" in r:
        notes.append(f"graph breaks {r['graph_breaks']}, graphs {r['graphs']}")
        if r["recompiled_while_timed"]:
            notes.append("recompiled while timed")
    if r.get("note"):
        notes.append(r["note"])
    name = r["config"]
    if on_target_card and r["impl"] == "ours" and name in TARGETS:
        ok = r["real_tokens_per_s"] >= TARGETS[name] and (r.get("ratio_vs_transformers") or 0) >= TARGET_RATIO
        notes.append(f"target {TARGETS[name] // 1000}k & {TARGET_RATIO}x: {'met' if ok else 'not met'}")
    return (f"{r['variant']:<52} {r['attn']:<12} {r['real_tokens_per_s']:>12,.0f} {_pct(r['mfu']):>7} "
            f"{r['peak_mem_gib']:>9.2f} {_fmt(r.get('ratio_vs_transformers'), '>6.2f'):>6} "
            f"{r['step_s'] * 1e3:>9.1f}  {'; '.join(notes)}")


def print_tables(results: list[dict], pools: dict, device: torch.device, args) -> None:
    on_target_card = device.type == "cuda" and not args.tiny
    for name in dict.fromkeys(r["config"] for r in results):
        stats = next((s for (n, _, _), s in pools.items() if n == name), None)
        print()
        print(_table_head(name, stats, args.tiny))
        print(_COLUMNS)
        for r in results:
            if r["config"] == name:
                print(_table_row(r, on_target_card))
    if device.type == "cpu":
        print("\n(CPU: peak GiB is the process's peak resident memory, not per variant; MFU is against "
              f"--peak-tflops {args.peak_tflops:g}.)")


def environment(device: torch.device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device)}
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = None
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(Exception):
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True, timeout=5).stdout.strip() or None
    return env


def summarize(results: list[dict], pools: dict, env: dict, args, wall_s: float) -> dict:
    """The JSON summary (the last stdout line, and --json-out)."""
    summary = {
        "bench": "train_throughput",
        "tiny": args.tiny,
        "env": env,
        "peak_tflops": args.peak_tflops,
        "wall_s": wall_s,
        "data": {f"{n}|rows={r}|{'static' if s else 'dynamic'}": v for (n, r, s), v in pools.items()},
        "results": results,
    }
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary), flush=True)
    return summary
