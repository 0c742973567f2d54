"""Train a byte-level BPE tokenizer with ModernBERT's special tokens.

The result is a folder ``transformers.AutoTokenizer`` loads (tokenizer.json, tokenizer_config.json,
special_tokens_map.json): special tokens [CLS] [SEP] [PAD] [MASK] [UNK] registered as
cls/sep/pad/mask/unk, the template ``[CLS] $A [SEP]`` (pairs: ``[CLS] $A [SEP] $B [SEP]``), [MASK]
with ``lstrip`` as in ModernBERT, and a vocabulary padded with ``[unused<i>]`` special tokens to a
multiple of 64 (embedding tables then split evenly over tensor cores).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from modernbert_pretrain.data.errors import InputDataError
from modernbert_pretrain.data.prep.doc_sample import SampleCounts, sample_documents
from modernbert_pretrain.data.prep.readers import find_input_files, iter_documents

SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]")
VOCAB_MULTIPLE = 64


@dataclass
class TokenizerSummary:
    output: str
    vocab_size: int
    """``len(tokenizer)`` including special and padding tokens (a multiple of 64)."""
    trained_vocab: int
    padding_tokens: int
    documents: int
    empty_documents: int
    special_ids: dict[str, int]
    sample: SampleCounts | None = None
    """Set when --max-docs/--max-bytes sampled the inputs: ``documents`` is then the sample's count."""


def _texts(files: Sequence[str], text_field: str, counts: dict[str, int], bar) -> Iterator[str]:
    for _, _, text in _indexed_texts(files, text_field, counts, bar):
        counts["docs"] += 1
        yield text


def _indexed_texts(files: Sequence[str], text_field: str, counts: dict[str, int],
                   bar) -> Iterator[tuple[str, int, str]]:
    """Non-empty documents as ``(path, index in file, text)``; empty ones are counted and skipped."""
    for path in files:
        for index, text in enumerate(iter_documents(path, text_field)):
            if not text.strip():
                counts["empty"] += 1
                continue
            bar.update(1)
            yield path, index, text


def _check_budget(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name}={value!r} must be a positive whole number (or unset to use every document)")


def _build_tokenizer(vocab_size: int, min_frequency: int):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=True, lstrip=(t == "[MASK]"), normalized=False) for t in SPECIAL_TOKENS]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    return tokenizer, trainer


def _finish(tokenizer) -> int:
    """Add the [CLS] $A [SEP] template and pad the vocabulary; returns the padding count."""
    from tokenizers import AddedToken, processors

    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    padding = -size % VOCAB_MULTIPLE
    tokenizer.add_special_tokens([AddedToken(f"[unused{i}]", special=True, normalized=False)
                                  for i in range(padding)])
    return padding


def train_tokenizer(inputs: Sequence[str], output_dir: str, *, vocab_size: int = 8192, text_field: str = "text",
                    min_frequency: int = 2, model_max_length: int = 8192,
                    progress: bool = True, max_docs: int | None = None, max_bytes: int | None = None,
                    seed: int = 0) -> TokenizerSummary:
    """Train on the documents of ``inputs`` (jsonl/jsonl.gz/parquet/txt) and save to ``output_dir``.

    With ``max_docs`` and/or ``max_bytes`` it trains on a uniform sample of the non-empty documents of all
    inputs (seeded by ``seed``, see ``doc_sample``), holding only the sample in memory."""
    from tqdm import tqdm
    from transformers import AddedToken, PreTrainedTokenizerFast

    if vocab_size < 300:
        raise ValueError(f"vocab_size={vocab_size} is too small for byte-level BPE (256 bytes + specials)")
    _check_budget("max_docs", max_docs)
    _check_budget("max_bytes", max_bytes)
    files = find_input_files(inputs)
    tokenizer, trainer = _build_tokenizer(vocab_size, min_frequency)
    counts = {"docs": 0, "empty": 0}
    sample = None
    if max_docs is None and max_bytes is None:
        with tqdm(desc="train tokenizer", unit="doc", disable=not progress) as bar:
            tokenizer.train_from_iterator(_texts(files, text_field, counts, bar), trainer=trainer)
    else:
        with tqdm(desc="sample documents", unit="doc", disable=not progress) as bar:
            texts, sample = sample_documents(_indexed_texts(files, text_field, counts, bar), seed=seed,
                                             max_docs=max_docs, max_bytes=max_bytes)
        counts["docs"] = sample.documents
        if sample.seen_documents and not sample.documents:
            raise ValueError(f"max_bytes={max_bytes} is smaller than the first sampled document; raise it")
        tokenizer.train_from_iterator(texts, trainer=trainer)
        del texts
    if counts["docs"] == 0:
        raise InputDataError(f"no non-empty documents in {list(inputs)}; nothing to train on")
    trained = tokenizer.get_vocab_size(with_added_tokens=True)
    padding = _finish(tokenizer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
        mask_token=AddedToken("[MASK]", lstrip=True, rstrip=False, normalized=False, special=True),
        model_max_length=model_max_length, clean_up_tokenization_spaces=False)
    os.makedirs(output_dir, exist_ok=True)
    fast.save_pretrained(output_dir)
    if len(fast) % VOCAB_MULTIPLE:
        raise RuntimeError(f"internal: vocabulary of {len(fast)} is not a multiple of {VOCAB_MULTIPLE}")
    return TokenizerSummary(
        output=output_dir, vocab_size=len(fast), trained_vocab=trained, padding_tokens=padding,
        documents=counts["docs"], empty_documents=counts["empty"],
        special_ids={t: fast.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}, sample=sample)
