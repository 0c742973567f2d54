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
