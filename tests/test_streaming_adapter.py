"""The private parts of streaming that data/streaming_adapter.py relies on still behave as it assumes."""

from __future__ import annotations

import inspect
import os

import numpy as np
import pytest
import streaming
from streaming import StreamingDataset
from streaming.base.batching import generate_work
from streaming.base.world import World

from modernbert_pretrain.data import ShardError, build_train_loader
from modernbert_pretrain.data import streaming_adapter as adapter
from modernbert_pretrain.data.shards import SHARD_HASHES, file_hash
from tests.data_fixtures import make_cfg, small_data


@pytest.fixture()
def dataset():
    ds = StreamingDataset(local=small_data().mds, shuffle=False, batch_size=1, num_canonical_nodes=1)
    yield ds
    for shm in adapter.shared_memory_of(ds):  # the blocks this test's dataset created, no others
        shm.cleanup()


def test_the_installed_streaming_is_a_targeted_one():
    assert streaming.__version__ in adapter.STREAMING_VERSIONS
    adapter.check_version()


def test_another_streaming_fails_in_one_place_with_one_message(monkeypatch):
    monkeypatch.setattr(streaming, "__version__", "0.99.0")
    with pytest.raises(adapter.StreamingVersionError, match=r"mosaicml-streaming 0.99.0 is installed.*0\.13\.0"):
        build_train_loader(make_cfg(), rank=0, world_size=1)


