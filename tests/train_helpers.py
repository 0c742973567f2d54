"""Running train.py in a subprocess, as a user would, and reading its per-step metrics."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


_PORT_BLOCK = 500  # ports per pytest-xdist worker, from _PORT_BASE up (25 workers below 32768)
_PORT_BASE = 20000
_port_choice = random.Random()  # not the global generator, which tests may seed


def _ephemeral_floor() -> int:
    """The lowest port the kernel hands out for bind(0) and outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port that was free on the loopback address a moment ago (tests run in parallel: no fixed ports).

    Taken from this pytest-xdist worker's own block below the kernel's ephemeral range. A port from bind(0)
    is ephemeral: between this check and the server's own bind, the kernel may give the same number to any
    other socket, and once a pretend node's rendezvous reached a listener of a test on the other worker
    that way (its store connection got 0 bytes). Outside that range only an explicit bind takes a port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    low = _PORT_BASE + index * _PORT_BLOCK
    if low + _PORT_BLOCK <= _ephemeral_floor():
        for port in _port_choice.sample(range(low, low + _PORT_BLOCK), 50):
            if _can_bind(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # no room below the ephemeral range
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
