"""The training YAML schema: every wrong config fails before any work, with its own message."""

import copy

import pytest
import yaml

from modernbert_pretrain.config import load_config
from modernbert_pretrain.schema import ConfigError

GOOD = {
    "run_name": "t",
    "workdir": ".",
    "max_tokens": 100000,
    "model": {"preset": "tiny"},
    "data": {"tokenizer": "tok", "local": "mds", "seq_len": 128, "device_microbatch_size": 4,
             "global_batch_size": 16},
    "optimizer": {"lr": 1e-3},
    "scheduler": {"warmup_tokens": 1000},
    "save": {"folder": "ckpt", "interval": "1000tok"},
}


def _with(path: str, value):
    cfg = copy.deepcopy(GOOD)
    node = cfg
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return cfg


_DELETE = object()

BAD = [
    ("unknown top-level key with a suggestion", _with("auto_resume", True), r"auto_resume.*did you mean 'autoresume'"),
    ("misspelled optimizer key", _with("optimizer.learning_rate", 1e-3), r"optimizer: unknown key 'learning_rate'"),
    ("misspelled data key", _with("data.seq_length", 128), r"seq_length.*seq_len"),
    ("misspelled model field", _with("model.hidden_sise", 64), r"hidden_sise.*hidden_size"),
    ("string where a number belongs", _with("optimizer.lr", "fast"), r"optimizer.lr: expected a number"),
    ("bool where an integer belongs", _with("max_tokens", True), r"max_tokens: expected an integer"),
    ("fractional token count", _with("max_tokens", 12.5), r"max_tokens: expected an integer \(e.g. 1024 or 1.7e12\), got 12.5"),
    ("negative lr", _with("optimizer.lr", -1.0), r"optimizer.lr must be positive"),
    ("beta out of range", _with("optimizer.betas", [0.9, 1.5]), r"optimizer.betas"),
    ("wrong number of betas", _with("optimizer.betas", [0.9]), r"optimizer.betas: expected 2 values"),
    ("unknown decay shape", _with("scheduler.decay", {"shape": "exp"}), r"scheduler.decay.shape.*not one of"),
    ("decay longer than the phase", _with("scheduler.decay", {"shape": "linear", "tokens": 10**9}),
     r"decay.tokens=.*longer than max_tokens"),
    ("warmup + decay over budget", _with("scheduler", {"warmup_tokens": 90000, "decay": {"tokens": 20000}}),
     r"warmup_tokens \+ decay"),
    ("zero token budget", _with("max_tokens", 0), r"max_tokens must be positive"),
    ("unknown model preset", _with("model.preset", "huge"), r"unknown model preset 'huge'"),
    ("seq_len above the model maximum", _with("data.seq_len", 4096), r"exceeds the model's max_position_embeddings"),
    ("batch not divisible by microbatch", _with("data.global_batch_size", 10), r"global_batch_size=10"),
    ("bad save interval unit", _with("save.interval", "10ep"), r"save.interval must end in 'tok' or 'ba'"),
    ("zero checkpoints kept", _with("save.keep", 0), r"save.keep"),
    ("both load_from and init_from", _with("init_from", {"path": "x"}) | {"load_from": {"path": "y"}},
     r"either load_from .* or init_from"),
    ("missing required data section", _with("data", _DELETE), r"missing required key.*data"),
    ("unknown attention backend", _with("model.attn_backend", "fast"), r"unknown backend 'fast'"),
    ("mask rate out of range", _with("data.mask_prob", 1.5), r"mask_prob"),
    ("unknown precision", _with("precision", "fp8"), r"precision.*not one of"),
    ("rope theta of -1 (the published NaN export)", _with("model.local_rope_theta", -1), r"local_rope_theta"),
    ("max_tokens below one step", _with("max_tokens", 2000),
     r"max_tokens=2000 is less than one optimizer step: the first step trains 2048 tokens \(data.global_batch_size=16 "
     r"x data.seq_len=128\)"),
    ("max_tokens below the first warmup step", _with("data", {**GOOD["data"], "batch_size_warmup_start": 4,
                                                          "batch_size_warmup_tokens": 4096}) | {"max_tokens": 500},
     r"first step trains 512 tokens \(data.batch_size_warmup_start=4"),
]


