"""python -m modernbert_pretrain.data.inspect: a training YAML in, one JSON line out."""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from modernbert_pretrain.data.inspect import main
from tests.data_fixtures import own_shm, small_data

KEYS = {"batches", "tokens", "packing_efficiency", "mask_rate", "special_tokens_masked", "tokens_per_s"}


@pytest.fixture()
def training_yaml(tmp_path):
    """A YAML like the smoke ones: interpolated paths relative to the file, other sections ignored."""
    data = small_data()
    root = tmp_path / "work"
    os.symlink(data.root, root)
    conf = tmp_path / "yamls"
    conf.mkdir()
    path = conf / "train.yaml"
    path.write_text(textwrap.dedent(f"""\
        run_name: inspect-test
        workdir: ../work
        model: {{preset: tiny, some_future_key: 1}}
        optimizer: {{lr: 1.0e-3}}
        data:
          tokenizer: ${{workdir}}/{os.path.basename(data.tokenizer)}
          local: ${{workdir}}/{os.path.basename(data.mds)}
          seq_len: 256
          device_microbatch_size: 4
          global_batch_size: 8
          packing_buffer_docs: 64
        """))
    with own_shm():
        yield str(path)


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_inspect_prints_its_json_last(training_yaml, capsys):
    assert main([training_yaml, "--batches", "6"]) == 0
    result = last_json(capsys.readouterr().out)
    assert KEYS <= set(result)
    assert result["batches"] == 6 and result["tokens"] > 0
    assert result["special_tokens_masked"] == 0
    assert 0.9 < result["packing_efficiency"] <= 1.0
    assert abs(result["mask_rate"] - 0.3) < 0.05


def test_inspect_applies_dotted_overrides(training_yaml, capsys):
    assert main([training_yaml, "--batches", "3", "data.mask_prob=0.1", "data.global_batch_size=16"]) == 0
    out = capsys.readouterr().out
    assert "step 0: 4 microbatches" in out
    assert abs(last_json(out)["mask_rate"] - 0.1) < 0.04


def test_inspect_reports_config_errors_by_name(training_yaml, capsys):
    assert main([training_yaml, "data.mask_prop=0.1"]) == 2
    assert "unknown key 'mask_prop'; did you mean 'mask_prob'" in capsys.readouterr().err
    assert main([training_yaml, "data.local=../nowhere"]) == 2
    assert "no MDS index" in capsys.readouterr().err
