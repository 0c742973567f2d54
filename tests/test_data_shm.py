"""Tests release only the shared memory of their own datasets, never another streaming job's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

from modernbert_pretrain.data import RankLayout, ShardSource, tokenizer_info
from tests.data_fixtures import make_cfg, own_shm, small_data

_OTHER_JOB = textwrap.dedent("""\
    import sys
    from streaming import StreamingDataset
    ds = StreamingDataset(local=sys.argv[1], batch_size=1)
    print(ds._shm_prefix_int, flush=True)
    sys.stdin.read()  # hold the blocks until the test closes stdin
    print(int(ds[0]["input_ids"].size > 0), flush=True)
""")


_LOCK_HOLDER = textwrap.dedent("""\
    import sys
    from filelock import FileLock
    with FileLock(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.read()  # until the test closes stdin
""")


def _blocks(prefix: int) -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith(f"{prefix:06}_")}


def test_fixture_cleanup_spares_another_process_streaming_job():
    data = small_data()
    other = subprocess.Popen([sys.executable, "-c", _OTHER_JOB, data.mds], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        other_prefix = int(other.stdout.readline())
        assert f"{other_prefix:06}_locals" in _blocks(other_prefix)
        with own_shm():
            cfg = make_cfg()
            source = ShardSource(cfg, layout=RankLayout(0, 1, 1), vocab_size=tokenizer_info(cfg.tokenizer).vocab_size)
            source.next_doc()
            mine = source.shm_prefix
            assert mine != other_prefix and _blocks(mine)
        assert not _blocks(mine)  # ours are released ...
        assert f"{other_prefix:06}_locals" in _blocks(other_prefix)  # ... the other job's are not
        out, _ = other.communicate("", timeout=60)
        assert other.returncode == 0 and out.strip() == "1"  # and it still reads its data
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


def test_a_dataset_waits_while_another_job_registers_a_prefix(tmp_path, monkeypatch):
    """A node's leader builds its dataset only while it holds the prefix lock (not the machine's real one here:
    other test workers keep theirs); a non-leader rank does not take it."""
    from modernbert_pretrain.data import shm

    lock = tmp_path / "prefix.lock"
    monkeypatch.setattr(shm, "registration_lock_path", lambda: str(lock))
    cfg = make_cfg()
    vocab = tokenizer_info(cfg.tokenizer).vocab_size
    holder = subprocess.Popen([sys.executable, "-c", _LOCK_HOLDER, str(lock)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    built = []
    leader = threading.Thread(target=lambda: built.append(ShardSource(cfg, layout=RankLayout(0, 1, 1),
                                                                      vocab_size=vocab)))
    try:
        assert holder.stdout.readline().strip() == "held"
        with own_shm():
            with shm.registering(local_leader=False):  # a non-leader rank: enters while the lock is held
                pass
            leader.start()
            leader.join(timeout=2.0)
            assert leader.is_alive() and not built  # waiting for the other job
            holder.communicate("", timeout=60)
            leader.join(timeout=120)
            assert not leader.is_alive() and len(built) == 1
            assert _blocks(built[0].shm_prefix)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        leader.join(timeout=120)
