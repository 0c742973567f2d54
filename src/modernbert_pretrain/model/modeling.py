"""ModernBertModel and ModernBertForMaskedLM on flat, unpadded token streams."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import IGNORE_INDEX
from .attention import doc_layout, prepare_backend, resolve_backend
from .config import ModernBertConfig
from .init import initialize_weights
from .layers import ModernBertEmbeddings, ModernBertEncoderLayer, ModernBertPredictionHead
from .loss import decoder_masked_lm_loss


def _never_compiled(fn):
    """``torch.compiler.disable(fn)``, applied at the first call: decorating at import would import
    torch._dynamo (1.7 s on a 2-core CPU) in every process that only builds, exports or plans a model."""
    disabled = None

    @functools.wraps(fn)
    def call(*args, **kwargs):
        nonlocal disabled
        if disabled is None:
            disabled = torch.compiler.disable(fn)
        return disabled(*args, **kwargs)

    return call


@dataclass
class MaskedLMOutput:
    """`logits` is (batch, seq, vocab) for padded input, (total_tokens, vocab) for unpadded input, and
    (masked_tokens, vocab) when labels are given (sparse prediction); None when the caller passed
    `return_logits=False` and CPU training ran the decoder fused with the loss (model/loss.py). `loss` is the mean cross-entropy over positions
    whose label is not IGNORE_INDEX; `predictions` is each masked position's top-1 token."""

    logits: torch.Tensor | None
    loss: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    num_masked: int | None = None
    predictions: torch.Tensor | None = None
    """With labels: the top-1 token of each masked position (masked_tokens,), the first maximum of its logits."""

    def __getitem__(self, key: str):
        return getattr(self, key)


def _flatten_output(out: MaskedLMOutput):
    return [out.logits, out.loss, out.last_hidden_state, out.predictions], out.num_masked


def _unflatten_output(values, num_masked) -> MaskedLMOutput:
    logits, loss, hidden, predictions = values
    return MaskedLMOutput(logits=logits, loss=loss, last_hidden_state=hidden, num_masked=num_masked,
                          predictions=predictions)


# FSDP2 finds the tensors of a module's output with torch's pytree functions and hooks their backward: that
# hook gathers the sharded parameters for backward and queues the reduce-scatter of their gradients. An
# output class pytree does not know is a leaf, so no hook fires, the gradients stay on the gathered
# (unsharded) parameters and the optimizer's sharded ones get none: FSDP then trains without learning
# (measured: 2 ranks, gloo, loss flat at 9.02 while DDP fell to 7.84). Registering the class is the fix;
# tests/test_fsdp.py checks it.
torch.utils._pytree.register_pytree_node(MaskedLMOutput, _flatten_output, _unflatten_output)


