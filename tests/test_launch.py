"""launch/: two nodes on this machine, the recipe runner, SLURM on a pretend cluster, and bad input.

Two "nodes" on one machine need what two machines have apart: streaming keeps its shared memory in /dev/shm
under names every node picks alike, and Composer's autoresume signal file goes into the save folder. Each
pretend node therefore runs in a mount namespace of its own (unshare) with a private /dev/shm and TMPDIR, and
nodes > 0 also get a private (empty) checkpoint folder, like a local disk. See test_shared_save_folder for
what happens when the save folder is shared.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

from .train_helpers import ROOT, composer_launcher, env, free_port, metrics, run_train

LAUNCH = ROOT / "launch"
MULTINODE = LAUNCH / "multinode.sh"
RECIPE = LAUNCH / "recipe.sh"
SBATCH = LAUNCH / "slurm.sbatch"
# One step is 4096 tokens in every smoke phase; no warmups, no eval, one save at the end.
SHRINK = ["data.batch_size_warmup_start=null", "scheduler.warmup_tokens=0", "eval=null", "save.interval=1000ba"]

PRETEND_NODE = r"""#!/usr/bin/env bash
# pretend_node.sh <node> <command...>: the command as if on a machine of its own: private /dev/shm and TMPDIR,
# and for node > 0 an empty private $NODE_LOCAL_DIR (a local disk where node 0 has the checkpoints).
set -euo pipefail
export NODE="$1"; shift
export TMPDIR="$WORK/tmp-node$NODE"
mkdir -p "$TMPDIR"
exec unshare --mount --propagation private bash -c '
  mount -t tmpfs tmpfs /dev/shm
  if [[ "$NODE" != 0 && -n "${NODE_LOCAL_DIR:-}" ]]; then mount -t tmpfs tmpfs "$NODE_LOCAL_DIR"; fi
  exec "$@"' _ "$@"
