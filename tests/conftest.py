import os
import shutil
from pathlib import Path

import pytest
import torch
from filelock import FileLock

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# The files that take longest (pytest --durations, 2 CPU cores), longest first. Under pytest-xdist with
# --dist loadfile each file runs whole on one worker in collection order, so these start first and the short
# files fill in around them; otherwise a long file picked up last would leave the other worker idle.
LONG_FIRST = ["test_evaluate_embedded", "test_launch", "test_fsdp", "test_train_resume", "test_train_e2e",
              "test_faults", "test_export", "test_train_compile", "test_train_trust", "test_evaluate"]


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):
        # pytest-xdist would otherwise order the files by their number of tests, not by LONG_FIRST
        config.option.loadscopereorder = False
    # Inductor compiles in this process instead of starting a pool of compile workers (each a fresh Python that
    # imports torch) in every test process that compiles: test_train_compile + test_train_memory took 113.7 s
    # instead of 132.5 s (one thread, 2-core machine). Subprocesses inherit it.
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:  # one share of the cores per worker: two workers at 2 threads each slow each other down
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


def _long_first(item) -> int:
    name = item.path.stem
    return LONG_FIRST.index(name) if name in LONG_FIRST else len(LONG_FIRST)


def shared_folder(tmp_path_factory, name: str, build) -> Path:
    """`<name>/`, made by `build(folder)` once per test run. Under pytest-xdist it lives in the run's own temporary
    folder, above every worker's, and the first worker to ask builds it while any other waits for it."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # .../pytest-N/: this run's, shared by its workers (each has popen-gwK/ below it)
    folder, done = base / name, base / f"{name}.complete"
    with FileLock(str(base / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed part-way
            build(folder)
            done.touch()
    return folder


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


# The smoke recipe's phase 1 (9.8M tokens; beside the other xdist worker about 8 minutes on a 2-core Intel Xeon and
# 12 on a 2-core AMD EPYC, the longest piece of the test run and 30% of its CPU time: docs/testing.md). Code
# search needs it: on this corpus slice the trained model clears random init by the test's 0.05 with room only
# at that much training (nDCG@10 0.301 at 8.2M, 0.333 at 9.8M, random init 0.231; docs/evaluation.md). Word
# order passes far earlier (0.52 at 412k, 0.93 at 1.23M on the quickstart's corpus).
PRETRAIN = ["max_tokens=9830400", "save.interval=9830400tok", "eval=null"]


@pytest.fixture(scope="session")
def pretrained_smoke(smoke_workdir, tmp_path_factory) -> Path:
    """A tiny model after the smoke recipe's phase 1 on the smoke corpus, exported: trained once per test run
    and shared by every test that needs a trained model to measure."""
    from modernbert_pretrain.checkpoints import list_checkpoints
    from modernbert_pretrain.export import export_checkpoint

    from .train_helpers import run_train

    def build(folder: Path) -> None:
        work = folder / "w"
        shutil.copytree(smoke_workdir, work, ignore=shutil.ignore_patterns("corpus"))
        run_train("smoke/phase1.yaml", work, *PRETRAIN, timeout=1800)
        export_checkpoint(list_checkpoints(work / "checkpoints" / "smoke-phase1")[-1], folder / "hf")

    (export,) = (shared_folder(tmp_path_factory, "pretrained-smoke", build) / "hf").glob("step*")
    return export


@pytest.fixture(scope="session")
def eval_corpus(smoke_workdir, tmp_path_factory) -> Path:
    """The embedded tasks' data folder. train.jsonl: the smoke run's training split. val.jsonl: its held-out split
    plus the documents that follow the 3 MB smoke corpus in the full one (never seen in training), so that code
    search has enough queries."""
    from modernbert_pretrain.data.prep.corpus import write_corpus

    root = tmp_path_factory.mktemp("eval-corpus")
    seen = (smoke_workdir / "corpus" / "all.jsonl").read_text().splitlines(keepends=True)
    write_corpus(str(root / "more.jsonl"), max_bytes=4_000_000, progress=False)
    more = (root / "more.jsonl").read_text().splitlines(keepends=True)
    assert more[:len(seen)] == seen
    shutil.copy(smoke_workdir / "corpus" / "train.jsonl", root / "train.jsonl")
    (root / "val.jsonl").write_text((smoke_workdir / "corpus" / "val.jsonl").read_text() + "".join(more[len(seen):]))
    return root
