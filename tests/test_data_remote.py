"""Object storage: tokenize_to_mds to s3:// (parts, resume, single run), merge_mds on s3://, training from
data.remote, against a real S3-compatible server (moto's) on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from modernbert_pretrain.data.prep.parts import DONE_NAME
from modernbert_pretrain.data.prep.remote import STAGED_SHARDS
from modernbert_pretrain.data.prep.to_mds import tokenize_to_mds
from tests.data_fixtures import PREP_MAX_SEQ_LEN, fresh_dir, own_shm, small_data
from tests.test_data_scripts import REPO, load_script

pytest.importorskip("moto.server")

SCRIPT = os.path.join(REPO, "data_prep", "tokenize_to_mds.py")


@pytest.fixture(autouse=True)
def _shm():
    with own_shm():
        yield


@pytest.fixture(scope="module")
def endpoint():
    """A moto S3 server on a free port of 127.0.0.1, and the environment streaming and boto3 read."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "MOSAICML_STREAMING_AWS_REQUESTER_PAYS"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("S3_ENDPOINT_URL", url)
        yield url
    server.stop()


def _client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


def _bucket(endpoint: str) -> str:
    name = f"mds-{uuid.uuid4().hex[:12]}"
    _client(endpoint).create_bucket(Bucket=name)
    return name


def _keys(endpoint: str, bucket: str, prefix: str) -> list[str]:
    pages = _client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _args(out: str, part: int | None = None, parts: int | None = None, staging: str | None = None) -> list[str]:
    args = ["--input", small_data().corpus, "--output", out, "--tokenizer", small_data().tokenizer, "--workers", "1",
            "--max-seq-len", str(PREP_MAX_SEQ_LEN), "--shard-size", "16kb", "--chunk-mb", "0.2", "--quiet"]
    args += ["--staging", staging] if staging else []
    return args + (["--parts", str(parts), "--part", str(part)] if parts else [])


def _local_samples(root: str) -> Counter:
    from streaming import LocalDataset

    dataset = LocalDataset(root)
    return Counter(dataset[i]["input_ids"].tobytes() for i in range(len(dataset)))


def _remote_samples(remote: str) -> Counter:
    from streaming import StreamingDataset

    dataset = StreamingDataset(remote=remote, local=fresh_dir("cache"), shuffle=False, batch_size=1)
    return Counter(dataset[i]["input_ids"].tobytes() for i in range(dataset.num_samples))


@pytest.fixture(scope="module")
def reference() -> Counter:
    """The samples of a local --parts 1 run."""
    out = fresh_dir("local-one")
    tokenize_to_mds([small_data().corpus], out, small_data().tokenizer, max_seq_len=PREP_MAX_SEQ_LEN,
                    shard_size="16kb", chunk_bytes=int(0.2 * 2**20), parts=1, part=0, progress=False)
    assert load_script("merge_mds.py").main([out]) == 0
    return _local_samples(out)


