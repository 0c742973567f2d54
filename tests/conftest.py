import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# The files that take longest (pytest --durations, 2 CPU cores), longest first. Under pytest-xdist with
# --dist loadfile each file runs whole on one worker in collection order, so these start first and the short
# files fill in around them; otherwise a long file picked up last would leave the other worker idle.
LONG_FIRST = ["test_evaluate_embedded", "test_launch", "test_fsdp", "test_train_resume", "test_train_e2e",
              "test_faults", "test_export", "test_train_compile", "test_train_trust", "test_evaluate"]


def pytest_configure(config):
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:  # one share of the cores per worker: two workers at 2 threads each slow each other down
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


def _long_first(item) -> int:
    name = item.path.stem
    return LONG_FIRST.index(name) if name in LONG_FIRST else len(LONG_FIRST)


def pytest_collection_modifyitems(config, items):
    items.sort(key=_long_first)  # stable: the order inside a file is kept
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
