"""The exported folder as transformers loads it, and the short contrastive fine-tune (in-batch negatives)
that code search uses.

Both models of a comparison get exactly the same data, steps, batch size and learning rate; the run seed fixes
the example order, so a run is repeatable on the same machine.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .base import TaskError


def seed_all(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def load_encoder(model_dir: str, device: str):
    """(tokenizer, transformers' ModernBertModel) of an exported folder."""
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModel.from_pretrained(model_dir, attn_implementation="sdpa")
    except (OSError, ValueError) as err:
        raise TaskError(f"{model_dir}: transformers cannot load it: {err}") from err
    return tokenizer, model.to(device)


def encode(tokenizer, texts: Sequence[str], max_len: int, device: str) -> dict[str, torch.Tensor]:
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}


def mean_pool(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    hidden = model(**batch).last_hidden_state  # (batch, seq, hidden)
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (batch, hidden)


@torch.no_grad()
def embed(model, tokenizer, texts: Sequence[str], *, max_len: int, batch_size: int, device: str) -> torch.Tensor:
    """L2-normalised mean-pooled embeddings, (len(texts), hidden)."""
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        out.append(F.normalize(mean_pool(model, encode(tokenizer, texts[i:i + batch_size], max_len, device)), dim=-1))
    return torch.cat(out)


def _optimizer(params, lr: float, steps: int):
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    # linear warmup over the first 10% of steps, then linear decay to 0
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    return opt, sched


def _batches(n: int, batch_size: int, steps: int, rng: random.Random):
    """``steps`` index batches of ``batch_size`` drawn without replacement, reshuffled each pass."""
    if n < batch_size:
        raise TaskError(f"only {n} fine-tuning examples for a batch of {batch_size}")
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:
            fresh = list(range(n))
            rng.shuffle(fresh)
            order = fresh
        yield order[:batch_size]
        order = order[batch_size:]


def contrastive_finetune(model, tokenizer, queries: Sequence[str], docs: Sequence[str], *, steps: int,
                         batch_size: int, lr: float, scale: float, max_len_query: int, max_len_doc: int,
                         seed: int, device: str) -> None:
    """In-batch-negatives (InfoNCE) fine-tune on (query, doc) pairs: each query's positive is its own doc and
    the batch's other docs are its negatives."""
    if steps <= 0:
        return
    rng = random.Random(seed)
    model.train()
    opt, sched = _optimizer(model.parameters(), lr, steps)
    labels = torch.arange(batch_size, device=device)
    for idx in _batches(len(queries), batch_size, steps, rng):
        q = F.normalize(mean_pool(model, encode(tokenizer, [queries[i] for i in idx], max_len_query, device)), dim=-1)
        d = F.normalize(mean_pool(model, encode(tokenizer, [docs[i] for i in idx], max_len_doc, device)), dim=-1)
        loss = F.cross_entropy(scale * q @ d.T, labels)  # (batch, batch) similarities
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