"""

# srun for a pretend cluster: every task on this machine, each a pretend node in a process group of its own
# (the whole group is what SLURM signals); exit status: the last failing task's.
FAKE_SRUN = r"""#!/usr/bin/env bash
ntasks=1
while [[ $# -gt 0 && "$1" == -* ]]; do
  case "$1" in --ntasks=*) ntasks="${1#*=}" ;; esac
  shift
done
pids=()
for ((i = 0; i < ntasks; i++)); do
  SLURM_NODEID=$i SLURM_PROCID=$i setsid bash "$WORK/pretend_node.sh" "$i" "$@" >"$WORK/node$i.log" 2>&1 &
  echo $! >"$WORK/step-node$i.pid"
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
"""
FAKE_SCONTROL = '#!/usr/bin/env bash\nprintf "127.0.0.1\\nlocalhost\\n"\n'
FAKE_SCANCEL = '#!/usr/bin/env bash\necho "$@" >>"$WORK/scancel.log"\n'


def _can_pretend_nodes() -> bool:
    try:
        out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                              "mount -t tmpfs tmpfs /dev/shm"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0


needs_nodes = pytest.mark.skipif(not _can_pretend_nodes(), reason="pretend nodes need unshare and mount (root)")


def _fresh(smoke_workdir, path: Path) -> Path:
    shutil.copytree(smoke_workdir, path, ignore=shutil.ignore_patterns("corpus", "checkpoints"))
    (path / "checkpoints").mkdir()
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def _node_env(work: Path) -> dict[str, str]:
    _write(work / "pretend_node.sh", PRETEND_NODE)
    out = env()
    out.update(WORK=str(work), NODE_LOCAL_DIR=str(work / "checkpoints"))
    return out


def _run(cmd, timeout=60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw)


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of a pretend node (launcher and ranks share its process group)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _final_weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "latest-rank0.pt", map_location="cpu", weights_only=False)["state"]["model"]


# ---- scripts ------------------------------------------------------------------------------------------------

SCRIPTS = sorted(p for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch"))


def test_the_launch_scripts_exist():
    assert {p.name for p in SCRIPTS} >= {"multinode.sh", "recipe.sh", "slurm.sbatch", "quickstart.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_and_prints_usage(script):
    assert _run(["bash", "-n", script]).returncode == 0
    out = _run(["bash", script, "--help"], env=env())
    assert out.returncode == 0, out.stderr
    assert script.name in out.stdout, out.stdout  # every usage text shows how the script is called


# ---- bad input: a clear message and a non-zero exit, never a hang ------------------------------------------

@pytest.mark.parametrize("missing", ["SLURM_JOB_ID", "SLURM_NNODES", "SLURM_JOB_NODELIST"])
def test_slurm_script_outside_slurm(missing):
    slurm = {"SLURM_JOB_ID": "7", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu[01-02]"}
    del slurm[missing]
    minimal = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **slurm}
    out = _run(["bash", SBATCH, "yamls/smoke/phase1.yaml"], env=minimal)
    assert out.returncode == 2
    assert f"{missing} is not set" in out.stderr and "sbatch launch/slurm.sbatch" in out.stderr, out.stderr


def test_master_port_in_use():
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.time()
        out = _run(["bash", MULTINODE, "--nnodes", "2", "--node-rank", "0", "--nproc", "1", "--master-port", port,
                    "yamls/smoke/phase1.yaml"], env=env())
    assert out.returncode == 2
    assert f"master port {port} is already in use" in out.stderr, out.stderr
    assert time.time() - start < 30


def test_unreachable_master_times_out():
    port = free_port()  # nobody listens there
    start = time.time()
    out = _run(["bash", MULTINODE, "--nnodes", "2", "--node-rank", "1", "--nproc", "1", "--master-addr",
                "127.0.0.1", "--master-port", port, "--connect-timeout", "3", "yamls/smoke/phase1.yaml"], env=env())
    took = time.time() - start
    assert out.returncode == 2
    assert f"cannot reach the master at 127.0.0.1:{port} within 3s" in out.stderr, out.stderr
    assert 3 <= took < 30, took


@pytest.mark.parametrize(("args", "message"), [
    (["--nnodes", "2"], "this node's rank is unknown"),
    (["--nnodes", "2", "--node-rank", "2"], "must be an integer in [0, 2)"),
    (["--master-port", "70000"], "must be a TCP port"),
    (["--nnodes", "two"], "must be a positive integer"),
    (["--frobnicate"], "unknown option --frobnicate"),
])
def test_multinode_rejects_bad_arguments(args, message):
    out = _run(["bash", MULTINODE, "--nproc", "1", *args, "yamls/smoke/phase1.yaml"], env=env())
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_recipe_rejects_a_bad_phase_before_training(tmp_path):
    out = _run(["bash", RECIPE, "yamls/smoke/phase1.yaml", "yamls/smoke/phase2.yaml", "--",
                f"workdir={tmp_path}", "optimizer.lrr=1"], env=env())
    assert out.returncode == 2
    assert "phase 1/2" in out.stderr and "lrr" in out.stderr, out.stderr
    assert not (tmp_path / "checkpoints").exists()


# ---- two nodes ----------------------------------------------------------------------------------------------

def _two_node_run(work: Path, *overrides: str, shared: bool = False, timeout: int = 300):
    """Node 0 and node 1 through launch/multinode.sh; returns [(exit status, output)] per node."""
    port = free_port()
    node_env = _node_env(work)
    if shared:
        del node_env["NODE_LOCAL_DIR"]
    procs = []
    for node in (0, 1):
        cmd = ["bash", work / "pretend_node.sh", node, "bash", MULTINODE, "--nnodes", "2", "--node-rank", node,
               "--nproc", "1", "--master-addr", "127.0.0.1", "--master-port", port, "--connect-timeout", "120",
               "yamls/smoke/phase1.yaml", f"workdir={work}", *overrides]
        with open(work / f"node{node}.out", "w") as log:
            procs.append(subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                          env=node_env, start_new_session=True))
    try:
        deadline = time.time() + timeout
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        for proc in procs:
            _kill_group(proc.pid)
            proc.wait()
    return [(proc.returncode, (work / f"node{n}.out").read_text()) for n, proc in enumerate(procs)]


@needs_nodes
def test_two_nodes_match_one_launcher(smoke_workdir, tmp_path):
    # num_canonical_nodes fixes streaming's sample order and its partition over ranks: with it, global rank r
    # reads the same documents whether the 2 ranks sit on 1 node or on 2. (Left at its default, the number of
    # nodes, the order differs and the losses drift apart by ~0.1 within 10 steps.)
    same = ["max_tokens=40960", *SHRINK, "data.num_canonical_nodes=2"]
    one = _fresh(smoke_workdir, tmp_path / "one")
    run_train("smoke/phase1.yaml", one, *same, f"logging.metrics_file={one / 'm.jsonl'}",
              launcher=composer_launcher())

    two = _fresh(smoke_workdir, tmp_path / "two")
    results = _two_node_run(two, *same, f"logging.metrics_file={two / 'm.jsonl'}")
    for node, (rc, log) in enumerate(results):
        assert rc == 0, f"node {node}:\n{log[-6000:]}"
    assert "node 1 waiting up to 120s for the master" in results[1][1]
    assert (two / "checkpoints/smoke-phase1/training_complete.json").is_file()

    a, b = metrics(one / "m.jsonl"), metrics(two / "m.jsonl")
    assert len(a) == len(b) == 10
    for key in ("batch", "tokens", "lr", "global_batch_size"):
        assert [m[key] for m in a] == [m[key] for m in b], key
    # Same ranks, documents, masks and dropout seeds; gloo sums the two ranks' gradients alike. The curves are
    # identical here (measured: bit for bit); 1e-6 relative leaves room only for a different summation order.
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) <= 1e-6 * abs(x["loss"]), (x, y)
    wa, wb = _final_weights(one / "checkpoints/smoke-phase1"), _final_weights(two / "checkpoints/smoke-phase1")
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-7) for k in wa)


@needs_nodes
def test_shared_save_folder(smoke_workdir, tmp_path):
    # Real clusters keep checkpoints on a shared filesystem (every node reads them when resuming).
    work = _fresh(smoke_workdir, tmp_path / "shared")
    results = _two_node_run(work, "max_tokens=8192", *SHRINK, "data.num_canonical_nodes=2", shared=True,
                            timeout=120)
    assert [rc for rc, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    assert (work / "checkpoints/smoke-phase1/training_complete.json").is_file()


# ---- recipe runner ------------------------------------------------------------------------------------------

def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_recipe_runs_the_phases_and_skips_finished_ones(smoke_workdir, tmp_path):
    work = _fresh(smoke_workdir, tmp_path / "recipe")
    phases = [f"yamls/smoke/phase{i}.yaml" for i in (1, 2, 3)]
    # every phase 2 steps, but phase 1 only one (a per-phase override)
    cmd = ["bash", RECIPE, *phases, "--", f"workdir={work}", "max_tokens=8192", *SHRINK, "1:max_tokens=4096"]
    first = _run(cmd, timeout=600, env=env())
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-5000:]
    final = {1: "ba1-tok4096-rank0.pt", 2: "ba2-tok8192-rank0.pt", 3: "ba2-tok8192-rank0.pt"}
    for i in (1, 2, 3):
        folder = work / f"checkpoints/smoke-phase{i}"
        assert f"recipe.sh:   {i}. {ROOT / phases[i - 1]} -> {folder} [to run]" in first.stdout
        assert f"phase {i}/3 finished" in first.stdout
        assert (folder / "training_complete.json").is_file()
        assert (folder / final[i]).is_file()
    assert "recipe.sh:   phase 1 only: max_tokens=4096" in first.stdout
    assert "all 3 phase(s) finished" in first.stdout
    # phase 2 and 3 start from the previous phase's final checkpoint (their YAMLs' load_from)
    for i in (1, 2):
        assert f"{work}/checkpoints/smoke-phase{i}/{final[i]}" in first.stdout + first.stderr

    before = _tree(work / "checkpoints")
    second = _run(cmd, timeout=120, env=env())
    assert second.returncode == 0, second.stderr
    for i in (1, 2, 3):
        assert f"{i}. {ROOT / phases[i - 1]} -> {work}/checkpoints/smoke-phase{i} [finished]" in second.stdout
        assert (f"phase {i}/3 ({ROOT / phases[i - 1]}) already finished "
                f"({work}/checkpoints/smoke-phase{i}/training_complete.json): skipping") in second.stdout
    assert "phase 1/3:" not in second.stdout and "train.py" not in second.stdout
    assert _tree(work / "checkpoints") == before  # nothing trained, nothing saved


# ---- SLURM on a pretend cluster -----------------------------------------------------------------------------

@needs_nodes
def test_slurm_job_on_two_pretend_nodes_checkpoints_on_sigterm(smoke_workdir, tmp_path):
    """slurm.sbatch -> recipe.sh -> (fake) srun -> multinode.sh on 2 nodes -> composer -> train.py. SIGTERM
    to every process of the step, as SLURM sends it with --signal=TERM@120, saves a checkpoint on the way out."""
    work = _fresh(smoke_workdir, tmp_path / "slurm")
    bin_dir = work / "bin"
    bin_dir.mkdir()
    _write(bin_dir / "srun", FAKE_SRUN)
    _write(bin_dir / "scontrol", FAKE_SCONTROL)
    _write(bin_dir / "scancel", FAKE_SCANCEL)
    job_env = _node_env(work)
    job_env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_ID="4242", SLURM_NNODES="2",
                   SLURM_JOB_NODELIST="node[01-02]", SLURM_SUBMIT_DIR=str(ROOT), NPROC_PER_NODE="1",
                   MASTER_PORT=str(free_port()), CONNECT_TIMEOUT="120", NODE_RANK="5")  # NODE_RANK: ignored
    m = work / "m.jsonl"
    job = subprocess.Popen(["bash", str(SBATCH), "yamls/smoke/phase1.yaml", "--", f"workdir={work}",
                            "max_tokens=409600", *SHRINK, "data.num_canonical_nodes=2", f"logging.metrics_file={m}"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=job_env)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and job.poll() is None and not (m.exists() and m.read_text().strip()):
            time.sleep(0.1)
        assert job.poll() is None, job.communicate()[0][-5000:]
        assert m.exists(), "training did not start in time"
        for node in (0, 1):
            os.killpg(int((work / f"step-node{node}.pid").read_text()), signal.SIGTERM)
        out, _ = job.communicate(timeout=240)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        for node in (0, 1):
            pid_file = work / f"step-node{node}.pid"
            if pid_file.exists():
                _kill_group(int(pid_file.read_text()))
    logs = [(work / f"node{n}.log").read_text() for n in (0, 1)]
    assert job.returncode == 75, out[-3000:] + logs[0][-3000:] + logs[1][-3000:]
    assert "job 4242 on 2 node(s) (node[01-02]) x 1 processes, master 127.0.0.1" in out
    assert "stopped before its end" in out and "run the same command again to resume" in out
    for n in (0, 1):
        assert f"multinode.sh: node {n} of 2, 1 processes, world size 2" in logs[n]
        assert f"multinode.sh: SIGTERM: asking the training processes on node {n}" in logs[n]
    folder = work / "checkpoints/smoke-phase1"
    assert not (folder / "training_complete.json").exists()
    steps = [r["batch"] for r in metrics(m)]
    assert 1 <= steps[-1] < 100
    assert (folder / f"ba{steps[-1]}-tok{4096 * steps[-1]}-rank0.pt").is_file()  # saved at the step it stopped
