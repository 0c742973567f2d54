"""Library side of the data_prep scripts (corpus, tokenizer, MDS shards, validation)."""
