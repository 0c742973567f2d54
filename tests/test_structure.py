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
