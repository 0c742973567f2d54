"""One definition per rule: the shared values and rules are defined once and used everywhere."""

from __future__ import annotations

import re
from pathlib import Path

from modernbert_pretrain import data
from modernbert_pretrain.constants import IGNORE_INDEX
from modernbert_pretrain.model import ModernBertConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "modernbert_pretrain"


def test_ignore_index_is_defined_once():
    literal = re.compile(r"(?<![\w.e])-100\b")
    offenders = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py") if p.name != "constants.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if literal.search(line)]
    assert offenders == []
    assert data.IGNORE_INDEX == IGNORE_INDEX
    assert ModernBertConfig.from_preset("tiny").to_hf_dict()["sparse_pred_ignore_index"] == IGNORE_INDEX


def test_counts_read_the_same_in_every_section():
    import pytest

    from modernbert_pretrain.data import DataConfigError, parse_count
    from modernbert_pretrain.schema import ConfigError, coerce

    for text, expected in (("50B", 50 * 10**9), ("1.7T", 1_700_000_000_000), ("1.7e12", 1_700_000_000_000),
                           ("102_400", 102_400), ("3e9tok", 3 * 10**9)):
        assert coerce(text, int, "max_tokens") == expected
        assert parse_count(text, "data.epoch_size") == expected
    for fractional in ("1.5", "0.0000000001K", 12.5):
        with pytest.raises(ConfigError, match="max_tokens: expected an integer"):
            coerce(fractional, int, "max_tokens")
        with pytest.raises(DataConfigError, match="data.epoch_size: cannot read"):
            parse_count(fractional, "data.epoch_size")


def _train_config(tmp_path, **sections):
    import copy

    import yaml

    from modernbert_pretrain.config import load_config
    from tests.test_train_config import GOOD

    raw = copy.deepcopy(GOOD)
    raw.update(sections)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_decay_tokens_zero_means_the_rest_after_warmup_everywhere(tmp_path):
    from modernbert_pretrain.train.plan import make_plan
    from modernbert_pretrain.train.schedule import lr_multiplier

    cfg = _train_config(tmp_path, max_tokens=100_000, scheduler={
        "warmup_tokens": 20_000, "decay": {"shape": "linear", "tokens": 0, "final_lr_fraction": 0.0}})
    span = cfg.scheduler.decay_span(cfg.max_tokens)
    assert span == 80_000
    assert make_plan(cfg)["decay"]["tokens"] == span
    sched = cfg.scheduler
    assert lr_multiplier(10_000, sched, cfg.max_tokens) == 0.5  # warmup
    assert lr_multiplier(20_000, sched, cfg.max_tokens) == 1.0  # the decay starts where the warmup ends
    assert lr_multiplier(20_000 + span // 4, sched, cfg.max_tokens) == 0.75
    assert lr_multiplier(100_000, sched, cfg.max_tokens) == 0.0


def test_batch_divisibility_is_one_rule(tmp_path):
    import pytest

    from modernbert_pretrain.data import batch_size_schedule
    from modernbert_pretrain.schema import ConfigError
    from modernbert_pretrain.train.plan import total_steps

    cfg = _train_config(tmp_path, data={"tokenizer": "tok", "local": "mds", "seq_len": 128, "device_microbatch_size": 4,
                                        "global_batch_size": 24, "batch_size_warmup_start": 8,
                                        "batch_size_warmup_tokens": 10_000})
    for world_size in (1, 2, 3, 4, 6, 5):
        # The full batch must be whole microbatches on every rank; the warmup start is rounded up to them.
        fits = 24 % (4 * world_size) == 0
        checks = (cfg.check_world_size, cfg.data.check_world_size, lambda w: batch_size_schedule(cfg.data, w),
                  lambda w: total_steps(cfg, w))
        for check in checks:
            if fits:
                check(world_size)
            else:
                with pytest.raises(ConfigError, match=f"x world size {world_size} = {4 * world_size}"):
                    check(world_size)
        if fits:
            unit = 4 * world_size
            assert batch_size_schedule(cfg.data, world_size).start == -(-8 // unit) * unit
    assert total_steps(cfg, 1) == batch_size_schedule(cfg.data, 1).steps_for(cfg.max_tokens)


def test_loader_and_validator_read_an_index_the_same_way():
    import json
    import os

    import pytest

    from modernbert_pretrain.data import ShardError, build_train_loader
    from modernbert_pretrain.data.shards import validate_mds_dataset
    from tests.data_fixtures import fresh_dir, make_cfg

    for name, index, expected in (("v1", {"version": 1, "shards": []}, "is not an MDS index"),
                                  ("columns", {"version": 2, "shards": [{"column_names": ["tokens"], "format": "mds",
                                                                         "raw_data": {"basename": "s.mds"}}]},
                                   r"has columns \['tokens'\], expected 'input_ids'")):
        folder = fresh_dir(f"index-{name}")
        with open(os.path.join(folder, "index.json"), "w") as f:
            json.dump(index, f)
        with pytest.raises(ShardError, match=expected):
            build_train_loader(make_cfg(folder), rank=0, world_size=1)
        report = validate_mds_dataset(folder)
        assert len(report.problems) == 1 and re.search(expected, report.problems[0].problem)


def _imports(path: Path) -> list[str]:
    """Every module a file imports, function-local imports included, as absolute dotted names."""
    import ast

    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            out += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return out


def test_export_and_training_share_checkpoint_reading_without_a_cycle():
    for name in ("export.py", "checkpoints.py"):
        reached = [m for m in _imports(SRC / name) if m.startswith(("modernbert_pretrain.train", "composer"))]
        assert reached == [], name
    for path in (SRC / "train").glob("*.py"):
        private = [m for m in _imports(path) if m.startswith("modernbert_pretrain.export.")
                   and m.rsplit(".", 1)[-1].startswith("_")]
        assert private == [], path.name
    assert "modernbert_pretrain.checkpoints" in _imports(SRC / "train" / "builder.py")
