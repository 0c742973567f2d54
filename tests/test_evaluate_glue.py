"""GLUE task family on a tiny exported folder and a few dozen local rows per task in the Hub's schema."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from modernbert_pretrain.evaluate.glue import GLUE, glue_tasks
from modernbert_pretrain.evaluate.tasks.base import RunArgs, TaskError

WORDS = ("the a cat dog sat ran on under mat table happy sad red blue quick slow big small house tree river "
         "stone bird sings loud quiet old new green yellow walks jumps").split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))


def tiny_model_folder(root: Path) -> Path:
    """The tiny preset with perturbed weights, saved as the exporter saves it, plus a 320-token BPE tokenizer
    with the project's special tokens, trained on the fixture vocabulary."""
    from modernbert_pretrain.data.prep.tokenizer_train import train_tokenizer

    from .model_helpers import perturbed_model

    folder = root / "model"
    perturbed_model(seed=0).save_pretrained(folder)
    rng = random.Random(0)
    text = root / "tokenizer-text.txt"
    text.write_text("\n".join(sentence(rng) for _ in range(300)) + "\n")
    train_tokenizer([str(text)], str(folder), vocab_size=320, progress=False)
    return folder


def _row(task: str, rng: random.Random) -> dict:
    spec = GLUE[task]
    row = {c: sentence(rng) for c in spec.columns}
    row["label"] = round(rng.uniform(0, 5), 2) if spec.num_labels == 1 else rng.randrange(spec.num_labels)
    return row