class _StagingWatch:
    """Counts, in a thread, the most shard files present at once anywhere under a staging folder."""

    def __init__(self, folder: str) -> None:
        self.folder, self.most, self._stop = folder, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            found = sum(n.startswith("shard.") for _, _, names in os.walk(self.folder) for n in names)
            self.most = max(self.most, found)
            time.sleep(0.01)

    def __enter__(self) -> _StagingWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _kill_after_first_chunk(proc: subprocess.Popen, endpoint: str, bucket: str, part_prefix: str) -> None:
    """SIGKILL ``proc`` once the remote holds its first chunk's done.json."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the part finished before it could be killed: " + proc.communicate()[1][-2000:]
        if f"{part_prefix}/chunk-00000/{DONE_NAME}" in _keys(endpoint, bucket, part_prefix):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the part never finished a chunk")


def test_parts_to_s3_resume_merge_and_train(endpoint, reference, capsys, tmp_path):
    bucket = _bucket(endpoint)
    root = f"s3://{bucket}/corpus/mds"
    to_mds, merge = load_script("tokenize_to_mds.py"), load_script("merge_mds.py")
    staging = str(tmp_path / "staging")

    with _StagingWatch(staging) as watch:
        assert to_mds.main(_args(root, 0, 2, staging)) == 0
    assert watch.most <= STAGED_SHARDS  # shards leave staging as they upload
    assert os.listdir(staging) == []
    assert "corpus/mds/part-00000-of-00002/complete.json" in _keys(endpoint, bucket, "corpus/mds/part-00000")

    capsys.readouterr()
    assert merge.main([root]) == 2
    err = capsys.readouterr().err.strip()
    assert "part 1 of 2 is missing" in err and len(err.splitlines()) == 1

    # part 1 killed after its first chunk reached the remote, then resumed from the remote's records
    killed_args = _args(root, 1, 2, str(tmp_path / "killed-staging"))
    proc = subprocess.Popen([sys.executable, SCRIPT, *killed_args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            env=dict(os.environ, MODERNBERT_PREP_TEST_SAMPLE_DELAY="0.003",
                                     PYTHONPATH=os.path.join(REPO, "src")))
    _kill_after_first_chunk(proc, endpoint, bucket, "corpus/mds/part-00001-of-00002")
    assert merge.main([root]) == 2
    assert "part 1 of 2 is unfinished" in capsys.readouterr().err
    assert to_mds.main(_args(root, 1, 2)) == 0
    out = capsys.readouterr().out
    assert "kept from an earlier run" in out and ", 0 kept" not in out
    assert to_mds.main(_args(root, 1, 2)) == 0
    assert "already complete" in capsys.readouterr().out

    assert merge.main([root]) == 0
    assert "merged 2 part(s)" in capsys.readouterr().out
    assert _remote_samples(root) == reference

    _train_two_steps(root, tmp_path)


def _train_two_steps(remote: str, tmp_path: Path) -> None:
    from tests.train_helpers import metrics, run_train

    m = tmp_path / "metrics.jsonl"
    run_train("smoke/phase1.yaml", tmp_path / "work", f"data.tokenizer={small_data().tokenizer}",
              f"data.local={tmp_path / 'cache'}", f"data.remote={remote}", "data.split=null",
              "max_tokens=8192", "data.batch_size_warmup_start=null", "scheduler.warmup_tokens=0", "eval=null",
              "save.interval=1000000tok", f"logging.metrics_file={m}", "logging.console_interval=1ba", timeout=300)
    steps = [r for r in metrics(m) if "loss" in r]
    assert len(steps) == 2 and all(r["loss"] > 0 for r in steps)
    assert any(n.startswith("part-") for n in os.listdir(tmp_path / "cache"))  # shards came from the remote


def test_single_run_to_s3_and_its_refusals(endpoint, reference, capsys, tmp_path, monkeypatch):
    from streaming.base.storage.upload import S3Uploader

    upload = S3Uploader.upload_file

    def slow_upload(self, filename: str) -> None:
        time.sleep(0.05)  # slower than the shards are written: staging fills up to its bound
        upload(self, filename)

    monkeypatch.setattr(S3Uploader, "upload_file", slow_upload)
    bucket = _bucket(endpoint)
    root = f"s3://{bucket}/single"
    to_mds = load_script("tokenize_to_mds.py")
    staging = str(tmp_path / "staging")
    with _StagingWatch(staging) as watch:
        assert to_mds.main(_args(root, staging=staging)) == 0
    assert 2 <= watch.most <= STAGED_SHARDS and os.listdir(staging) == []
    monkeypatch.undo()
    assert _remote_samples(root) == reference

    written = _keys(endpoint, bucket, "single/")
    capsys.readouterr()
    assert to_mds.main(_args(root)) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds shards" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert _keys(endpoint, bucket, "single/") == written  # refused without touching the dataset

    for output, expected in ((f"nosuch://{bucket}/x", "unknown storage scheme"),
                             (f"s3://missing-{bucket}/x", f"cannot write to s3://missing-{bucket}/x")):
        assert to_mds.main(_args(output)) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
    assert load_script("merge_mds.py").main([f"s3://{bucket}/nothing"]) == 2
    assert "holds no part folders" in capsys.readouterr().err
