"""Shards record their tokenizer; the loader, data.inspect and --dry-run refuse another one up front."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from modernbert_pretrain.data import ShardError, build_train_loader
from modernbert_pretrain.data.errors import TokenizerMismatchError
from modernbert_pretrain.data.fingerprint import FINGERPRINT_NAME, read_fingerprint, tokenizer_fingerprint
from modernbert_pretrain.data.shm import tracked_count
from tests.data_fixtures import fresh_dir, make_cfg, own_shm, small_data, take, write_mds


@pytest.fixture(autouse=True)
def _shm():
    with own_shm():
        yield


def other_tokenizer() -> str:
    """The small tokenizer with two ordinary tokens' ids swapped: same size, different ids."""
    folder = fresh_dir("other-tokenizer")
    shutil.copytree(small_data().tokenizer, folder, dirs_exist_ok=True)
    path = os.path.join(folder, "tokenizer.json")
    with open(path) as f:
        spec = json.load(f)
    vocab = spec["model"]["vocab"]
    a, b = sorted((i, t) for t, i in vocab.items())[300:302]
    vocab[a[1]], vocab[b[1]] = b[0], a[0]
    with open(path, "w") as f:
        json.dump(spec, f)
    return folder


def test_tokenize_to_mds_records_its_tokenizer():
    data = small_data()
    recorded = read_fingerprint(data.mds)
    assert recorded == tokenizer_fingerprint(data.tokenizer) | {"name": os.path.abspath(data.tokenizer)}
    assert recorded["vocab_size"] == 512
    other = tokenizer_fingerprint(other_tokenizer())
    assert other["vocab_size"] == 512 and other["sha256"] != recorded["sha256"]


def test_loader_refuses_another_tokenizer_before_reading():
    other = other_tokenizer()
    before = tracked_count()
    with pytest.raises(TokenizerMismatchError) as err:
        build_train_loader(make_cfg(tokenizer=other), rank=0, world_size=1)
    message = str(err.value)
    assert "\n" not in message
    assert small_data().mds in message and other in message and os.path.abspath(small_data().tokenizer) in message
    assert tracked_count() == before  # refused before any dataset was built


def test_every_stream_is_checked():
    from modernbert_pretrain.data import StreamConfig

    other = other_tokenizer()
    mixed = fresh_dir("mixed")
    shutil.copytree(small_data().mds, mixed, dirs_exist_ok=True)
    shutil.copy(os.path.join(small_data().mds, FINGERPRINT_NAME), mixed)
    with open(os.path.join(mixed, FINGERPRINT_NAME)) as f:
        record = json.load(f)
    record.update(tokenizer_fingerprint(other))
    with open(os.path.join(mixed, FINGERPRINT_NAME), "w") as f:
        json.dump(record, f)
    cfg = make_cfg(local=None, streams=[StreamConfig(local=small_data().mds, name="good"),
                                        StreamConfig(local=mixed, name="second")])
    with pytest.raises(TokenizerMismatchError, match=f"stream second: the shards in {mixed}"):
        build_train_loader(cfg, rank=0, world_size=1)


def _yaml(tmp_path, tokenizer: str) -> str:
    work = tmp_path / "work"
    (work / "mds").mkdir(parents=True)
    os.symlink(small_data().mds, work / "mds" / "train")
    os.symlink(small_data().mds, work / "mds" / "val")
    os.symlink(tokenizer, work / "tokenizer")
    path = tmp_path / "train.yaml"
    path.write_text(textwrap.dedent("""\
        run_name: fp
        workdir: work
        max_tokens: 102400
        model: {preset: tiny}
        data:
          tokenizer: ${workdir}/tokenizer
          local: ${workdir}/mds
          split: train
          seq_len: 128
          device_microbatch_size: 4
          global_batch_size: 8
          packing_buffer_docs: 64
        """))
    return str(path)


