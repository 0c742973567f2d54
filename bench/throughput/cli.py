"""Arguments, the plan of variants, and main(): what `python bench/train_throughput.py` runs."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from modernbert_pretrain.model.attention import backend_choices

from . import __doc__ as _PACKAGE_DOC
from .configs import CONFIGS, TINY_CONFIGS, Variant, sweep_variants
from .report import add_ratios, environment, print_tables, summarize
from .runner import PlanRunner

_DOC_ARGS = (("median", "lognormal body median"), ("sigma", "lognormal body sigma"),
             ("tail_frac", "share of documents from the Pareto tail"),
             ("tail_min", "Pareto tail scale (tokens)"), ("tail_alpha", "Pareto tail exponent"))


def _add_levers(p: argparse.ArgumentParser) -> None:
    lev = p.add_argument_group("levers for our model (one measurement unless --sweep)")
    lev.add_argument("--attn", default="auto", choices=backend_choices(),
                     help="attention backend (the model's registry, model/attention.py)")
    lev.add_argument("--compile", action="store_true", help="torch.compile the whole model")
    lev.add_argument("--compile-scope", choices=("model", "encoder", "layers"), default="model",
                     help="encoder: ModernBertModel only (the sparse head stays eager); layers: each encoder "
                          "layer on its own (shorter compile)")
    lev.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    lev.add_argument("--compile-dynamic", choices=("auto", "true", "false"), default="auto",
                     help="torch.compile(dynamic=...): auto = None (recompile once, then dynamic)")
    lev.add_argument("--cuda-graphs", action="store_true", help="compile with mode=reduce-overhead (CUDA only)")
    lev.add_argument("--bf16-weights", action="store_true", help="bf16 parameters (StableAdamW adds Kahan sums)")
    lev.add_argument("--rows", type=int, default=None, help="our microbatch in rows of seq_len (default: config)")
    lev.add_argument("--no-static-shapes", action="store_true",
                     help="pass only real tokens and the true max_seqlen (shapes change every batch)")
    lev.add_argument("--optimizer", choices=("auto", "stableadamw", "adamw"), default="auto",
                     help="ours: auto = StableAdamW if torch-optimi imports, else fused AdamW")
    ref = p.add_argument_group("transformers baseline")
    ref.add_argument("--no-hf", action="store_true", help="skip transformers")
    ref.add_argument("--hf-rows", type=int, default=None, help="transformers microbatch (default: config)")
    ref.add_argument("--hf-compile", action="store_true", help="also torch.compile the transformers model")


def _add_measurement(p: argparse.ArgumentParser) -> None:
    run = p.add_argument_group("measurement")
    run.add_argument("--steps", type=int, default=None, help="timed steps (GPU 10, tiny 2)")
    run.add_argument("--warmup", type=int, default=None, help="warmup steps (GPU 3, tiny 1); compiled: >= batches+2")
    run.add_argument("--batches", type=int, default=None, help="distinct batches cycled (GPU 6, tiny 2)")
    run.add_argument("--threads", type=int, default=None, help="CPU threads for torch (CPU default: 1)")
    run.add_argument("--max-seconds", type=float, default=0.0,
                     help="time budget: no new variant starts after it, a running one stops timing (0: none)")
    run.add_argument("--peak-tflops", type=float, default=989.0, help="MFU denominator (H100 SXM dense bf16)")
    run.add_argument("--mask-prob", type=float, default=0.3)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--json-out", type=Path, default=None, help="also write the JSON summary here")
    docs = p.add_argument_group("document lengths (override the config's distribution)")
    for name, help_ in _DOC_ARGS:
        docs.add_argument(f"--doc-{name.replace('_', '-')}", dest=f"doc_{name}", type=float, default=None,
                          help=help_)


def _settle(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Defaults that depend on --tiny and --device, checks, and torch's thread count."""
    args.steps = args.steps or (2 if args.tiny else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    args.batches = args.batches or (2 if args.tiny else 6)
    if args.steps < 1 or args.warmup < 0 or args.batches < 1:
        p.error("--steps and --batches must be >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    elif args.device == "cpu":
        torch.set_num_threads(1)  # small CPU ops contend badly for shared cores; one thread is steadier
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available; use --device cpu --tiny")
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown config(s) {unknown}; choose from {list(CONFIGS)}")
    return args


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=_PACKAGE_DOC.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny presets and few steps (checks the code on CPU)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {list(CONFIGS)}")
    p.add_argument("--sweep", action="store_true", help="run the prepared set of variants (see sweep_variants)")
    _add_levers(p)
    _add_measurement(p)
    return _settle(p, p.parse_args(argv))


def plan(args) -> list[tuple[str, Variant]]:
    if args.sweep:
        todo = sweep_variants(args.configs)
        return [(c, v) for c, v in todo if not (args.no_hf and v.impl == "transformers")]
    ours = Variant("ours", attn=args.attn, compile=args.compile or args.cuda_graphs,
                   compile_scope=args.compile_scope, compile_mode=args.compile_mode, cuda_graphs=args.cuda_graphs,
                   dynamic={"auto": None, "true": True, "false": False}[args.compile_dynamic],
                   bf16_weights=args.bf16_weights, rows=args.rows, static_shapes=not args.no_static_shapes)
    todo = []
    for c in args.configs:
        if not args.no_hf:
            todo.append((c, Variant("transformers", compile=args.hf_compile, rows=args.hf_rows)))
        todo.append((c, ours))
    return todo


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.set_float32_matmul_precision("high")
    start = time.monotonic()
    deadline = start + args.max_seconds if args.max_seconds > 0 else float("inf")
    env = environment(device)
    print(f"train_throughput: {json.dumps(env)}", flush=True)
    if args.tiny:
        print("TINY MODE: tiny presets, a few steps; the figures check the code, they say nothing about GPU speed",
              flush=True)
    runner = PlanRunner(args, TINY_CONFIGS if args.tiny else CONFIGS, device, deadline)
    results = runner.run(plan(args))
    add_ratios(results)
    print_tables(results, runner.pools, device, args)
    summarize(results, runner.pools, env, args, time.monotonic() - start)
    return 0 if any(r["status"] == "ok" for r in results) else 1
