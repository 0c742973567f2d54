"""Tests release only the shared memory of their own datasets, never another streaming job's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

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
