"""A random-init model folder of the same size as an exported one: the reference a trained checkpoint must
beat. Same config.json and tokenizer, weights from the model's own initialisation (the one training starts
from), seeded."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch

from ..export import METADATA_NAME
from ..model import ModernBertForMaskedLM
from ..model.hf import CONFIG_NAME, load_hf_config

RANDOM_PHASE = "random-init"


def random_init_name(like: str | Path, seed: int) -> str:
    """Folder name: one per (architecture, tokenizer, seed), so equal-sized exports share one baseline."""
    like = Path(like)
    digest = hashlib.sha256((like / CONFIG_NAME).read_bytes())
    for name in ("tokenizer.json", "vocab.txt"):
        if (like / name).is_file():
            digest.update((like / name).read_bytes())
    return f"random-init-{digest.hexdigest()[:10]}-seed{seed}"


def write_random_init(like: str | Path, out_root: str | Path, *, seed: int = 0) -> Path:
    """Write (once) ``out_root/random-init-<hash>-seed<seed>/`` with the config and tokenizer of ``like`` and
    freshly initialised weights. Written under a temporary name and renamed when complete."""
    from transformers import AutoTokenizer

    like, out_root = Path(like), Path(out_root)
    target = out_root / random_init_name(like, seed)
    if (target / METADATA_NAME).is_file():
        return target
    out_root.mkdir(parents=True, exist_ok=True)
    config = load_hf_config(like)
    torch.manual_seed(seed)
    model = ModernBertForMaskedLM(config)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=out_root))
    try:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(like).save_pretrained(tmp)
        meta = {"phase": RANDOM_PHASE, "step": 0, "tokens_seen": 0, "total_tokens_seen": 0,
                "random_init_of": str(like.resolve()), "seed": seed}
        (tmp / METADATA_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        try:
            tmp.rename(target)
        except OSError:
            if not (target / METADATA_NAME).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
