"""Paths on the command line and in `eval.data`: resolved by the same rules as the YAML's own."""

from __future__ import annotations

import copy
import os

import pytest
import yaml

from modernbert_pretrain.config import load_config
from modernbert_pretrain.data.inspect import load_data_config
from modernbert_pretrain.schema import ConfigError
from tests.test_train_config import GOOD


def _yaml(tmp_path, **sections) -> str:
    raw = copy.deepcopy(GOOD)
    raw.update(sections)
    folder = tmp_path / "yamls"
    folder.mkdir(exist_ok=True)
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture()
def elsewhere(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_a_hub_tokenizer_on_the_command_line_stays_a_hub_id(tmp_path, elsewhere):
    path = _yaml(tmp_path)
    assert load_config(path, ["data.tokenizer=answerdotai/ModernBERT-base"]).data.tokenizer == \
        "answerdotai/ModernBERT-base"
    assert load_data_config(path, ["data.tokenizer=answerdotai/ModernBERT-base"]).tokenizer == \
        "answerdotai/ModernBERT-base"


def test_relative_command_line_paths_are_taken_from_the_working_directory(tmp_path, elsewhere):
    (elsewhere / "my-tok").mkdir()
    path = _yaml(tmp_path)
    overrides = ["data.tokenizer=my-tok", "data.local=shards/train", "save.folder=ckpt",
                 "logging.metrics_file=m.jsonl"]
    cfg = load_config(path, overrides)
    assert cfg.data.tokenizer == str(elsewhere / "my-tok")
    assert cfg.data.local == str(elsewhere / "shards/train")
    assert cfg.save.folder == str(elsewhere / "ckpt")
    assert cfg.logging.metrics_file == str(elsewhere / "m.jsonl")
    data = load_data_config(path, overrides[:2])
    assert (data.tokenizer, data.local) == (cfg.data.tokenizer, cfg.data.local)
    in_yaml = load_config(path)  # the same values written in the YAML are taken from its folder
    assert in_yaml.data.local == str(tmp_path / "yamls" / "mds")


def test_eval_data_paths_resolve_against_the_yaml(tmp_path, elsewhere):
    path = _yaml(tmp_path, eval={"interval": "1000tok", "data": {"local": "../held-out", "mask_prob": 0.15}})
    cfg = load_config(path)
    assert cfg.eval.data == {"local": str(tmp_path / "held-out"), "mask_prob": 0.15}
    evaluation = cfg.eval_data()
    assert evaluation.local == str(tmp_path / "held-out") and evaluation.mask_prob == 0.15
    assert evaluation.tokenizer == cfg.data.tokenizer
    assert load_config(path, ["eval.data.local=val"]).eval_data().local == str(elsewhere / "val")


@pytest.mark.parametrize("data, message", [
    ({"mask_prop": 0.1}, r"^eval.data: unknown key 'mask_prop'; did you mean 'mask_prob'\?$"),
    ({"seq_len": "long"}, r"^eval.data.seq_len: expected an integer"),
    ({"mask_prob": 1.5}, r"^eval.data: data.mask_prob: must be in \(0, 1\)"),
])
def test_eval_data_is_checked_like_the_data_section(tmp_path, data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_yaml(tmp_path, eval={"data": data}))


def test_train_py_reports_a_bad_eval_key_in_one_line(tmp_path, capsys):
    from modernbert_pretrain.train.main import main

    assert main([_yaml(tmp_path, eval={"data": {"locl": "x"}}), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["config error: eval.data: unknown key 'locl'; did you mean 'local'?"]
    assert not os.path.exists(tmp_path / "yamls" / "x")
