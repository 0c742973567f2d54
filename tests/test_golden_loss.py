"""Golden loss curve of a short deterministic run on a synthetic corpus (independent of the Python version).

A change that moves this curve must say why in its commit, then regenerate the file:
    UPDATE_GOLDEN=1 pytest tests/test_golden_loss.py
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from .train_helpers import metrics, run_train

GOLDEN = Path(__file__).parent / "golden" / "smoke_loss.json"
STEPS = 12
OVERRIDES = [f"max_tokens={STEPS * 32 * 128}", "data.batch_size_warmup_start=null", "eval=null",
             "scheduler.warmup_tokens=4096", "save.interval=1000ba", "model.attention_output_dropout=0.1"]


def _synthetic_corpus(path: Path, docs: int = 1500) -> None:
    """Zipf-distributed words in sentences, documents of very different lengths, from a fixed seed."""
    rng = np.random.default_rng(1234)
    letters = np.array(list("etaoinshrdlucmfwypvbgkqjxz"))
    words = ["".join(rng.choice(letters, size=int(rng.integers(1, 9)))) for _ in range(3000)]
    with path.open("w") as f:
        for _ in range(docs):
            n = int(min(rng.lognormal(4.0, 1.0), 2000)) + 3
            ids = np.minimum(rng.zipf(1.3, size=n) - 1, len(words) - 1)
            text = " ".join(words[i] for i in ids)
            f.write(json.dumps({"text": text.capitalize() + "."}) + "\n")


@pytest.fixture(scope="module")
def synthetic_workdir(tmp_path_factory):
    from modernbert_pretrain.data.prep.to_mds import tokenize_to_mds
    from modernbert_pretrain.data.prep.tokenizer_train import train_tokenizer

    root = tmp_path_factory.mktemp("golden")
    _synthetic_corpus(root / "corpus.jsonl")
    train_tokenizer([str(root / "corpus.jsonl")], str(root / "tokenizer"), vocab_size=2048, progress=False)
    tokenize_to_mds([str(root / "corpus.jsonl")], str(root / "mds" / "train"), str(root / "tokenizer"),
                    workers=1, max_seq_len=512, progress=False)
    return root


def test_loss_curve_matches_golden(synthetic_workdir, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(synthetic_workdir, work)
    run_train("smoke/phase1.yaml", work, *OVERRIDES, f"logging.metrics_file={work / 'm.jsonl'}")
    losses = [round(m["loss"], 6) for m in metrics(work / "m.jsonl")]
    assert len(losses) == STEPS
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps({"steps": STEPS, "overrides": OVERRIDES, "loss": losses}, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert golden["overrides"] == OVERRIDES
    # Float summation order may differ between CPUs; a real change of the curve moves it far more.
    np.testing.assert_allclose(losses, golden["loss"], rtol=0, atol=2e-3)