def test_another_streaming_stops_a_remote_data_prep_output_before_it_stages(monkeypatch, tmp_path):
    from modernbert_pretrain.data.prep.remote import open_store

    monkeypatch.setattr(streaming, "__version__", "0.99.0")
    with pytest.raises(adapter.StreamingVersionError, match=r"mosaicml-streaming 0.99.0 is installed"):
        open_store("s3://bucket/prefix", staging=str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_private_signatures():
    assert list(inspect.signature(generate_work).parameters) == [
        "batching_method", "dataset", "world", "epoch", "sample_in_epoch"]
    assert list(inspect.signature(World.__init__).parameters)[1:] == [
        "num_nodes", "ranks_per_node", "workers_per_rank", "worker"]
    assert list(inspect.signature(StreamingDataset._set_shuffle_block_size).parameters) == ["self", "world"]


def test_one_rank_walks_every_sample_once_in_order(dataset):
    world = adapter.partition(dataset, num_nodes=1, ranks_per_node=1, rank=0)
    assert (world.node, world.rank_of_node) == (0, 0)
    assert dataset.shuffle_block_size is not None  # set by partition, not by an iterator
    ids = adapter.epoch_sample_ids(dataset, world, 0)
    assert ids.tolist() == list(range(dataset.num_samples))


def test_ranks_split_an_epoch_without_overlap(dataset):
    parts = [adapter.epoch_sample_ids(dataset, adapter.partition(dataset, num_nodes=1, ranks_per_node=2, rank=r), 0)
             for r in (0, 1)]
    assert not set(parts[0].tolist()) & set(parts[1].tolist())
    assert sorted(parts[0].tolist() + parts[1].tolist()) == list(range(dataset.num_samples))


def test_locate_and_shard_files_agree_with_the_index(dataset):
    sizes = [shard.samples for shard in dataset.shards]
    assert len(sizes) > 1
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for sample_id in (0, sizes[0] - 1, sizes[0], dataset.num_samples - 1):
        shard_id, index = adapter.locate(dataset, sample_id)
        assert starts[shard_id] + index == sample_id and 0 <= index < sizes[shard_id]
    path, size, hashes = adapter.shard_raw_files(dataset.shards[0])[0]
    assert os.path.getsize(path) == size
    for algo in SHARD_HASHES:
        assert file_hash(algo, path) == hashes[algo]


def test_the_attribute_walk_finds_the_datasets_shared_memory(dataset):
    from streaming.base.shared.memory import SharedMemory

    found = adapter.shared_memory_of(dataset)
    assert found and all(isinstance(shm, SharedMemory) for shm in found)


def test_a_corrupt_shard_is_still_named(tmp_path):
    import shutil

    copy = tmp_path / "mds"
    shutil.copytree(small_data().mds, copy)
    first = sorted(p for p in os.listdir(copy) if p.endswith(".mds"))[0]
    with open(copy / first, "r+b") as f:
        f.truncate(100)
    loader = build_train_loader(make_cfg(str(copy)), rank=0, world_size=1)
    try:
        with pytest.raises(ShardError, match=rf"{first}: .*bytes, but index.json records"):
            for _ in loader:
                pass
    finally:
        loader.close()


def test_shared_memory_prefix_and_release(dataset):
    import atexit

    prefix = adapter.shm_prefix(dataset)
    assert prefix >= 0
    blocks = adapter.shared_memory_of(dataset)
    names = [block.name for shm in blocks for block in shm.created_shms + shm.opened_shms]
    assert names and all(name.lstrip("/").startswith(f"{prefix:06}_") for name in names)
    for shm in blocks:
        assert isinstance(shm.created_shms, list) and isinstance(shm.opened_shms, list)
    shm = blocks[0]
    adapter.release_block(shm)
    assert shm.created_shms == [] and shm.opened_shms == []
    assert atexit.unregister(shm.cleanup) is None  # already unregistered: a no-op, not an error


def test_download_file_copies_one_file_from_a_remote(tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "f.json").write_text("{}")
    adapter.download_file(str(remote / "f.json"), str(tmp_path / "local.json"), 10)
    assert (tmp_path / "local.json").read_text() == "{}"
    with pytest.raises(Exception):  # noqa: B017 - streaming raises its own types for a missing remote file
        adapter.download_file(str(remote / "missing.json"), str(tmp_path / "x.json"), 10)


def test_download_file_without_a_timeout_uses_streamings_default(tmp_path):
    from streaming.base.storage.download import CloudDownloader

    assert inspect.signature(CloudDownloader.direct_download).parameters["timeout"].default is not inspect.Parameter.empty
    (tmp_path / "f.json").write_text("[1]")
    adapter.download_file(str(tmp_path / "f.json"), str(tmp_path / "copy.json"))
    assert (tmp_path / "copy.json").read_text() == "[1]"


def test_the_uploader_table_names_s3_and_local():
    from streaming.base.storage.upload import UPLOADERS

    assert isinstance(UPLOADERS, dict)
    schemes = adapter.uploader_schemes()
    assert schemes == tuple(UPLOADERS) and all(isinstance(s, str) for s in schemes)
    assert {"s3", "gs", ""} <= set(schemes)


def test_uploader_signatures():
    from streaming.base.storage.upload import CloudUploader

    assert {"out", "exist_ok"} <= set(inspect.signature(CloudUploader.get).parameters)
    assert list(inspect.signature(CloudUploader.upload_file).parameters) == ["self", "filename"]
    assert list(inspect.signature(CloudUploader.list_objects).parameters) == ["self", "prefix"]


def test_an_uploader_moves_a_staged_file_to_its_remote(tmp_path):
    staging, remote = tmp_path / "staging", tmp_path / "remote"
    staging.mkdir()
    (staging / "kept.json").write_text("{}")  # a staging folder that already holds files is accepted
    uploader = adapter.make_uploader(str(staging), str(remote))
    (staging / "r.json").write_text('{"a": 1}')
    adapter.upload_staged(uploader, "r.json")
    assert (remote / "r.json").read_text() == '{"a": 1}'
    assert sorted(os.listdir(staging)) == ["kept.json"]  # the uploaded copy left staging
    assert adapter.s3_client(uploader) is None


def test_an_s3_uploader_lists_uploads_and_deletes_through_its_client(tmp_path, monkeypatch):
    moto = pytest.importorskip("moto")
    import boto3

    for name in ("S3_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "MOSAICML_STREAMING_AWS_REQUESTER_PAYS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    with moto.mock_aws():
        boto3.client("s3").create_bucket(Bucket="adapter")
        uploader = adapter.make_uploader(str(tmp_path), "s3://adapter/pre")
        os.makedirs(tmp_path / "d")
        (tmp_path / "d" / "x.json").write_text("{}")
        adapter.upload_staged(uploader, "d/x.json")
        assert not (tmp_path / "d" / "x.json").exists()
        assert adapter.list_remote(uploader, "d") == ["pre/d/x.json"]  # full keys, relative to the bucket
        adapter.s3_client(uploader).delete_objects(Bucket="adapter", Delete={"Objects": [{"Key": "pre/d/x.json"}]})
        assert adapter.list_remote(uploader, "d") == []


def _writer(out, **kwargs):
    from streaming import MDSWriter

    return MDSWriter(out=out, columns={"ids": "ndarray:uint16"}, size_limit=1 << 10, **kwargs)


def _write_one(writer, i: int) -> None:
    writer.write({"ids": np.full(100, i, dtype=np.uint16)})


def _write(writer, samples: int) -> None:
    for i in range(samples):
        _write_one(writer, i)


def test_a_writer_exposes_its_staging_folder_and_finished_shards(tmp_path):
    import threading

    staging, remote, plain = tmp_path / "staging", tmp_path / "remote", tmp_path / "plain"
    for out, folder in (((str(staging), str(remote)), staging), (str(plain), plain)):
        writer = _writer(out)
        assert isinstance(writer.event, threading.Event) and isinstance(writer.shards, list)
        assert adapter.writer_staging_dir(writer) == str(folder)
        assert adapter.writer_shard_count(writer) == 0
        _write(writer, 30)  # ~200 bytes a sample: several 1 KiB shards
        flushed = adapter.writer_shard_count(writer)
        assert flushed > 1 and not adapter.writer_upload_failed(writer)
        writer.finish()
        written = plain if folder == plain else remote
        assert sum(n.startswith("shard.") for n in os.listdir(written)) == flushed + 1  # the last, flushed by finish
    assert not staging.exists()  # a writer with a remote removes its staging folder when done


def test_a_failed_upload_is_reported_by_the_writer(tmp_path):
    import shutil
    import time

    remote = tmp_path / "remote"
    writer = _writer((str(tmp_path / "staging"), str(remote)), retry=1)
    shutil.rmtree(remote)  # every upload now fails: its folder is gone
    # ~200 bytes a sample: write until the first 1 KiB shard is flushed, and not one sample more: a write after
    # the upload thread failed would raise here, and how soon it fails depends on the machine's load
    for i in range(10):
        _write_one(writer, i)
        if adapter.writer_shard_count(writer):
            break
    assert adapter.writer_shard_count(writer) == 1
    deadline = time.monotonic() + 30
    while not adapter.writer_upload_failed(writer) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert adapter.writer_upload_failed(writer)
    with pytest.raises(Exception, match="threads failed"):
        writer.finish()
