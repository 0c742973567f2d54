"""Training throughput: our packed ModernBERT against transformers' ModernBertForMaskedLM, same tokens.

Each measurement trains one model for a few steps (forward, backward, optimizer step) on synthetic packed
batches and reports real tokens/s, MFU and peak memory. Configurations: base at 1024, large at 1024, and base
with documents up to 8192 tokens. `bench/train_throughput.py` is the command line; `bench/README.md` explains
the figures.

Modules
    configs  the three configurations, their document-length distributions, the variants and the sweep
    data     document lengths, row packing (the trainer's BestFitPacker), masking (the trainer's MLMMasker)
             and the microbatches in both layouts
    models   both models and their optimizers (the trainer's StableAdamW and parameter groups)
    runner   one timed measurement per variant, and the loop over the plan
    report   the progress lines, the tables and the JSON summary
    cli      arguments and the plan

Data (identical for both models)
    Document lengths come from a heavy-tailed mixture: a lognormal body plus a Pareto tail. A document longer
    than the sequence length is split into sequence-length chunks (the tail is kept, as our data pipeline does).
    The trainer's packer (modernbert_pretrain.data.BestFitPacker, 1024 pending pieces) packs them best-fit
    into rows of `seq_len` tokens, after 2000 warm-up rows that reach its steady state; packing efficiency is
    real tokens / (rows * seq_len). Each document is [CLS] body [SEP]; the trainer's masker
    (modernbert_pretrain.data.MLMMasker) masks 30% of non-special tokens (80% [MASK], 10% random, 10%
    unchanged), which then carry a label.

    * ours: the real tokens of all rows as one flat stream, `cu_seqlens` at document boundaries, so attention
      never crosses a document. With static shapes (default) each row's padding tail is kept as one extra
      document with no labels, so every batch has the same token count; the padding is computed but not
      counted as real tokens. Compiled runs pass `max_seqlen = seq_len` (an upper bound, so the value never
      changes); eager runs pass the longest document. The document count varies and is marked dynamic.
    * transformers: one row per packed row, padded to `seq_len`, attention_mask 1 on real tokens. It cannot
      isolate the documents of a row (it has no packed-sequence mask with sdpa), so its documents attend to
      each other; that is the layout the reference figures were measured with (full rows) and the cheapest
      one for it (one row per document would pad most of every row). Only real tokens are counted.

Timing
    All batches are built and moved to the device before timing. Warmup steps (compilation included) are
    followed by timed steps between two `torch.cuda.synchronize()` calls; nothing syncs the host inside the
    timed loop (the model is built with `validate_inputs=False`). GPU runs use bf16 autocast.

FLOP count
    modernbert_pretrain.model.flops.training_flops, the count behind the trainer's MFU, over the documents
    and masked tokens of each batch; it is the same for both models on the same batch (the cross-document
    attention and padding that transformers computes are not counted). MFU = FLOPs per second /
    --peak-tflops (989 TFLOP/s: H100 SXM dense bf16).
"""
