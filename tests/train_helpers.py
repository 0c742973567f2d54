"""Running train.py in a subprocess, as a user would, and reading its per-step metrics."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port that was free on the loopback address a moment ago (tests run in parallel: no fixed ports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def composer_launcher(nproc: int = 2) -> list[str]:
    """`composer -n N` on a free rendezvous port."""
    return ["composer", "-n", str(nproc), "--master_port", str(free_port())]


def train_cmd(yaml: str, workdir: Path, *overrides: str, launcher: list[str] | None = None) -> list[str]:
    head = launcher or [sys.executable]
    return [*head, str(ROOT / "train.py"), str(ROOT / "yamls" / yaml), f"workdir={workdir}", *overrides]


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out.update(WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT / "src"), **extra)
    return out


def run_train(yaml: str, workdir: Path, *overrides: str, launcher: list[str] | None = None, timeout: int = 600,
              extra_env: dict[str, str] | None = None):
    out = subprocess.run(train_cmd(yaml, workdir, *overrides, launcher=launcher), capture_output=True, text=True,
                         timeout=timeout, env=env(**(extra_env or {})), cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
