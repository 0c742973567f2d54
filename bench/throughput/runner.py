"""Timing: one measurement per variant (warmup, then timed steps between two device syncs), and the loop
over the plan that keeps going when a variant fails."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import resource
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from .configs import BenchConfig, Variant
from .data import Batch, build_pool
from .models import compile_model, compile_note, hf_model, make_optimizer, our_config, our_model
from .report import print_progress

Step = Callable[[Batch], torch.Tensor]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _dynamo_counts() -> tuple[int, int, list[str]]:
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0, 0, []
    breaks = counters.get("graph_break", {})
    graphs = counters.get("stats", {}).get("unique_graphs", 0)
    return int(sum(breaks.values())), int(graphs), [str(k)[:160] for k in list(breaks)[:4]]


def _fresh_start(device: torch.device, seed: int) -> None:
    """Forget earlier compilations and memory peaks, and seed the model's initialization."""
    with contextlib.suppress(Exception):
        torch._dynamo.reset()
    with contextlib.suppress(Exception):
        from torch._dynamo.utils import counters

        counters.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(seed)


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    # CPU: the process's peak resident set (Linux reports KiB); not per variant.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _make_step(args, bc: BenchConfig, variant: Variant, result: dict, device: torch.device) -> Step:
    """Build the model and its optimizer (recording attention backend and optimizer in `result`) and return
    one training step on a batch."""
    cfg = our_config(bc, variant.attn)
    if variant.impl == "transformers":
        model, result["attn"] = hf_model(cfg, device), "sdpa"
    else:
        model, result["attn"] = our_model(cfg, variant, device)
    optimizer, result["optimizer"] = make_optimizer(model, variant.impl, args.optimizer, device)
    fn = compile_model(model, variant)
    inputs = "hf" if variant.impl == "transformers" else "ours"

    def step(batch: Batch) -> torch.Tensor:
        kwargs = getattr(batch, inputs)
        if variant.compile and inputs == "ours":
            if variant.static_shapes:
                kwargs = {**kwargs, "max_seqlen": bc.seq_len}
            torch._dynamo.maybe_mark_dynamic(kwargs["cu_seqlens"], 0)
            if not variant.static_shapes:
                torch._dynamo.maybe_mark_dynamic(kwargs["input_ids"], 0)
                torch._dynamo.maybe_mark_dynamic(kwargs["labels"], 0)
        with autocast(device):
            out = fn(**kwargs)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out.loss.detach()

    return step


def _warm_up(step: Step, pool: list[Batch], n: int, device: torch.device) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        step(pool[i % len(pool)])
    sync(device)
    return time.perf_counter() - t0


def _timed_steps(step: Step, pool: list[Batch], first: int, steps: int, deadline: float,
                 device: torch.device) -> dict[str, Any]:
    """`steps` steps from batch `first` on (cycling), stopping early at the deadline. Returns the sums."""
    tokens = masked = done = 0
    flops = 0.0
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        batch = pool[(first + i) % len(pool)]
        loss = step(batch)
        tokens += batch.real_tokens
        masked += batch.masked_tokens
        flops += batch.flops
        done += 1
        if time.monotonic() > deadline:
            break
    sync(device)
    elapsed = time.perf_counter() - t0
    return {"steps": done, "elapsed": elapsed, "tokens": tokens, "masked": masked, "flops": flops,
            "loss": float(loss.float().item())}


def run_variant(args, bc: BenchConfig, variant: Variant, pool: list[Batch], device: torch.device,
                deadline: float) -> dict:
    result: dict[str, Any] = {"config": bc.name, "variant": variant.describe(), "impl": variant.impl,
                              "status": "ok", "rows": len(pool[0].row_docs), "seq_len": bc.seq_len,
                              "preset": bc.preset}
    _fresh_start(device, args.seed)
    step = _make_step(args, bc, variant, result, device)
    warmup = args.warmup
    if variant.compile:  # every batch shape is seen (and compiled for) before timing starts
        warmup = max(warmup, len(pool) + 2)
    result["warmup_s"] = _warm_up(step, pool, warmup, device)
    _, graphs_before, _ = _dynamo_counts()
    t = _timed_steps(step, pool, warmup, args.steps, deadline, device)
    if not math.isfinite(t["loss"]):
        raise FloatingPointError(f"loss is {t['loss']}")
    if t["steps"] < args.steps:
        result["note"] = f"budget reached: {t['steps']} of {args.steps} timed steps"
    elapsed = t["elapsed"]
    result.update({
        "steps": t["steps"],
        "step_s": elapsed / t["steps"],
        "real_tokens_per_s": t["tokens"] / elapsed,
        "tflops": t["flops"] / elapsed / 1e12,
        "mfu": t["flops"] / elapsed / (args.peak_tflops * 1e12),
        "peak_mem_gib": peak_memory_gib(device),
        "loss": t["loss"],
        "masked_fraction": t["masked"] / t["tokens"],
    })
    if variant.compile:
        breaks, graphs_after, reasons = _dynamo_counts()
        result.update({"graph_breaks": breaks, "graphs": graphs_after,
                       "recompiled_while_timed": graphs_after != graphs_before})
        if reasons:
            result["graph_break_reasons"] = reasons
    return result


def not_run(name: str, variant: Variant, status: str, error: str) -> dict:
    """The result entry of a variant that was skipped or failed."""
    return {"config": name, "variant": variant.describe(), "impl": variant.impl, "status": status,
            "error": error}


class PlanRunner:
    """Runs the plan's variants in order; batches are built once per (config, rows, static shapes) and shared
    by the variants that need them. A variant that fails is recorded and the run goes on."""

    def __init__(self, args, table: dict[str, BenchConfig], device: torch.device, deadline: float) -> None:
        self.args, self.table, self.device, self.deadline = args, table, device, deadline
        self.pools: dict[tuple[str, int, bool], dict] = {}  # statistics of each pool
        self._cache: dict[tuple[str, int, bool], list[Batch]] = {}

    def run(self, todo: list[tuple[str, Variant]]) -> list[dict]:
        return [self.run_one(name, variant) for name, variant in todo]

    def run_one(self, name: str, variant: Variant) -> dict:
        describe = variant.describe()
        if time.monotonic() > self.deadline:
            print(f"[{name}] {describe}: skipped (--max-seconds {self.args.max_seconds:g} reached)", flush=True)
            return not_run(name, variant, "skipped", "time budget reached")
        print(f"[{name}] {describe} ...", flush=True)
        note = compile_note(self.device, variant)
        if note:
            print(f"  note: {note}", flush=True)
            return not_run(name, variant, "skipped", note)
        try:
            res = self._measure(name, variant)
            print_progress(res)
            return res
        except Exception as err:  # OOM, missing backend, compile failure: report and go on
            text = str(err).strip()
            msg = f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"[:400]
            print(f"  FAILED {msg}", flush=True)
            if os.environ.get("BENCH_TRACEBACK"):
                traceback.print_exc()
            return not_run(name, variant, "failed", msg)
        finally:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _measure(self, name: str, variant: Variant) -> dict:
        bc = self.table[name]
        key = (name, variant.rows_for(bc), variant.static_shapes)
        if key not in self._cache:
            self._cache[key], self.pools[key] = build_pool(self.args, bc, our_config(bc, "sdpa"), key[1], key[2],
                                                           self.device)
        res = run_variant(self.args, bc, variant, self._cache[key], self.device, self.deadline)
        res["packing_efficiency"] = self.pools[key]["packing_efficiency"]
        return res