def unpad(input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """(batch, seq) with a 0/1 mask -> flat ids, indices into batch*seq, cu_seqlens, max_seqlen."""
    mask = attention_mask.bool()
    lengths = mask.sum(dim=1, dtype=torch.int32)
    indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
    cu_seqlens = F.pad(torch.cumsum(lengths, dim=0, dtype=torch.int32), (1, 0))
    max_seqlen = int(lengths.max().item()) if lengths.numel() else 0
    return input_ids.flatten()[indices], indices, cu_seqlens, max_seqlen


def repad(flat: torch.Tensor, indices: torch.Tensor, batch: int, seq: int) -> torch.Tensor:
    """(total_tokens, ...) -> (batch, seq, ...) with zeros at padding."""
    out = flat.new_zeros(batch * seq, *flat.shape[1:])
    out[indices] = flat
    return out.view(batch, seq, *flat.shape[1:])


def positions_from_cu_seqlens(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Positions restart at 0 at every document boundary."""
    return doc_layout(cu_seqlens, total)[1]


class ModernBertModel(nn.Module):
    def __init__(self, config: ModernBertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = ModernBertEmbeddings(config)
        self.layers = nn.ModuleList(ModernBertEncoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self._resolved_backend: str | None = None

    def set_attn_backend(self, name: str) -> None:
        for layer in self.layers:
            layer.attn.backend = name
        self._resolved_backend = name

    @property
    def attn_backend(self) -> str | None:
        return self._resolved_backend

    def resolve_attn_backend(self, device: torch.device, dtype: torch.dtype) -> str:
        """Turn the configured backend (possibly `auto`) into a concrete one for this device and compute
        dtype, and use it in every layer. Callers that compile do this first, outside the traced forward."""
        cfg = self.config
        name = resolve_backend(
            cfg.attn_backend, device=device, dtype=dtype,
            needs_window=cfg.num_hidden_layers > 1 and cfg.global_attn_every_n_layers > 1,
            needs_dropout=cfg.attention_dropout > 0,
        )
        self.set_attn_backend(name)
        return name

    @_never_compiled
    def _resolve_on_first_call(self, hidden: torch.Tensor) -> None:
        """For callers that did not resolve first; never traced (a compiled forward runs it eagerly)."""
        kind = hidden.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else hidden.dtype
        self.resolve_attn_backend(hidden.device, dtype)

    def rope_tables(self, position_ids: torch.Tensor) -> dict:
        """cos/sin per token for the global and local bases, computed once per forward."""
        tables = {}
        for layer in self.layers:
            attn = layer.attn
            key = "global" if attn.is_global else "local"
            if key not in tables:
                tables[key] = attn.rotary_emb(position_ids)
            if len(tables) == 2:
                break
        return tables

    def forward(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int) -> torch.Tensor:
        """input_ids: (total_tokens,) -> hidden: (total_tokens, hidden)."""
        hidden = self.embeddings(input_ids)
        if self._resolved_backend is None:
            self._resolve_on_first_call(hidden)
        position_ids = positions_from_cu_seqlens(cu_seqlens, input_ids.shape[0])
        cos_sin = self.rope_tables(position_ids)
        # Built once per forward and window kind (flex: block masks), shared by the layers of that kind.
        prepared = prepare_backend(self._resolved_backend, cu_seqlens, input_ids.shape[0], max_seqlen,
                                   {layer.attn.window for layer in self.layers})
        for layer in self.layers:
            hidden = layer(hidden, cos_sin, cu_seqlens, max_seqlen, prepared)
        return self.final_norm(hidden)


class ModernBertForMaskedLM(nn.Module):
    """ModernBERT encoder with its MLM head; the decoder is tied to the token embedding unless
    `config.tie_word_embeddings` is false."""

    def __init__(self, config: ModernBertConfig, *, init: bool = True) -> None:
        super().__init__()
        self.config = config
        self.model = ModernBertModel(config)
        self.head = ModernBertPredictionHead(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
        self.tie_weights()
        if init:
            initialize_weights(self, config)

    # ------------------------------------------------------------------ HF-style interop
    def save_pretrained(self, out_dir, **kwargs) -> None:
        from .hf import save_pretrained

        save_pretrained(self, out_dir, **kwargs)

    @classmethod
    def from_pretrained(cls, path, **config_overrides) -> ModernBertForMaskedLM:
        from .hf import from_pretrained

        return from_pretrained(cls, path, **config_overrides)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def tie_weights(self) -> None:
        """Share the token embedding with the decoder; nothing to do for an untied decoder."""
        if self.config.tie_word_embeddings:
            self.decoder.weight = self.model.embeddings.tok_embeddings.weight

    # ----------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        return_hidden: bool = False,
        return_logits: bool = True,
    ) -> MaskedLMOutput:
        """`return_logits=False` (with labels): the caller needs only loss and predictions, so CPU training may
        run the decoder fused with the loss and never write the masked rows' logits (`logits` is then None)."""
        padded_shape = None
        indices = None
        if input_ids.dim() == 2:
            if cu_seqlens is not None:
                raise ValueError("input_ids is (batch, seq) but cu_seqlens was given: pass flat input_ids of shape "
                                 "(total_tokens,) with cu_seqlens, or padded input with attention_mask")
            batch, seq = input_ids.shape
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                                 f"{tuple(input_ids.shape)}; they must match")
            if labels is not None and labels.shape != input_ids.shape:
                raise ValueError(f"labels has shape {tuple(labels.shape)} but input_ids has {tuple(input_ids.shape)}")
            padded_shape = (batch, seq)
            flat_labels = None if labels is None else labels.flatten()
            input_ids, indices, cu_seqlens, max_seqlen = unpad(input_ids, attention_mask)
            if flat_labels is not None:
                labels = flat_labels[indices]
        elif input_ids.dim() == 1:
            if cu_seqlens is None:
                cu_seqlens = torch.tensor([0, input_ids.shape[0]], dtype=torch.int32, device=input_ids.device)
            if max_seqlen is None:
                max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max().item())
            if attention_mask is not None:
                raise ValueError("attention_mask is only for padded (batch, seq) input; flat input uses cu_seqlens")
            if labels is not None and labels.shape != input_ids.shape:
                raise ValueError(f"labels has shape {tuple(labels.shape)} but input_ids has {tuple(input_ids.shape)}")
        else:
            raise ValueError(f"input_ids must be (batch, seq) or flat (total_tokens,), got shape {tuple(input_ids.shape)}")
        if self.config.validate_inputs:
            self._validate(input_ids, cu_seqlens, max_seqlen)

        hidden = self.model(input_ids, cu_seqlens, max_seqlen)  # (total_tokens, hidden)
        return self._head_and_loss(hidden, labels, padded_shape, indices, return_hidden, return_logits)

    def _head_and_loss(self, hidden, labels, padded_shape, indices, return_hidden, return_logits) -> MaskedLMOutput:
        if labels is None:
            logits = self.decoder(self.head(hidden))  # (total_tokens, vocab)
            if padded_shape is not None:
                logits = repad(logits, indices, *padded_shape)
            kept = repad(hidden, indices, *padded_shape) if (return_hidden and padded_shape) else hidden
            return MaskedLMOutput(logits=logits, last_hidden_state=kept if return_hidden else None)
        # Sparse prediction: the head and decoder only see positions with a label.
        selected = torch.nonzero(labels != IGNORE_INDEX, as_tuple=False).flatten()
        # logits: (masked_tokens, vocab), or None where CPU training fuses the decoder with the loss
        logits, loss, predictions = decoder_masked_lm_loss(self.head(hidden[selected]), self.decoder,
                                                           labels[selected], may_fuse=not return_logits)
        return MaskedLMOutput(logits=logits, loss=loss, num_masked=int(selected.numel()), predictions=predictions,
                              last_hidden_state=hidden if return_hidden else None)

    def _validate(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int) -> None:
        cfg = self.config
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
        if input_ids.numel() == 0:
            raise ValueError("input_ids is empty: nothing to run")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
            raise ValueError(f"cu_seqlens must be 1-D with at least 2 entries, got shape {tuple(cu_seqlens.shape)}")
        lo, hi = int(input_ids.min().item()), int(input_ids.max().item())
        if lo < 0 or hi >= cfg.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {cfg.vocab_size}); the tokenizer and "
                             "the model's vocab_size disagree")
        lengths = cu_seqlens[1:] - cu_seqlens[:-1]
        if int(cu_seqlens[0]) != 0 or int(cu_seqlens[-1]) != input_ids.shape[0] or bool((lengths < 0).any()):
            raise ValueError(f"cu_seqlens must start at 0, be non-decreasing and end at total_tokens="
                             f"{input_ids.shape[0]}; got {cu_seqlens[:4].tolist()}...{cu_seqlens[-1:].tolist()}")
        longest = int(lengths.max().item())
        if longest > cfg.max_position_embeddings:
            raise ValueError(f"a sequence has {longest} tokens, more than max_position_embeddings="
                             f"{cfg.max_position_embeddings}; split documents in the data pipeline or raise "
                             "max_position_embeddings")
        if max_seqlen < longest:
            raise ValueError(f"max_seqlen={max_seqlen} is smaller than the longest document ({longest})")