def _run(main, argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def test_inspect_and_dry_run_refuse_another_tokenizer_in_one_line(tmp_path):
    from modernbert_pretrain.data.inspect import main as inspect_main
    from modernbert_pretrain.train.main import main as train_main

    yaml = _yaml(tmp_path, other_tokenizer())
    for main, argv in ((inspect_main, [yaml, "--batches", "1"]), (train_main, [yaml, "--dry-run"])):
        code, err = _run(main, argv)
        assert code == 2, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "tokenized with" in lines[0] and "mds/train" in lines[0], err


def test_dry_run_passes_with_the_right_tokenizer(tmp_path):
    from modernbert_pretrain.train.main import main as train_main

    code, err = _run(train_main, [_yaml(tmp_path, small_data().tokenizer), "--dry-run"])
    assert code == 0 and "tokenized with" not in err, err


def test_shards_without_fingerprint_warn_and_refuse_foreign_ids(caplog):
    info_size = 512
    plain = write_mds(fresh_dir("plain"), [np.array([2, 5, 7, 3])] * 40 + [np.array([2, info_size + 9, 3])])
    with caplog.at_level(logging.WARNING):
        loader = build_train_loader(make_cfg(plain, seq_len=64, shuffle=False), rank=0, world_size=1)
    assert any("record no tokenizer" in r.getMessage() and plain in r.getMessage() for r in caplog.records)
    with pytest.raises(ShardError, match=r"token id 521 outside the vocabulary \[0, 512\)"):
        take(loader, 20)


def _foreign(encoding: str, value) -> str:
    from streaming import MDSWriter

    out = fresh_dir("foreign")
    with MDSWriter(out=out, columns={"input_ids": encoding}) as writer:
        for _ in range(20):
            writer.write({"input_ids": value})
    return out


@pytest.mark.parametrize("encoding, value", [("str", "hello world"),
                                             ("ndarray:float32", np.arange(2, 9, dtype=np.float32))])
def test_foreign_token_columns_are_named(encoding, value):
    folder = _foreign(encoding, value)
    with pytest.raises(ShardError, match=f"stores column 'input_ids' as '{encoding}', expected token ids as an "
                                         f"integer ndarray"):
        build_train_loader(make_cfg(folder), rank=0, world_size=1)


def test_float_samples_in_an_untyped_ndarray_column_are_refused_when_read():
    folder = _foreign("ndarray", np.arange(2, 9, dtype=np.float32))
    loader = build_train_loader(make_cfg(folder), rank=0, world_size=1)
    with pytest.raises(ShardError, match="stores column 'input_ids' as float32, expected token ids"):
        take(loader, 1)


def test_a_remote_stream_fingerprint_is_fetched_and_compared():
    from modernbert_pretrain.data import StreamConfig

    cache = fresh_dir("cache")
    cfg = make_cfg(local=None, streams=[StreamConfig(local=cache, remote=small_data().mds)], tokenizer=other_tokenizer())
    with pytest.raises(TokenizerMismatchError, match=f"the shards in {cache}"):
        build_train_loader(cfg, rank=0, world_size=1)


def test_a_tokenizer_folder_loads_as_autotokenizer_would_without_importing_the_auto_classes(tmp_path, monkeypatch):
    """Folders whose tokenizer_config.json names PreTrainedTokenizerFast skip transformers' auto classes (3.5 s
    of imports); they get the same class and fingerprint as AutoTokenizer. Any other class goes through
    AutoTokenizer."""
    import subprocess
    import sys

    from transformers import AutoTokenizer

    from modernbert_pretrain.data.fingerprint import fingerprint_of
    from modernbert_pretrain.data.tokenizer_info import load_tokenizer

    folder = small_data().tokenizer
    ours, auto = load_tokenizer(folder), AutoTokenizer.from_pretrained(folder)
    assert type(ours) is type(auto) and type(ours).__name__ == "PreTrainedTokenizerFast"
    assert fingerprint_of(ours, folder) == fingerprint_of(auto, folder)
    text = "def f(x):\n    return x + 1"
    assert ours(text)["input_ids"] == auto(text)["input_ids"]
    probe = ("import sys; from modernbert_pretrain.data.tokenizer_info import load_tokenizer; "
             f"load_tokenizer({folder!r}); print('transformers.models.auto.tokenization_auto' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]

    # any other class, or custom code (auto_map), is AutoTokenizer's to resolve
    import transformers

    from modernbert_pretrain.data.tokenizer_info import _from_pretrained

    asked = []
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda path: asked.append(path) or "auto")
    config = json.loads((Path(folder) / "tokenizer_config.json").read_text())
    for i, changed in enumerate(({"tokenizer_class": "BertTokenizerFast"}, {"auto_map": {"AutoTokenizer": ["x", "y"]}})):
        other = tmp_path / str(i)
        shutil.copytree(folder, other)
        (other / "tokenizer_config.json").write_text(json.dumps({**config, **changed}))
        assert _from_pretrained(str(other)) == "auto"
    assert asked == [str(tmp_path / "0"), str(tmp_path / "1")]
