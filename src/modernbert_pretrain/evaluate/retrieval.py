"""Retrieval: a short contrastive fine-tune with Sentence Transformers, then nDCG@10 / MRR@10 on BEIR data.

A local BEIR folder (``<data_dir>/<name>/``) holds what BEIR writes: ``corpus.jsonl`` (_id, text, optional
title, joined as "title text"), ``queries.jsonl`` (_id, text) and ``qrels/<split>.tsv`` (query-id, corpus-id,
score with a header row). Without a data folder, ``nanobeir-<name>`` tasks load the NanoBEIR collection from
the Hub. Settings live in yamls/eval/retrieval.yaml.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from .glue import build_settings, read_settings, settings_file, use_bf16
from .tasks.base import RunArgs, TaskError, TaskSpec

# NanoBEIR split names (as Sentence Transformers' NanoBEIREvaluator spells them) by our lower-case name.
NANOBEIR = {
    "arguana": "NanoArguAna", "climatefever": "NanoClimateFEVER", "dbpedia": "NanoDBPedia", "fever": "NanoFEVER",
    "fiqa2018": "NanoFiQA2018", "hotpotqa": "NanoHotpotQA", "msmarco": "NanoMSMARCO", "nfcorpus": "NanoNFCorpus",
    "nq": "NanoNQ", "quoraretrieval": "NanoQuoraRetrieval", "scidocs": "NanoSCIDOCS", "scifact": "NanoSciFact",
    "touche2020": "NanoTouche2020",
}
_PAIR_FORMATS = {".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass(frozen=True)
class PairSettings:
    hub_dataset: str = "sentence-transformers/natural-questions"
    """Hub pair dataset used when ``local`` is null."""
    hub_subset: str | None = None
    """Its configuration name, if it has several."""
    split: str = "train"
    """Its split."""
    columns: tuple[str, str] = ("query", "answer")
    """(anchor, positive) column names."""
    local: str | None = None
    """A local .jsonl/.parquet/.csv pair file (relative to the settings YAML) instead of the Hub dataset."""
    max_pairs: int = 20000
    """Pairs to train on (a fixed seed-0 shuffle, then the first N); 0 skips the fine-tune."""

    def __post_init__(self):
        if self.max_pairs < 0:
            raise ValueError(f"max_pairs must be >= 0, got {self.max_pairs}")


@dataclass(frozen=True)
class RetrievalSettings:
    datasets: tuple[str, ...] = tuple(f"nanobeir-{n}" for n in NANOBEIR)
    """Dataset names; each becomes the task retrieval/<name>."""
    qrels_split: str = "test"
    """Local BEIR folders: the qrels file qrels/<qrels_split>.tsv."""
    hub_dataset: str = "sentence-transformers/NanoBEIR-en"
    """Hub source of nanobeir-* datasets (subsets corpus/queries/qrels, splits Nano<Name>)."""
    pairs: PairSettings = PairSettings()
    """The contrastive fine-tune's pair data."""
    lrs: tuple[float, ...] = (8e-5,)
    """Learning rates; one grid point each."""
    batch_size: int = 64
    """Pairs per step (every other pair's positive is a negative)."""
    epochs: float = 1.0
    """Passes over the pairs."""
    warmup_ratio: float = 0.1
    """Share of steps with linear warmup, then linear decay."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    max_seq_length: int = 256
    """Tokens per text for training and scoring."""
    eval_batch_size: int = 128
    """Batch size when embedding queries and corpus."""
    precision: str = "auto"
    """"auto" (bf16 on a CUDA device that supports it, else fp32), "fp32" or "bf16"."""

    def __post_init__(self):
        if not self.datasets or len(set(self.datasets)) != len(self.datasets):
            raise ValueError(f"datasets must be a non-empty list of distinct names, got {list(self.datasets)}")
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise ValueError(f"lrs must be a non-empty list of positive numbers, got {list(self.lrs)}")
        for name in ("batch_size", "max_seq_length", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2: in-batch negatives need at least two pairs")
        if self.epochs <= 0 or not 0 <= self.warmup_ratio < 1 or self.weight_decay < 0:
            raise ValueError("epochs must be > 0, warmup_ratio in [0, 1) and weight_decay >= 0")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")


def load_retrieval_settings(settings_path: str | None = None) -> RetrievalSettings:
    path = settings_file(settings_path, "retrieval.yaml")
    settings = build_settings(RetrievalSettings, read_settings(path), str(path))
    local = settings.pairs.local
    if local and not Path(local).is_absolute():  # relative to the YAML, never the working directory
        settings = dataclasses.replace(settings, pairs=dataclasses.replace(settings.pairs,
                                                                           local=str(path.parent / local)))
    return settings


# ------------------------------------------------------------------------------------------------ BEIR data
@dataclass(frozen=True)
class BeirData:
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _read_jsonl(path: Path, name: str) -> list[dict]:
    rows = []
    with path.open() as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise TaskError(f"retrieval/{name}: {path} line {line_no} is not JSON ({err.msg})") from err
            if "_id" not in row or "text" not in row:
                raise TaskError(f"retrieval/{name}: {path} line {line_no} lacks '_id' or 'text' (BEIR format)")
            rows.append(row)
    return rows


def _read_qrels(path: Path, name: str) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = {"query-id", "corpus-id", "score"} - set(reader.fieldnames or ())
        if missing:
            raise TaskError(f"retrieval/{name}: {path} lacks header column(s) {sorted(missing)} "
                            "(expected query-id, corpus-id, score)")
        for row in reader:
            try:
                grade = int(float(row["score"]))
            except (TypeError, ValueError) as err:
                raise TaskError(f"retrieval/{name}: {path} line {reader.line_num}: score {row['score']!r} is not "
                                "a number") from err
            qrels.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = grade
    return qrels


def load_local_beir(folder: Path, name: str, split: str) -> BeirData:
    paths = {"corpus": folder / "corpus.jsonl", "queries": folder / "queries.jsonl",
             "qrels": folder / "qrels" / f"{split}.tsv"}
    if not folder.is_dir():
        raise TaskError(f"retrieval/{name}: BEIR folder {folder} does not exist; create it (corpus.jsonl, "
                        f"queries.jsonl, qrels/{split}.tsv) or drop --data-dir to load it from the Hub")
    for path in paths.values():
        if not path.is_file():
            raise TaskError(f"retrieval/{name}: missing {path}; a BEIR folder needs corpus.jsonl, queries.jsonl "
                            f"and qrels/{split}.tsv")
    corpus = {str(r["_id"]): f"{r.get('title') or ''} {r['text']}".strip()
              for r in _read_jsonl(paths["corpus"], name)}
    queries = {str(r["_id"]): str(r["text"]) for r in _read_jsonl(paths["queries"], name)}
    return BeirData(corpus, queries, _read_qrels(paths["qrels"], name))


def load_hub_nanobeir(name: str, hub_dataset: str) -> BeirData:
    import datasets

    short = name.removeprefix("nanobeir-")
    if not name.startswith("nanobeir-") or short not in NANOBEIR:
        raise TaskError(f"retrieval/{name}: no Hub source (only nanobeir-<{'|'.join(NANOBEIR)}>); pass --data-dir "
                        f"with <dir>/{name}/corpus.jsonl, queries.jsonl and qrels/test.tsv")
    split = NANOBEIR[short]
    parts = {}
    for subset in ("corpus", "queries", "qrels"):
        try:
            parts[subset] = datasets.load_dataset(hub_dataset, subset, split=split)
        except Exception as err:  # noqa: BLE001 - offline, auth and missing-split errors all land here
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TaskError(f"retrieval/{name}: cannot load {hub_dataset} {subset}/{split} ({first}); check the "
                            f"network or pass --data-dir with a BEIR folder <dir>/{name}/") from err
    qrels: dict[str, dict[str, int]] = {}
    for row in parts["qrels"]:
        ids = row["corpus-id"] if isinstance(row["corpus-id"], list) else [row["corpus-id"]]
        for doc in ids:
            qrels.setdefault(str(row["query-id"]), {})[str(doc)] = int(row.get("score", 1) or 1)
    corpus = {str(r["_id"]): r["text"] for r in parts["corpus"] if r["text"]}
    queries = {str(r["_id"]): r["text"] for r in parts["queries"] if r["text"]}
    return BeirData(corpus, queries, qrels)


def load_beir(name: str, data_dir: str | None, settings: RetrievalSettings) -> BeirData:
    data = (load_local_beir(Path(data_dir) / name, name, settings.qrels_split) if data_dir
            else load_hub_nanobeir(name, settings.hub_dataset))
    relevant = {q: {d for d, g in docs.items() if g > 0 and d in data.corpus}
                for q, docs in data.qrels.items() if q in data.queries}
    if not any(relevant.values()):
        raise TaskError(f"retrieval/{name}: no query has a relevant document in the corpus; check that the qrels' "
                        "query-id/corpus-id match the _id fields of queries.jsonl/corpus.jsonl")
    return data


# ------------------------------------------------------------------------------------------------ model
def load_pairs(pairs: PairSettings, cache_dir: str):
    """The (anchor, positive) training pairs as a two-column datasets.Dataset."""
    import datasets

    if pairs.local:
        path = Path(pairs.local)
        fmt = _PAIR_FORMATS.get(path.suffix)
        if not path.is_file() or fmt is None:
            raise TaskError(f"retrieval: pair file {path} does not exist or is not .jsonl/.parquet/.csv; fix "
                            "pairs.local in the retrieval settings")
        ds = datasets.load_dataset(fmt, data_files=str(path), split="train", cache_dir=cache_dir)
        where = str(path)
    else:
        try:
            ds = datasets.load_dataset(pairs.hub_dataset, pairs.hub_subset, split=pairs.split)
        except Exception as err:  # noqa: BLE001 - offline, auth and missing-config errors all land here
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TaskError(f"retrieval: cannot load pair dataset {pairs.hub_dataset} ({first}); check the network "
                            "or set pairs.local in the retrieval settings to a local pair file") from err
        where = pairs.hub_dataset
    missing = [c for c in pairs.columns if c not in ds.column_names]
    if missing:
        raise TaskError(f"retrieval: pair data {where} lacks column(s) {missing}; set pairs.columns to two of "
                        f"{ds.column_names}")
    ds = ds.select_columns(list(pairs.columns))
    if pairs.max_pairs < len(ds):
        ds = ds.shuffle(seed=0, keep_in_memory=True).select(range(pairs.max_pairs), keep_in_memory=True)
    return ds.rename_columns(dict(zip(pairs.columns, ("anchor", "positive"))))


def build_encoder(model_dir: str, max_seq_length: int, device: str):
    """The exported transformer + mean pooling as a SentenceTransformer."""
    import inspect

    from sentence_transformers.sentence_transformer import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    try:
        word = Transformer(model_dir, max_seq_length=max_seq_length)
    except (OSError, ValueError) as err:
        raise TaskError(f"retrieval: {model_dir} is not a model folder transformers loads "
                        f"({str(err).strip().splitlines()[0]}); pass an exported folder") from err
    if "token_type_ids" not in inspect.signature(word.model.forward).parameters:
        # ModernBERT takes no token types, but a tokenizer saved without model_input_names emits them and
        # Sentence Transformers passes every tokenizer output on to forward().
        word.tokenizer.model_input_names = ["input_ids", "attention_mask"]
    pool = Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[word, pool], device=device)


def _seeded_no_duplicates(dataset, *, run_seed: int, **kwargs):
    """NoDuplicatesBatchSampler seeded with the run's seed: Sentence Transformers 5.7's trainer builds its
    sampler with seed=0 whatever TrainingArguments.seed says, which would make every seed see the same batches."""
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    return NoDuplicatesBatchSampler(dataset, **{**kwargs, "seed": run_seed})


def finetune_encoder(args: RunArgs, settings: RetrievalSettings, lr: float):
    """Seeded encoder + MultipleNegativesRankingLoss over the pairs (no checkpoints, no logging integrations)."""
    from sentence_transformers.sentence_transformer import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import PrinterCallback, set_seed

    set_seed(args.seed)
    model = build_encoder(args.model_dir, settings.max_seq_length, args.device)
    if settings.pairs.max_pairs == 0:
        return model
    pairs = load_pairs(settings.pairs, str(Path(args.work_dir) / "datasets-cache"))
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(Path(args.work_dir) / "trainer"), seed=args.seed, data_seed=args.seed, learning_rate=lr,
        per_device_train_batch_size=settings.batch_size, num_train_epochs=settings.epochs,
        warmup_ratio=settings.warmup_ratio, weight_decay=settings.weight_decay, lr_scheduler_type="linear",
        # no duplicate text within a batch: it would be a false negative
        batch_sampler=functools.partial(_seeded_no_duplicates, run_seed=args.seed),
        save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True,
        use_cpu=args.device == "cpu", bf16=use_bf16(settings.precision, args.device), dataloader_num_workers=0)
    trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=pairs,
                                         loss=MultipleNegativesRankingLoss(model))
    trainer.remove_callback(PrinterCallback)  # it prints the final train metrics to stdout, the runner's channel
    trainer.train()
    return model.eval()


def score_beir(model, data: BeirData, batch_size: int, name: str = "") -> dict[str, float]:
    """nDCG@10, MRR@10, Recall@10 and MAP@100 (cosine similarity) from Sentence Transformers' evaluator."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    relevant = {q: {d for d, g in docs.items() if g > 0} for q, docs in data.qrels.items()}
    evaluator = InformationRetrievalEvaluator(
        data.queries, data.corpus, relevant, mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[10],
        precision_recall_at_k=[10], map_at_k=[100], batch_size=batch_size, name=name, write_csv=False,
        show_progress_bar=False, score_functions=None, main_score_function="cosine")
    out = evaluator(model)
    prefix = f"{name}_cosine_" if name else "cosine_"
    result = {key: float(out[prefix + key]) for key in ("ndcg@10", "mrr@10", "recall@10", "map@100")}
    result.update(queries=float(len(evaluator.queries_ids)), corpus=float(len(data.corpus)))
    return result