def write_glue(root: Path, task: str, rows: int = 24, fmt: str = "jsonl") -> Path:
    rng = random.Random(task)
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", *GLUE[task].eval_splits):
        data = [_row(task, rng) for _ in range(rows)]
        if fmt == "jsonl":
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
        else:
            cols = [*GLUE[task].columns, "label"]
            lines = ["\t".join(cols)] + ["\t".join(str(r[c]) for c in cols) for r in data]
            (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # transformers prints a notice on stdout when this module is first imported with WANDB_MODE=offline (which
    # conftest sets); import it here so the stdout checks below see only what the tasks print.
    import transformers.integrations.integration_utils  # noqa: F401

    return tiny_model_folder(tmp_path_factory.mktemp("glue-model"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue-data")
    for task in GLUE:
        write_glue(root, task)
    return root


@pytest.fixture
def settings(tmp_path):
    """The shipped YAML's structure with a tiny schedule: 1 epoch, batch 8."""
    path = tmp_path / "glue.yaml"
    path.write_text("defaults: {batch_size: 8, eval_batch_size: 16, epochs: 1, max_length: 32, warmup_ratio: 0.1}\n"
                    "tasks:\n  rte: {lrs: [1.0e-3, 3.0e-4]}\n")
    return str(path)


def _spec(name: str, settings_path: str | None = None):
    return {t.name: t for t in glue_tasks(settings_path)}[name]


def _run(spec, model_dir, data_dir, tmp_path, seed=0, hparams=None):
    work = tmp_path / f"work-{spec.name.replace('/', '-')}-{seed}-{len(list(tmp_path.iterdir()))}"
    args = RunArgs(model_dir=str(model_dir), seed=seed, hparams=spec.grid[0] if hparams is None else hparams,
                   data_dir=str(data_dir), work_dir=str(work))
    return spec.run(args)


def test_shipped_settings_define_every_task_and_its_grid():
    tasks = {t.name: t for t in glue_tasks()}
    assert sorted(tasks) == sorted(f"glue/{t}" for t in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"))
    metric = {"glue/cola": "mcc", "glue/sst2": "accuracy", "glue/mrpc": "f1", "glue/stsb": "spearman",
              "glue/qqp": "f1", "glue/mnli": "accuracy", "glue/qnli": "accuracy", "glue/rte": "accuracy"}
    for name, spec in tasks.items():
        assert spec.family == "glue" and spec.metric == metric[name]
        assert len(spec.grid) >= 2 and all(set(p) == {"lr"} and 0 < p["lr"] < 1e-3 for p in spec.grid), name


EXPECTED = {
    "cola": {"mcc", "accuracy"}, "sst2": {"accuracy"}, "mrpc": {"f1", "accuracy"},
    "stsb": {"spearman", "pearson"}, "qqp": {"f1", "accuracy"}, "qnli": {"accuracy"}, "rte": {"accuracy"},
    "mnli": {"accuracy", "accuracy_mismatched", "eval_examples_mismatched"},
}


@pytest.mark.parametrize("task", sorted(GLUE))
def test_every_task_schema_runs_and_returns_its_metrics(task, model_dir, data_dir, settings, tmp_path, capfd):
    spec = _spec(f"glue/{task}", settings)
    result = _run(spec, model_dir, data_dir, tmp_path, hparams={"lr": 1e-3})
    assert capfd.readouterr().out == ""  # stdout belongs to the runner (tables, the quickstart's last line)
    assert EXPECTED[task] | {"train_examples", "eval_examples"} == set(result)
    assert spec.metric in result and result["train_examples"] == 24 and result["eval_examples"] == 24
    for key, value in result.items():
        assert isinstance(value, float) and value == value, key
    if task == "stsb":
        assert -1 <= result["spearman"] <= 1 and -1 <= result["pearson"] <= 1
    else:
        assert 0 <= result["accuracy"] <= 1


def test_same_seed_same_metrics_other_seed_other_model(model_dir, data_dir, settings, tmp_path):
    spec = _spec("glue/stsb", settings)  # regression: a continuous score shows any difference in the weights
    a = _run(spec, model_dir, data_dir, tmp_path, seed=1)
    b = _run(spec, model_dir, data_dir, tmp_path, seed=1)
    c = _run(spec, model_dir, data_dir, tmp_path, seed=2)
    assert a == b
    assert (a["spearman"], a["pearson"]) != (c["spearman"], c["pearson"])


def test_grid_learning_rate_reaches_the_optimizer(model_dir, data_dir, settings, tmp_path):
    spec = _spec("glue/stsb", settings)
    low = _run(spec, model_dir, data_dir, tmp_path, hparams={"lr": 1e-9})
    high = _run(spec, model_dir, data_dir, tmp_path, hparams={"lr": 1e-2})
    assert low["pearson"] != high["pearson"]


def test_tsv_layout_and_train_cap(model_dir, tmp_path):
    data = tmp_path / "tsv"
    write_glue(data, "mrpc", rows=30, fmt="tsv")
    cfg = tmp_path / "cap.yaml"
    cfg.write_text("defaults: {batch_size: 8, epochs: 1, max_length: 32, max_train_examples: 10, "
                   "max_eval_examples: 7}\n")
    result = _run(_spec("glue/mrpc", str(cfg)), model_dir, data, tmp_path)
    assert result["train_examples"] == 10 and result["eval_examples"] == 7


def test_missing_data_folder_names_it(model_dir, tmp_path, settings):
    spec = _spec("glue/rte", settings)
    with pytest.raises(TaskError, match=f"glue/rte: data folder {tmp_path / 'nowhere' / 'rte'} does not exist"):
        _run(spec, model_dir, tmp_path / "nowhere", tmp_path)


def test_missing_split_and_column_and_label_errors(model_dir, tmp_path, settings):
    folder = write_glue(tmp_path / "d", "mnli")
    (folder / "validation_mismatched.jsonl").unlink()
    with pytest.raises(TaskError, match="no validation_mismatched file in .*mnli; add validation_mismatched.jsonl"):
        _run(_spec("glue/mnli", settings), model_dir, tmp_path / "d", tmp_path)
    folder = write_glue(tmp_path / "e", "qnli")
    (folder / "train.jsonl").write_text(json.dumps({"question": "q", "label": 0}) + "\n")
    with pytest.raises(TaskError, match=r"lacks column\(s\) \['sentence'\]"):
        _run(_spec("glue/qnli", settings), model_dir, tmp_path / "e", tmp_path)
    folder = write_glue(tmp_path / "f", "sst2")
    (folder / "validation.jsonl").write_text(json.dumps({"sentence": "s", "label": -1}) + "\n")
    with pytest.raises(TaskError, match="label -1; labels must be integers 0..1"):
        _run(_spec("glue/sst2", settings), model_dir, tmp_path / "f", tmp_path)


def test_bad_settings_and_hparams_are_one_line_errors(model_dir, data_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults: {batch_sise: 8}\n")
    with pytest.raises(TaskError, match="unknown key 'batch_sise'; did you mean 'batch_size'"):
        glue_tasks(str(bad))
    bad.write_text("tasks: {rte: {lrs: []}}\n")
    with pytest.raises(TaskError, match="tasks.rte.*lrs must be a non-empty list"):
        glue_tasks(str(bad))
    with pytest.raises(TaskError, match="does not exist"):
        glue_tasks(str(tmp_path / "none.yaml"))
    with pytest.raises(TaskError, match=r"glue/rte: unknown hyper-parameter\(s\) \['learning_rate'\]"):
        _run(_spec("glue/rte"), model_dir, data_dir, tmp_path, hparams={"learning_rate": 1e-5})


def test_not_a_model_folder(data_dir, tmp_path, settings):
    with pytest.raises(TaskError, match="is not a model folder transformers loads"):
        _run(_spec("glue/rte", settings), tmp_path, data_dir, tmp_path)


def test_relative_settings_path_is_taken_from_the_repo_not_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "yamls" / "eval").mkdir(parents=True)
    (tmp_path / "yamls" / "eval" / "glue.yaml").write_text("tasks: {rte: {lrs: [0.5]}}\n")  # must be ignored
    rte = _spec("glue/rte", "yamls/eval/glue.yaml")
    assert rte.grid == _spec("glue/rte").grid and {"lr": 0.5} not in rte.grid
