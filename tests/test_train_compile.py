"""torch.compile, attention backends and precision on CPU, end to end as `python train.py` runs them."""

import shutil
import subprocess

import pytest

from .train_helpers import ROOT, env, metrics, run_train, train_cmd

# Six steps of 32 x 128 tokens, no dropout: the compiled and the eager run see the same batches and the same math.
SHORT = ["max_tokens=24576", "data.batch_size_warmup_start=null", "data.batch_size_warmup_tokens=0",
         "scheduler.warmup_tokens=4096", "save.interval=24576tok", "eval=null", "model.attention_output_dropout=0"]


def _work(smoke_workdir, path):
    shutil.copytree(smoke_workdir, path, ignore=shutil.ignore_patterns("corpus"))
    return path


def _dynamo_records(stderr: str) -> list[str]:
    """Graph-break records (TORCH_LOGS=graph_breaks) and warnings that Dynamo printed."""
    return [line for line in stderr.splitlines()
            if "[__graph_breaks]" in line or ("_dynamo" in line and "Warning" in line)]


@pytest.mark.slow
def test_compiled_cpu_run_matches_eager_without_graph_breaks_in_our_code(smoke_workdir, tmp_path):
    losses, records = {}, {}
    for mode in ("on", "off"):  # unquoted, as a user types it
        work = _work(smoke_workdir, tmp_path / mode)
        out = run_train("smoke/phase1.yaml", work, *SHORT, f"compile={mode}", f"logging.metrics_file={work}/m.jsonl",
                        extra_env={"TORCH_LOGS": "dynamo,graph_breaks"})
        losses[mode] = [step["loss"] for step in metrics(work / "m.jsonl")]
        records[mode] = _dynamo_records(out.stderr)
        traced = [line for line in out.stderr.splitlines() if "torchdynamo start tracing forward" in line]
        assert bool(traced) == (mode == "on"), traced  # the encoder was compiled, and only when asked
    assert len(losses["on"]) == len(losses["off"]) == 6
    # fp32 on both sides: fusion and reordered reductions move logits by ~1e-6 (tiny model, measured 7e-7), which
    # six optimizer steps keep far below 1e-4 on a loss near 9; a wrong mask or backend moves it by > 1e-2.
    assert losses["on"] == pytest.approx(losses["off"], abs=1e-4)
    ours = [line for line in records["on"] if "modernbert_pretrain" in line]
    assert not ours, "\n".join(ours)


def _refusal(work, *overrides):
    out = subprocess.run(train_cmd("smoke/phase1.yaml", work, *SHORT, *overrides), capture_output=True, text=True,
                         env=env(), cwd=ROOT, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("config error:")]
    assert len(errors) == 1, out.stderr[-3000:]
    assert not list(work.glob("checkpoints/**/*.pt"))
    return errors[0]


def test_backend_and_precision_that_cannot_run_on_cpu_are_one_line_refusals(smoke_workdir, tmp_path):
    work = _work(smoke_workdir, tmp_path / "w")
    # Composer applies bf16 autocast on GPU only
    assert "precision: amp_bf16 needs a GPU" in _refusal(work, "precision=amp_bf16")
    # an explicit backend this machine lacks is refused when the trainer resolves it, not at the first forward
    line = _refusal(work, "model.attn_backend=flash_attn")
    assert "model.attn_backend" in line and "'flash_attn'" in line and "flash-attn" in line
    # inductor compiles FlexAttention for training on CUDA only; eager flex (compile off) trains on CPU
    line = _refusal(work, "model.attn_backend=flex", "compile=on")
    assert "compile: on with attention backend 'flex' on cpu" in line and "compile: off" in line
