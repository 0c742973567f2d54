"""GLUE: fine-tune an exported folder with transformers' Trainer on each task and score its validation split.

Data comes from the Hub (``nyu-mll/glue``) or, with a data folder, from local files in the Hub's schema::

    <data_dir>/<task>/train.jsonl           task: cola sst2 mrpc stsb qqp mnli qnli rte
    <data_dir>/<task>/validation.jsonl      mnli: validation_matched.jsonl + validation_mismatched.jsonl

Each file may instead be .parquet, .csv or .tsv (tab-separated, with a header row, no quoting). Columns are
the Hub's: the task's text column(s) (see ``GLUE``) and ``label`` (int class; a float score for stsb).
Settings (grid, batch size, epochs, ...) live in yamls/eval/glue.yaml.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import metrics
from .tasks.base import RunArgs, TaskError, TaskSpec

REPO_ROOT = Path(__file__).resolve().parents[3]
HUB_DATASET = "nyu-mll/glue"
_FORMATS = {".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".tsv": "csv"}


@dataclass(frozen=True)
class GlueTask:
    columns: tuple[str, ...]
    num_labels: int
    """1 means regression (stsb)."""
    metric: str
    eval_splits: tuple[str, ...] = ("validation",)


GLUE = {
    "cola": GlueTask(("sentence",), 2, "mcc"),
    "sst2": GlueTask(("sentence",), 2, "accuracy"),
    "mrpc": GlueTask(("sentence1", "sentence2"), 2, "f1"),
    "stsb": GlueTask(("sentence1", "sentence2"), 1, "spearman"),
    "qqp": GlueTask(("question1", "question2"), 2, "f1"),
    "mnli": GlueTask(("premise", "hypothesis"), 3, "accuracy", ("validation_matched", "validation_mismatched")),
    "qnli": GlueTask(("question", "sentence"), 2, "accuracy"),
    "rte": GlueTask(("sentence1", "sentence2"), 2, "accuracy"),
}


# ------------------------------------------------------------------------------------------------ settings
def settings_file(settings_path: str | None, default: str) -> Path:
    """A settings YAML: ``default`` (under yamls/eval/) when None; a relative path is taken from the repo root."""
    path = Path(settings_path) if settings_path else REPO_ROOT / "yamls" / "eval" / default
    return path if path.is_absolute() else REPO_ROOT / path


def read_settings(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise TaskError(f"settings file {path} does not exist; pass an existing YAML (see yamls/eval/)")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise TaskError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(values, dict):
        raise TaskError(f"{path}: expected a mapping at the top level")
    return values


@dataclass(frozen=True)
class GlueSettings:
    lrs: tuple[float, ...] = (3e-5,)
    """Learning rates; one grid point each."""
    batch_size: int = 32
    """Train batch size per optimizer step."""
    eval_batch_size: int = 128
    """Batch size for scoring the validation split."""
    epochs: float = 3.0
    """Passes over the training split."""
    max_length: int = 128
    """Tokens per example; pairs are truncated longest-first."""
    warmup_ratio: float = 0.06
    """Share of optimizer steps with linear warmup (then linear decay to 0)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    max_train_examples: int | None = None
    """Cap on training rows (a fixed seed-0 shuffle, then the first N, the same for every run seed); None = all."""
    max_eval_examples: int | None = None
    """Cap on validation rows (the first N of each split); None = all."""
    classifier_pooling: str | None = None
    """"cls" or "mean" for the classification head; None keeps the folder's config."""
    precision: str = "auto"
    """"auto" (bf16 on a CUDA device that supports it, else fp32), "fp32" or "bf16"."""

    def __post_init__(self):
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise ValueError(f"lrs must be a non-empty list of positive numbers, got {list(self.lrs)}")
        for name in ("batch_size", "eval_batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        for name in ("max_train_examples", "max_eval_examples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or null, got {getattr(self, name)}")
        if self.classifier_pooling not in (None, "cls", "mean"):
            raise ValueError(f"classifier_pooling must be 'cls', 'mean' or null, got {self.classifier_pooling!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")


def build_settings(cls, values: dict, where: str):
    from modernbert_pretrain.schema import ConfigError, build

    try:
        return build(cls, values, where)
    except (ConfigError, ValueError) as err:
        raise TaskError(str(err)) from err


def load_glue_settings(settings_path: str | None = None) -> dict[str, GlueSettings]:
    path = settings_file(settings_path, "glue.yaml")
    raw = read_settings(path)
    from modernbert_pretrain.schema import ConfigError, check_keys

    try:
        check_keys(raw, ("defaults", "tasks"), str(path))
        check_keys(raw.get("tasks") or {}, GLUE, f"{path}: tasks")
    except ConfigError as err:
        raise TaskError(str(err)) from err
    defaults = raw.get("defaults") or {}
    tasks = raw.get("tasks") or {}
    return {task: build_settings(GlueSettings, {**defaults, **(tasks.get(task) or {})}, f"{path}: tasks.{task}")
            for task in GLUE}


def with_hparams(settings: GlueSettings, hparams: dict, task_name: str) -> tuple[GlueSettings, float]:
    """The run's settings with a grid point applied: ``lr`` plus any other settings key."""
    allowed = {f.name for f in dataclasses.fields(GlueSettings)} - {"lrs"}
    unknown = sorted(set(hparams) - allowed - {"lr"})
    if unknown:
        raise TaskError(f"{task_name}: unknown hyper-parameter(s) {unknown}; use 'lr' or one of {sorted(allowed)}")
    values = {k: v for k, v in hparams.items() if k != "lr"}
    merged = build_settings(GlueSettings, {**dataclasses.asdict(settings), **values}, task_name)
    lr = float(hparams.get("lr", settings.lrs[0]))
    if lr <= 0:
        raise TaskError(f"{task_name}: lr must be > 0, got {lr}")
    return merged, lr


# ------------------------------------------------------------------------------------------------ data
def _local_file(data_dir: str, task: str, split: str) -> tuple[Path, str]:
    folder = Path(data_dir) / task
    if not folder.is_dir():
        raise TaskError(f"glue/{task}: data folder {folder} does not exist; create it with {split}.jsonl (GLUE "
                        f"columns) or drop --data-dir to download {HUB_DATASET}")
    found = [folder / f"{split}{ext}" for ext in _FORMATS if (folder / f"{split}{ext}").is_file()]
    if not found:
        raise TaskError(f"glue/{task}: no {split} file in {folder}; add {split}.jsonl (or .parquet/.csv/.tsv)")
    if len(found) > 1:
        raise TaskError(f"glue/{task}: several {split} files in {folder} ({[p.name for p in found]}); keep one")
    return found[0], _FORMATS[found[0].suffix]


def load_split(task: str, split: str, data_dir: str | None, cache_dir: str):
    """One split as a datasets.Dataset, read from ``data_dir`` or the Hub."""
    import datasets

    if data_dir is None:
        try:
            return datasets.load_dataset(HUB_DATASET, task, split=split)
        except Exception as err:  # noqa: BLE001 - offline, auth and missing-config errors all land here
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TaskError(f"glue/{task}: cannot load {HUB_DATASET} {task}/{split} ({first}); check the network or "
                            f"pass --data-dir with <dir>/{task}/{split}.jsonl") from err
    path, fmt = _local_file(data_dir, task, split)
    extra = {"delimiter": "\t", "quoting": 3} if path.suffix == ".tsv" else {}  # 3 = csv.QUOTE_NONE, as GLUE's TSVs
    try:
        return datasets.load_dataset(fmt, data_files=str(path), split="train", cache_dir=cache_dir, **extra)
    except Exception as err:  # noqa: BLE001 - pyarrow/pandas parse errors have many types
        raise TaskError(f"glue/{task}: cannot read {path}: {str(err).strip().splitlines()[0]}") from err


def check_split(ds, task: str, split: str, where: str) -> None:
    spec = GLUE[task]
    missing = [c for c in (*spec.columns, "label") if c not in ds.column_names]
    if missing:
        raise TaskError(f"glue/{task}: {where} ({split}) lacks column(s) {missing}; expected {[*spec.columns, 'label']}")
    if len(ds) == 0:
        raise TaskError(f"glue/{task}: {where} ({split}) has no rows")
    labels = np.asarray(ds["label"], dtype=np.float64)
    if spec.num_labels > 1:
        bad = (labels < 0) | (labels >= spec.num_labels) | (labels != np.round(labels))
        if bad.any():
            raise TaskError(f"glue/{task}: {where} ({split}) row {int(np.argmax(bad))} has label "
                            f"{float(labels[bad][0]):g}; labels must be integers 0..{spec.num_labels - 1} (unlabelled "
                            "test rows cannot be used)")
    elif not np.isfinite(labels).all():
        raise TaskError(f"glue/{task}: {where} ({split}) has non-numeric scores in 'label'")


def _tokenized(ds, task: str, tokenizer, max_length: int):
    spec = GLUE[task]
    regression = spec.num_labels == 1

    def encode(batch):
        texts = [batch[c] for c in spec.columns]
        out = tokenizer(*texts, truncation=True, max_length=max_length)
        out["label"] = [float(x) for x in batch["label"]] if regression else [int(x) for x in batch["label"]]
        return out

    return ds.map(encode, batched=True, remove_columns=ds.column_names, keep_in_memory=True)


def _prepare(task: str, args: RunArgs, settings: GlueSettings, tokenizer) -> tuple[object, dict[str, object]]:
    spec = GLUE[task]
    cache = str(Path(args.work_dir) / "datasets-cache")
    where = args.data_dir or HUB_DATASET
    raw = {split: load_split(task, split, args.data_dir, cache) for split in ("train", *spec.eval_splits)}
    for split, ds in raw.items():
        check_split(ds, task, split, where)
    train = raw.pop("train")
    if settings.max_train_examples is not None and settings.max_train_examples < len(train):
        train = train.shuffle(seed=0, keep_in_memory=True).select(range(settings.max_train_examples),
                                                                  keep_in_memory=True)
    if settings.max_eval_examples is not None:
        raw = {s: ds.select(range(min(len(ds), settings.max_eval_examples)), keep_in_memory=True)
               for s, ds in raw.items()}
    train = _tokenized(train, task, tokenizer, settings.max_length)
    return train, {s: _tokenized(ds, task, tokenizer, settings.max_length) for s, ds in raw.items()}


# ------------------------------------------------------------------------------------------------ scoring
def score(task: str, labels: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """Metrics of one validation split from the model's raw outputs, shape (n, num_labels)."""
    if GLUE[task].num_labels == 1:
        preds = outputs.reshape(-1)
        return {"spearman": metrics.spearman(labels, preds), "pearson": metrics.pearson(labels, preds)}
    preds = outputs.argmax(axis=-1)
    labels = labels.astype(np.int64)
    if task == "cola":
        return {"mcc": metrics.mcc(labels, preds), "accuracy": metrics.accuracy(labels, preds)}
    if task in ("mrpc", "qqp"):
        return {"f1": metrics.f1_binary(labels, preds), "accuracy": metrics.accuracy(labels, preds)}
    return {"accuracy": metrics.accuracy(labels, preds)}


def use_bf16(precision: str, device: str) -> bool:
    import torch

    if precision == "fp32" or device == "cpu":
        return precision == "bf16"
    return precision == "bf16" or (torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _not_a_model(task: str, model_dir: str, err: Exception) -> TaskError:
    return TaskError(f"glue/{task}: {model_dir} is not a model folder transformers loads "
                     f"({str(err).strip().splitlines()[0]}); pass an exported folder")


def _load(args: RunArgs, task: str, settings: GlueSettings):
    """Tokenizer, tokenized data (checked before the model loads), then the model with a fresh head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    spec = GLUE[task]
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    except (OSError, ValueError) as err:
        raise _not_a_model(task, args.model_dir, err) from err
    train, evals = _prepare(task, args, settings, tokenizer)
    extra = {"classifier_pooling": settings.classifier_pooling} if settings.classifier_pooling else {}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            args.model_dir, num_labels=spec.num_labels,
            problem_type="regression" if spec.num_labels == 1 else "single_label_classification", **extra)
    except (OSError, ValueError) as err:
        raise _not_a_model(task, args.model_dir, err) from err
    return tokenizer, model, train, evals


def finetune(task: str, base: GlueSettings, args: RunArgs) -> dict[str, float]:
    """One fine-tune + validation scoring. Seeds python, numpy and torch (head init, data order, dropout)."""
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments, set_seed

    settings, lr = with_hparams(base, args.hparams, f"glue/{task}")
    set_seed(args.seed)
    tokenizer, model, train, evals = _load(args, task, settings)
    targs = TrainingArguments(
        output_dir=str(Path(args.work_dir) / "trainer"), seed=args.seed, data_seed=args.seed, learning_rate=lr,
        per_device_train_batch_size=settings.batch_size, per_device_eval_batch_size=settings.eval_batch_size,
        num_train_epochs=settings.epochs, warmup_ratio=settings.warmup_ratio, weight_decay=settings.weight_decay,
        lr_scheduler_type="linear", optim="adamw_torch", save_strategy="no", eval_strategy="no",
        logging_strategy="no", report_to=[], disable_tqdm=True, use_cpu=args.device == "cpu",
        bf16=use_bf16(settings.precision, args.device), dataloader_num_workers=0)
    trainer = Trainer(model=model, args=targs, train_dataset=train, processing_class=tokenizer,
                      data_collator=DataCollatorWithPadding(tokenizer))
    trainer.remove_callback(PrinterCallback)  # it prints the final train metrics to stdout, the runner's channel
    trainer.train()
    result: dict[str, float] = {"train_examples": float(len(train))}
    for i, (split, ds) in enumerate(evals.items()):
        out = trainer.predict(ds)
        outputs = np.asarray(out.predictions, dtype=np.float64).reshape(len(ds), -1)
        scores = score(task, np.asarray(ds["label"], dtype=np.float64), outputs)
        suffix = "" if i == 0 else "_" + split.rsplit("_", 1)[-1]  # mnli: accuracy, accuracy_mismatched
        result.update({f"{k}{suffix}": v for k, v in scores.items()})
        result[f"eval_examples{suffix}"] = float(len(ds))
    return result


def glue_tasks(settings_path: str | None = None) -> list[TaskSpec]:
    """One TaskSpec per GLUE task, its grid the task's ``lrs`` from the settings YAML."""
    settings = load_glue_settings(settings_path)
    return [TaskSpec(name=f"glue/{task}", family="glue", metric=spec.metric,
                     run=functools.partial(finetune, task, settings[task]),
                     grid=tuple({"lr": lr} for lr in settings[task].lrs))
            for task, spec in GLUE.items()]
