"""DataConfig: unknown keys, types, value checks and path resolution, each error naming its field."""

from __future__ import annotations

import os

import pytest

from modernbert_pretrain.data import DataConfig, DataConfigError, StreamConfig, parse_count, resolve_config

BASE = {"tokenizer": "tok", "local": "mds"}


def build(**changes):
    return DataConfig.from_dict({**BASE, **changes})


def test_defaults_are_the_phase1_recipe():
    cfg = build()
    assert (cfg.seq_len, cfg.global_batch_size, cfg.mask_prob) == (1024, 4608, 0.3)
    assert cfg.batch_size_warmup_start is None
    assert [s.local for s in cfg.stream_list()] == ["mds"]


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(DataConfigError, match="unknown key 'mask_prop'; did you mean 'mask_prob'"):
        build(mask_prop=0.2)
    with pytest.raises(DataConfigError, match=r"data.streams\[1\]: unknown key 'proportoin'.*'proportion'"):
        DataConfig.from_dict({"tokenizer": "t", "streams": [{"local": "a"}, {"local": "b", "proportoin": 1}]})


@pytest.mark.parametrize("key, value, message", [
    ("seq_len", "big", "data.seq_len: expected an integer"),
    ("shuffle", "yes", "data.shuffle: expected true or false"),
    ("mask_prob", True, "data.mask_prob: expected a number"),
    ("streams", {"local": "a"}, "data.streams: expected a list"),
    ("batch_size_warmup_tokens", "lots", "data.batch_size_warmup_tokens: cannot read 'lots'"),
])
def test_wrong_types_are_named(key, value, message):
    with pytest.raises(DataConfigError, match=message):
        build(**{key: value})


@pytest.mark.parametrize("changes, message", [
    ({"mask_prob": 1.5}, "data.mask_prob: must be in"),
    ({"global_batch_size": 10, "device_microbatch_size": 4}, "not a multiple of data.device_microbatch_size"),
    ({"batch_size_warmup_start": 96}, "batch_size_warmup_tokens: must be > 0"),
    ({"batch_size_warmup_start": 9000, "batch_size_warmup_tokens": 10}, "batch_size_warmup_start=9000"),
    ({"num_workers": 4}, "data.num_workers=4"),
    ({"validate_hash": "xxh46"}, "did you mean 'xxh64'"),
    ({"mask_token_prob": 0.95, "random_token_prob": 0.1}, "exceeds 1"),
    ({"local": None}, "no data source"),
])
def test_bad_values_are_named(changes, message):
    with pytest.raises(DataConfigError, match=message):
        build(**changes)


def test_mixture_proportions_are_checked():
    def mix(*streams):
        return DataConfig.from_dict({"tokenizer": "t", "streams": list(streams)})

    cfg = mix({"local": "text", "proportion": 0.7}, {"local": "code", "proportion": 0.3})
    assert [s.proportion for s in cfg.stream_list()] == [0.7, 0.3]
    with pytest.raises(DataConfigError, match=r"missing on \['code'\]"):
        mix({"local": "text", "proportion": 0.7}, {"local": "code"})
    with pytest.raises(DataConfigError, match=r"streams\[0\].*stream text: proportion must be a positive"):
        mix({"local": "text", "proportion": -1}, {"local": "code", "proportion": 1})
    with pytest.raises(DataConfigError, match="stream code: set only one of proportion, repeat"):
        mix({"local": "code", "proportion": 1, "repeat": 2})
    with pytest.raises(DataConfigError, match="duplicate stream names"):
        mix({"local": "a/x"}, {"local": "b/x"})
    with pytest.raises(DataConfigError, match="either `streams`"):
        DataConfig.from_dict({"tokenizer": "t", "local": "m", "streams": [{"local": "a"}]})


def test_counts_accept_suffixes():
    assert parse_count("50B", "x") == 50_000_000_000
    assert parse_count("1.7T", "x") == 1_700_000_000_000
    assert parse_count("102_400", "x") == 102400
    assert build(batch_size_warmup_start=768, batch_size_warmup_tokens="50B").batch_size_warmup_tokens == 50 * 10**9


def test_paths_resolve_against_the_config_dir_not_the_working_dir(tmp_path):
    (tmp_path / "tok").mkdir()
    cfg = DataConfig(tokenizer="tok", streams=[StreamConfig(local="../data/a", remote="s3://b/a"),
                                               StreamConfig(local="/abs/b", remote="mirror/b")])
    resolved = resolve_config(cfg, str(tmp_path))
    assert resolved.tokenizer == str(tmp_path / "tok")
    assert resolved.streams[0].local == os.path.normpath(str(tmp_path / "../data/a"))
    assert resolved.streams[0].remote == "s3://b/a"
    assert resolved.streams[1].local == "/abs/b"
    assert resolved.streams[1].remote == str(tmp_path / "mirror/b")
    hub = resolve_config(DataConfig(tokenizer="answerdotai/ModernBERT-base", local="/m"), str(tmp_path))
    assert hub.tokenizer == "answerdotai/ModernBERT-base"
    with pytest.raises(DataConfigError, match="data.local: relative path 'mds' needs the config file's directory"):
        resolve_config(DataConfig(tokenizer="t", local="mds"), None)


def test_mixture_example_yaml_is_a_valid_data_section(tmp_path):
    from modernbert_pretrain.data.inspect import load_data_config

    example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data_prep",
                           "mixture_example.yaml")
    cfg = load_data_config(example)
    assert [s.name for s in cfg.streams] == ["text", "code", "math", "science"]
    assert abs(sum(s.proportion for s in cfg.streams) - 1.0) < 1e-9
    assert cfg.batch_size_warmup_tokens == 50 * 10**9
    broken = tmp_path / "mix.yaml"
    broken.write_text(open(example).read().replace("proportion: 0.10", "proportion: 0"))
    with pytest.raises(DataConfigError, match=r"data.streams\[2\]: stream math: proportion must be a positive"):
        load_data_config(str(broken))