@pytest.mark.parametrize("name,raw,match", BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_rejected_with_a_specific_message(tmp_path, name, raw, match):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises((ConfigError, ValueError), match=match):
        load_config(path)


def test_messages_are_distinct():
    assert len({b[2] for b in BAD}) == len(BAD) >= 20


def test_good_config_loads_and_resolves_paths_relative_to_the_yaml(tmp_path):
    sub = tmp_path / "configs"
    sub.mkdir()
    (sub / "c.yaml").write_text(yaml.safe_dump(GOOD))
    cfg = load_config(sub / "c.yaml")
    assert cfg.data.local == str(sub / "mds")
    assert cfg.save.folder == str(sub / "ckpt")


def test_world_size_arithmetic(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    cfg = load_config(path)
    cfg.check_world_size(2)
    with pytest.raises(ConfigError, match="not divisible by device_microbatch_size x world_size"):
        cfg.check_world_size(3)


def test_overrides_and_interpolation(tmp_path):
    raw = copy.deepcopy(GOOD)
    raw["data"]["local"] = "${workdir}/mds"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path, [f"workdir={tmp_path}/w", "optimizer.lr=3e-4"])
    assert cfg.data.local == f"{tmp_path}/w/mds"
    assert cfg.optimizer.lr == 3e-4
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(path, ["optimizer.lr"])


# ---- malformed YAML and overrides: one line naming the file and line, or the override; exit 2 ----------------

def _refusal(capsys, path, *overrides) -> str:
    from modernbert_pretrain.train.main import main

    rc = main([str(path), *overrides])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("config error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def test_a_duplicate_key_names_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    text = yaml.safe_dump(GOOD, sort_keys=False)
    path.write_text(text + "seed: 1\nseed: 2\n")
    line = _refusal(capsys, path)
    assert f"{path}:{text.count(chr(10)) + 2}:1: found duplicate key seed" in line


def test_a_tab_in_the_indentation_names_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    raw = {k: v for k, v in GOOD.items() if k != "optimizer"}
    text = yaml.safe_dump(raw, sort_keys=False)
    path.write_text(text + "optimizer:\n\tlr: 0.001\n")
    line = _refusal(capsys, path)
    assert f"{path}:{text.count(chr(10)) + 2}:" in line and "indent YAML with spaces" in line


@pytest.mark.parametrize("override,says", [
    ("optimizer.lr=[1,", "override 'optimizer.lr=[1,': the value is not valid YAML"),
    ("seed=${oops}", "override seed='${oops}': cannot resolve"),
    ("data.local=${workdir}/${missing}", "override data.local="),
])
def test_a_malformed_override_is_named(tmp_path, capsys, override, says):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    line = _refusal(capsys, path, override)
    assert says in line, line


def test_an_override_may_refer_to_another_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    cfg = load_config(path, [f"workdir={tmp_path}/w", "data.local=${workdir}/mds2"])
    assert cfg.data.local == f"{tmp_path}/w/mds2"


def test_dry_run_says_how_many_tokens_are_really_trained(tmp_path, capsys):
    import json

    from modernbert_pretrain.train.main import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(GOOD | {"max_tokens": 5000}))
    assert main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr()
    plan = json.loads(out.out.strip().splitlines()[-1])  # the memory table comes before the JSON line
    assert plan["steps"] == 3 and plan["tokens_trained"] == 3 * 16 * 128
    assert "max_tokens=5000 is not at a step boundary; the run stops after step 3, at 6144 tokens" in out.err
    path.write_text(yaml.safe_dump(GOOD | {"max_tokens": 1000}))
    assert _refusal(capsys, path, "--dry-run").startswith("config error: max_tokens=1000 is less than one")


@pytest.mark.parametrize("typed,want", [("on", "on"), ("off", "off"), ("true", "on"), ("false", "off"),
                                        ("On", "on"), ("'on'", "on"), ("auto", "auto")])
def test_compile_takes_what_yaml_gives_in_the_file_and_on_the_command_line(tmp_path, typed, want):
    # YAML 1.1 reads unquoted on/off/true/false as booleans; the user meant the words.
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(GOOD) + f"compile: {typed}\n")
    assert load_config(path).compile == want
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(GOOD))
    assert load_config(plain, [f"compile={typed}"]).compile == want


@pytest.mark.parametrize("typed", ["maybe", "1", "yes please"])
def test_compile_still_refuses_a_bad_value_by_name(tmp_path, typed):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    with pytest.raises(ConfigError, match=r"compile: .* is not one of \['auto', 'on', 'off'\]"):
        load_config(path, [f"compile={typed}"])
