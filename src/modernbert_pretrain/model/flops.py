"""Model FLOPs of a training step, the one count behind every MFU figure (trainer metrics and benchmark).

Per step, forward + backward = 3 x forward:
- dense: 6 x non-embedding parameters per real token (every matmul of the encoder layers);
- attention: 12 x hidden x (attended keys) per token and layer, where a token of a document of length L
  attends L keys in a global layer and min(local_attention + 1, L) in a sliding-window layer;
- MLM head (dense + tied decoder) on the masked tokens only: 6 x (hidden^2 + hidden x vocab) each.
For base at 1024-token documents with 30% masking this is about 825 MFLOP per token (docs/flops.md,
"Worked example").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .config import ModernBertConfig

_EMBEDDING_AND_HEAD = ("model.embeddings.tok_embeddings.", "head.", "decoder.")


def non_embedding_params(cfg: ModernBertConfig) -> int:
    """Encoder layers and norms; not the token embedding and not the MLM head."""
    from .modeling import ModernBertForMaskedLM

    with torch.device("meta"):
        model = ModernBertForMaskedLM(cfg, init=False)
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(_EMBEDDING_AND_HEAD))


def training_flops(cfg: ModernBertConfig, doc_lengths: Sequence[int] | np.ndarray, masked: int,
                   n_params: int | None = None) -> float:
    """FLOPs of one forward + backward over documents of these lengths with `masked` labelled tokens."""
    lengths = np.asarray(doc_lengths, dtype=np.float64)
    n_params = non_embedding_params(cfg) if n_params is None else n_params
    d = cfg.hidden_size
    n_global = sum(cfg.is_global_layer(i) for i in range(cfg.num_hidden_layers))
    n_local = cfg.num_hidden_layers - n_global
    keys = n_global * lengths + n_local * np.minimum(cfg.local_attention + 1, lengths)  # per token, all layers
    attention = 12.0 * d * float((lengths * keys).sum())
    dense = 6.0 * n_params * float(lengths.sum())
    head = 6.0 * (d * d + d * cfg.vocab_size) * masked
    return dense + attention + head
