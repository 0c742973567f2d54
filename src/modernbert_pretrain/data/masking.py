"""Stage 3: MLM masking of a flat microbatch, vectorized over all its tokens.

Each non-special token is selected with probability ``mask_prob``; a selected token becomes
[MASK] (``mask_token_prob``), a random non-special token (``random_token_prob``) or stays as it is
(the rest). Special tokens ([CLS], [SEP], [PAD], [MASK], [UNK], added special tokens) are never
selected and never drawn as replacements. Labels hold the original id at selected positions and
``IGNORE_INDEX`` elsewhere. The random draws are a pure function of (seed, step, rank, microbatch index).
"""

from __future__ import annotations

import numpy as np

from modernbert_pretrain.constants import IGNORE_INDEX
from modernbert_pretrain.data.tokenizer_info import TokenizerInfo

__all__ = ["IGNORE_INDEX", "MLMMasker"]
_MASK_DOMAIN = 0x4D4C4D  # separates mask streams from other uses of the same seed


class MLMMasker:
    """Applies 80/10/10 masking (configurable) to flat token arrays."""

    def __init__(self, info: TokenizerInfo, mask_prob: float = 0.3, *, mask_token_prob: float = 0.8,
                 random_token_prob: float = 0.1, seed: int = 0) -> None:
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        if mask_token_prob < 0 or random_token_prob < 0 or mask_token_prob + random_token_prob > 1 + 1e-9:
            raise ValueError(f"mask_token_prob={mask_token_prob} and random_token_prob={random_token_prob} "
                             f"must be >= 0 and sum to at most 1")
        self.mask_prob = mask_prob
        self.mask_token_prob = mask_token_prob
        self.random_token_prob = random_token_prob
        self.seed = seed
        self.mask_id = info.mask_id
        self.is_special = info.special_lookup()  # (vocab,) bool
        self.replacements = info.replacement_ids()  # (n_non_special,) int64
        if self.replacements.size == 0:
            raise ValueError(f"tokenizer {info.name} has no non-special tokens to draw replacements from")

    def rng(self, step: int, rank: int, index: int) -> np.random.Generator:
        seq = np.random.SeedSequence([self.seed, _MASK_DOMAIN, step, rank, index])
        return np.random.Generator(np.random.PCG64(seq))

    def __call__(self, ids: np.ndarray, *, step: int, rank: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Mask ``ids`` (n,) int64. Returns (input_ids (n,), labels (n,)), both int64.

        The random stream is seeded from (seed, step, rank, index) alone, so the mask of a
        microbatch depends only on those and its tokens."""
        rng = self.rng(step, rank, index)
        n = ids.size
        selectable = ~self.is_special[ids]  # (n,) bool
        selected = np.flatnonzero((rng.random(n, dtype=np.float32) < self.mask_prob) & selectable)  # (k,)
        labels = np.full(n, IGNORE_INDEX, dtype=np.int64)
        labels[selected] = ids[selected]
        inputs = ids.copy()
        action = rng.random(selected.size, dtype=np.float32)  # (k,): which of the three treatments
        inputs[selected[action < self.mask_token_prob]] = self.mask_id
        cut = self.mask_token_prob + self.random_token_prob
        randomized = selected[(action >= self.mask_token_prob) & (action < cut)]
        inputs[randomized] = self.replacements[rng.integers(0, self.replacements.size, randomized.size)]
        return inputs, labels