# The last fine-tuned encoder, reused for the next dataset: the key holds everything the fine-tune depends on.
_CACHE: dict[tuple, object] = {}


def _model_key(args: RunArgs, settings: RetrievalSettings, lr: float) -> tuple:
    weights = Path(args.model_dir) / "model.safetensors"
    stamp = weights.stat().st_mtime_ns if weights.is_file() else None
    return (str(Path(args.model_dir).resolve()), stamp, args.seed, lr, args.device, settings.pairs,
            settings.batch_size, settings.epochs, settings.warmup_ratio, settings.weight_decay,
            settings.max_seq_length, settings.precision)


def _encoder(args: RunArgs, settings: RetrievalSettings, lr: float):
    key = _model_key(args, settings, lr)
    if key not in _CACHE:
        _CACHE.clear()  # at most one model in memory while the next one trains
        _CACHE[key] = finetune_encoder(args, settings, lr)
    return _CACHE[key]


def run_retrieval(name: str, settings: RetrievalSettings, args: RunArgs) -> dict[str, float]:
    unknown = sorted(set(args.hparams) - {"lr"})
    if unknown:
        raise TaskError(f"retrieval/{name}: unknown hyper-parameter(s) {unknown}; the retrieval grid only has 'lr'")
    lr = float(args.hparams.get("lr", settings.lrs[0]))
    data = load_beir(name, args.data_dir, settings)  # fails before any fine-tune
    model = _encoder(args, settings, lr)
    return score_beir(model, data, settings.eval_batch_size)


def retrieval_tasks(settings_path: str | None = None) -> list[TaskSpec]:
    """One TaskSpec per dataset of the settings (``retrieval/<name>``, headline nDCG@10)."""
    settings = load_retrieval_settings(settings_path)
    return [TaskSpec(name=f"retrieval/{name}", family="retrieval", metric="ndcg@10",
                     run=functools.partial(run_retrieval, name, settings),
                     grid=tuple({"lr": lr} for lr in settings.lrs))
            for name in settings.datasets]
