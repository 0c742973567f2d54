"""Broken data at training time: each failure names the shard or file and what to do."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from modernbert_pretrain.data import (
    DataConfigError,
    ShardError,
    StreamConfig,
    TokenizerLoadError,
    build_train_loader,
)
from tests.data_fixtures import fresh_dir, make_cfg, own_shm, small_data, take, write_mds


@pytest.fixture(autouse=True)
def _shm():
    with own_shm():
        yield


def copy_of_small_mds() -> str:
    out = os.path.join(fresh_dir("copy"), "mds")
    shutil.copytree(small_data().mds, out)
    return out


def first_shard(mds: str) -> str:
    with open(os.path.join(mds, "index.json")) as f:
        return os.path.join(mds, json.load(f)["shards"][0]["raw_data"]["basename"])


def test_truncated_shard_is_named():
    mds = copy_of_small_mds()
    shard = first_shard(mds)
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    loader = build_train_loader(make_cfg(mds, shuffle=False), rank=0, world_size=1)
    with pytest.raises(ShardError, match=rf"shard {shard}: .*truncated.*validate_dataset.py"):
        take(loader, 1)


def test_a_missing_shard_is_named_and_the_local_copy_called_incomplete():
    mds = copy_of_small_mds()
    shard = first_shard(mds)
    os.remove(shard)
    loader = build_train_loader(make_cfg(mds, shuffle=False), rank=0, world_size=1)
    with pytest.raises(ShardError, match=rf"shard {shard} is missing: the local copy of stream .* is incomplete "
                                         rf"\({mds}/index.json lists the file\)") as err:
        take(loader, 1)
    assert "remote" not in str(err.value) and f"validate_dataset.py {mds}" in str(err.value)


def test_corrupt_shard_is_named_when_hashes_are_checked():
    mds = copy_of_small_mds()
    shard = first_shard(mds)
    with open(shard, "r+b") as f:
        f.seek(-8, os.SEEK_END)
        f.write(b"\x00" * 8)
    loader = build_train_loader(make_cfg(mds, shuffle=False, validate_hash="xxh64"), rank=0, world_size=1)
    with pytest.raises(ShardError, match=rf"shard {shard}: xxh64 hash mismatch"):
        take(loader, 1)


def test_corrupt_remote_shard_fails_its_download_check():
    remote = copy_of_small_mds()
    shard = first_shard(remote)
    with open(shard, "r+b") as f:
        f.seek(-8, os.SEEK_END)
        f.write(b"\x01" * 8)
    cfg = make_cfg(local=None, streams=[StreamConfig(local=fresh_dir("cache"), remote=remote)], shuffle=False,
                   validate_hash="sha1")
    loader = build_train_loader(cfg, rank=0, world_size=1)
    with pytest.raises(ShardError, match=r"shard .*shard\.00000\.mds.*Checksum failure"):
        take(loader, 3)


def test_remote_stream_downloads_and_trains():
    cfg = make_cfg(local=None, streams=[StreamConfig(local=fresh_dir("cache"), remote=small_data().mds)],
                   validate_hash="xxh64", predownload=16)
    local = cfg.streams[0].local
    batches = take(build_train_loader(cfg, rank=0, world_size=1), 3)
    assert all(b["num_real_tokens"] > 0 for b in batches)
    assert any(name.startswith("shard.") for name in os.listdir(local))


def test_missing_index_is_named():
    empty = fresh_dir("empty")
    with pytest.raises(ShardError, match=rf"no MDS index at {empty}/index.json.*tokenize_to_mds.py"):
        build_train_loader(make_cfg(empty), rank=0, world_size=1)
    with pytest.raises(ShardError, match=r"index.json"):
        build_train_loader(make_cfg(small_data().root, split="nope"), rank=0, world_size=1)


def test_shards_of_another_tokenizer_are_named():
    wide = write_mds(fresh_dir("wide"), [np.array([0, 9000, 1])] * 50)  # id 9000 >= the 512-token vocabulary
    with pytest.raises(ShardError, match=r"shard .*shard\.00000\.mds: sample \d+ has token id 9000 outside the vocabulary"):
        take(build_train_loader(make_cfg(wide), rank=0, world_size=1), 1)


def test_shards_without_input_ids_are_named():
    from streaming import MDSWriter

    out = fresh_dir("columns")
    with MDSWriter(out=out, columns={"tokens": "ndarray:uint16"}) as writer:
        writer.write({"tokens": np.arange(5, dtype=np.uint16)})
    with pytest.raises(ShardError, match=r"columns \['tokens'\], expected 'input_ids'"):
        build_train_loader(make_cfg(out), rank=0, world_size=1)


def test_unloadable_tokenizer_and_relative_paths():
    with pytest.raises(TokenizerLoadError, match="cannot load tokenizer .*missing-tok"):
        build_train_loader(make_cfg(tokenizer=os.path.join(fresh_dir("t"), "missing-tok")), rank=0, world_size=1)
    with pytest.raises(DataConfigError, match="data.local: relative path 'mds' needs the config file's directory"):
        build_train_loader(make_cfg("mds"), rank=0, world_size=1)


def test_broken_tokenizer_folder_is_one_line_naming_it(tmp_path):
    from modernbert_pretrain.train.main import main

    broken = os.path.join(fresh_dir("broken"), "tokenizer")
    shutil.copytree(small_data().tokenizer, broken)
    with open(os.path.join(broken, "tokenizer.json"), "r+") as f:
        f.truncate(100)
    with pytest.raises(TokenizerLoadError) as err:
        build_train_loader(make_cfg(tokenizer=broken), rank=0, world_size=1)
    assert "\n" not in str(err.value) and broken in str(err.value) and "data_prep/train_tokenizer.py" in str(err.value)
    yaml = tmp_path / "t.yaml"
    yaml.write_text(f"run_name: t\nmax_tokens: 1024\nmodel: {{preset: tiny}}\ndata:\n  tokenizer: {broken}\n  local: "
                    f"{small_data().mds}\n  seq_len: 128\n  device_microbatch_size: 4\n  global_batch_size: 8\n")
    code, lines = _cli(main, [str(yaml), "--dry-run"])
    assert code == 2 and len(lines) == 1 and broken in lines[0], lines


def _cli(main, argv) -> tuple[int, list[str]]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, [line for line in err.getvalue().splitlines() if line.strip()]


def test_missing_stream_index_names_the_stream():
    a = small_data().mds
    cfg = make_cfg(local=None, streams=[StreamConfig(local=a, choose=10, name="a"),
                                        StreamConfig(local=fresh_dir("b"), repeat=2.0, name="b")])
    with pytest.raises(ShardError, match="stream b: no MDS index"):
        build_train_loader(cfg, rank=0, world_size=1)
