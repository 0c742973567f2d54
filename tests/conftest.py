import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smoke_workdir(tmp_path_factory):
    """The quickstart's data steps, on a 3 MB slice of the embedded corpus: corpus -> tokenizer -> train/val shards.
    Built once per test session through the library functions the data_prep scripts wrap."""
    from modernbert_pretrain.data.prep.corpus import write_corpus
    from modernbert_pretrain.data.prep.to_mds import tokenize_to_mds
    from modernbert_pretrain.data.prep.tokenizer_train import train_tokenizer

    root = tmp_path_factory.mktemp("smoke")
    corpus = root / "corpus"
    corpus.mkdir()
    write_corpus(str(corpus / "all.jsonl"), max_bytes=3_000_000, progress=False)
    lines = (corpus / "all.jsonl").read_text().splitlines(keepends=True)
    (corpus / "val.jsonl").write_text("".join(lines[49::50]))
    (corpus / "train.jsonl").write_text("".join(x for i, x in enumerate(lines) if i % 50 != 49))
    train_tokenizer([str(corpus / "train.jsonl")], str(root / "tokenizer"), vocab_size=8192, progress=False)
    for split in ("train", "val"):
        tokenize_to_mds([str(corpus / f"{split}.jsonl")], str(root / "mds" / split), str(root / "tokenizer"),
                        workers=1, max_seq_len=512, progress=False)
    return root
