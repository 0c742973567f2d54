"""The evaluation runner: ranking metrics, target resolution, the results file (resume, --force, a crash's
partial line), the summary table and plot, and one-line errors. Tasks here are cheap stand-ins; the real
embedded tasks are tested in test_evaluate_embedded.py."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from modernbert_pretrain.evaluate import results as R
from modernbert_pretrain.evaluate.cli import main
from modernbert_pretrain.evaluate.runner import BusyError, Plan, locked, report, run_plan
from modernbert_pretrain.evaluate.targets import TargetError, describe_folder, resolve_target
from modernbert_pretrain.evaluate.tasks import TaskSpec, UnknownTask, select_tasks
from modernbert_pretrain.evaluate.tasks.ranking import mrr_at_k, ndcg_at_k, rank_of_positive, ranking_metrics

from .train_helpers import ROOT, env


# ----------------------------------------------------------------------------- metrics
def test_rank_of_positive_counts_ties_against_the_positive():
    assert rank_of_positive([0.1, 0.9, 0.5], 1) == 1
    assert rank_of_positive([0.1, 0.9, 0.5], 2) == 2
    assert rank_of_positive([0.1, 0.9, 0.5], 0) == 3
    assert rank_of_positive([0.3, 0.3, 0.3], 0) == 3  # constant scores rank the positive last


def test_ranking_metrics_against_hand_computed_values():
    # ranks 1, 2, 11 (outside the top 10) and 3:
    #   nDCG@10 = (1 + 1/log2(3) + 0 + 1/log2(4)) / 4 = (1 + 0.6309298 + 0.5) / 4 = 0.5327324
    #   MRR@10  = (1 + 1/2 + 0 + 1/3) / 4 = 0.4583333
    got = ranking_metrics([1, 2, 11, 3])
    assert got["ndcg@10"] == pytest.approx(0.5327324, abs=1e-7)
    assert got["mrr@10"] == pytest.approx(0.4583333, abs=1e-7)
    assert got["recall@10"] == 0.75 and got["recall@1"] == 0.25
    assert ndcg_at_k(10) == pytest.approx(1 / math.log2(11)) and ndcg_at_k(11) == 0.0
    assert mrr_at_k(4, k=3) == 0.0
    with pytest.raises(ValueError):
        ranking_metrics([])


# ----------------------------------------------------------------------------- fixtures
def _model(root: Path, name: str, tokens: int | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    if tokens is not None:
        (folder / "training_metadata.json").write_text(json.dumps({"phase": 1, "step": tokens // 100,
                                                                   "tokens_seen": tokens}))
    return folder


class CountingTask:
    """A stand-in task: its score is a function of (model, seed, lr), and it counts its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, args):
        self.calls.append((Path(args.model_dir).name, args.seed, dict(args.hparams)))
        assert Path(args.work_dir).is_dir()
        tokens = describe_folder(Path(args.model_dir)).tokens_seen or 0
        return {"score": tokens / 1000 + args.seed / 100 + args.hparams.get("lr", 0), "extra": 1.0,
                "ref": 0.25}


def _plan(tmp_path, task_fn, models, seeds=(0, 1, 2), force=False, grid=({"lr": 0.1}, {"lr": 0.2})):
    task = TaskSpec(name="stub/score", family="embedded", metric="score", run=task_fn, grid=grid, reference="ref")
    return Plan(models=[describe_folder(m) for m in models], tasks=[task], seeds=list(seeds),
                out=tmp_path / "out", force=force)


# ----------------------------------------------------------------------------- results file
def test_one_row_per_checkpoint_task_seed_and_grid_point(tmp_path):
    models = [_model(tmp_path, "step10-tok1000", 1000), _model(tmp_path, "step20-tok2000", 2000)]
    task = CountingTask()
    rows = run_plan(_plan(tmp_path, task, models))
    assert len(rows) == len(task.calls) == 2 * 3 * 2
    lines = (tmp_path / "out" / R.RESULTS_NAME).read_text().splitlines()
    assert len(lines) == 12
    row = json.loads(lines[0])
    assert row["tokens_seen"] == 1000 and row["phase"] == 1 and row["step"] == 10
    assert row["task"] == "stub/score" and row["metric"] == "score" and row["seed"] == 0
    assert row["hparams"] == {"lr": 0.1} and row["metrics"]["extra"] == 1.0
    assert row["value"] == pytest.approx(1.1) and row["model"] == str(models[0].resolve())
    assert not (tmp_path / "out" / ".work").exists()


def test_rerun_skips_finished_rows_and_force_redoes_them(tmp_path):
    models = [_model(tmp_path, "m", 1000)]
    first = CountingTask()
    run_plan(_plan(tmp_path, first, models))
    assert len(first.calls) == 6
    again = CountingTask()
    rows = run_plan(_plan(tmp_path, again, models))
    assert again.calls == [] and len(rows) == 6
    more_seeds = CountingTask()
    run_plan(_plan(tmp_path, more_seeds, models, seeds=(0, 1, 2, 3)))
    assert more_seeds.calls == [("m", 3, {"lr": 0.1}), ("m", 3, {"lr": 0.2})]
    forced = CountingTask()
    rows = run_plan(_plan(tmp_path, forced, models, force=True))
    assert len(forced.calls) == 6 and len(rows) == 6
    # the redone rows are appended; reading keeps the newest line per row
    assert len((tmp_path / "out" / R.RESULTS_NAME).read_text().splitlines()) == 6 + 2 + 6
    assert len(R.ResultsFile(tmp_path / "out" / R.RESULTS_NAME).rows) == 8


def test_partial_last_line_from_a_crash_is_dropped_and_its_row_redone(tmp_path, capsys):
    models = [_model(tmp_path, "m", 1000)]
    run_plan(_plan(tmp_path, CountingTask(), models, seeds=(0,)))
    path = tmp_path / "out" / R.RESULTS_NAME
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # the second row's write was cut off
    task = CountingTask()
    rows = run_plan(_plan(tmp_path, task, models, seeds=(0,)))
    assert task.calls == [("m", 0, {"lr": 0.2})]
    assert "partial last line" in capsys.readouterr().err
    assert [json.loads(x)["hparams"] for x in path.read_text().splitlines()] == [{"lr": 0.1}, {"lr": 0.2}]
    assert len(rows) == 2


@pytest.mark.parametrize("change,says", [({"seed": "x"}, "'seed' is 'x', expected an integer"),
                                         ({"value": "high"}, "'value' is 'high', expected a number"),
                                         ({"hparams": None}, "'hparams' is None, expected a dict")])
def test_a_malformed_row_is_skipped_with_its_file_and_line_and_redone(tmp_path, capsys, change, says):
    models = [_model(tmp_path, "m", 1000)]
    run_plan(_plan(tmp_path, CountingTask(), models, seeds=(0,)))
    path = tmp_path / "out" / R.RESULTS_NAME
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + json.dumps(json.loads(lines[1]) | change) + "\n")
    task = CountingTask()
    rows = run_plan(_plan(tmp_path, task, models, seeds=(0,)))
    err = capsys.readouterr().err
    assert f"{path}:2: unreadable line ignored ({says}); it will be redone" in err
    assert task.calls == [("m", 0, {"lr": 0.2})]
    assert "| stub/score | m |" in report(rows, tmp_path / "out")


def test_summary_and_plot_get_the_umask_modes(tmp_path):
    import os
    import stat

    models = [_model(tmp_path, "step10-tok1000", 1000), _model(tmp_path, "step20-tok2000", 2000)]
    rows = run_plan(_plan(tmp_path, CountingTask(), models, seeds=(0,)))
    old = os.umask(0o002)
    try:
        report(rows, tmp_path / "out")
    finally:
        os.umask(old)
    for name in (R.SUMMARY_NAME, R.PLOT_NAME):
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == 0o664, name


def test_two_runs_cannot_share_an_output_folder(tmp_path):
    with locked(tmp_path / "out"):
        with pytest.raises(BusyError, match="another evaluation is writing"):
            run_plan(_plan(tmp_path, CountingTask(), [_model(tmp_path, "m", 1)]))


# ----------------------------------------------------------------------------- summary
def test_summary_takes_the_best_grid_point_by_median_and_plots_several_checkpoints(tmp_path):
    models = [_model(tmp_path, "step10-tok1000", 1000), _model(tmp_path, "step20-tok2000", 2000)]
    rows = run_plan(_plan(tmp_path, CountingTask(), models))
    summary = R.summarize(rows)
    assert [s["checkpoint"] for s in summary] == ["step10-tok1000", "step20-tok2000"]
    best = summary[0]
    # lr=0.2 beats lr=0.1; seeds 0, 1, 2 add 0, 0.01, 0.02
    assert best["hparams"] == {"lr": 0.2} and best["grid_points"] == 2 and best["seeds"] == 3
    assert best["median"] == pytest.approx(1.21) and best["min"] == pytest.approx(1.2)
    assert best["max"] == pytest.approx(1.22) and best["reference_value"] == 0.25
    table = report(rows, tmp_path / "out")
    assert "| stub/score | step20-tok2000 | 2k | score | 2.210 | 2.200 - 2.220 | 3 | lr=0.2 (of 2) | ref 0.250 |" \
        in table
    assert (tmp_path / "out" / R.SUMMARY_NAME).read_text() == table
    assert (tmp_path / "out" / R.PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_plot_for_a_single_checkpoint(tmp_path):
    rows = run_plan(_plan(tmp_path, CountingTask(), [_model(tmp_path, "m", 1000)], seeds=(0,)))
    report(rows, tmp_path / "out")
    assert not (tmp_path / "out" / R.PLOT_NAME).exists()


def test_lower_is_better_picks_the_smallest_median():
    rows = [{"model": "m", "task": "t", "hparams": {"lr": lr}, "value": v, "higher_is_better": False,
             "checkpoint": "m", "tokens_seen": 1, "phase": 1, "step": 1, "metric": "loss", "metrics": {},
             "seed": 0, "reference": None} for lr, v in ((1, 0.5), (2, 0.3))]
    assert R.summarize(rows)[0]["hparams"] == {"lr": 2}


def _phase_model(root: Path, phase: str, step: int, tokens: int, total: int) -> Path:
    folder = root / f"step{step}-tok{tokens}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "training_metadata.json").write_text(json.dumps(
        {"phase": phase, "step": step, "tokens_seen": tokens, "total_tokens_seen": total}))
    return folder


def test_two_phases_sort_and_plot_by_tokens_seen_over_all_phases(tmp_path):
    """Phase 2 restarts its clock: its checkpoint has 8192 tokens of its own but 32768 in all."""
    root = tmp_path / "hf"
    _phase_model(root, "p1", 6, 24576, 24576)
    _phase_model(root, "p2", 2, 8192, 24576 + 8192)
    models = resolve_target(str(root))
    assert [m.phase for m in models] == ["p1", "p2"]
    assert [(m.tokens_seen, m.total_tokens_seen) for m in models] == [(24576, 24576), (8192, 32768)]
    rows = run_plan(_plan(tmp_path, CountingTask(), [m.folder for m in models], seeds=(0,)))
    assert [(r["tokens_seen"], r["total_tokens_seen"]) for r in rows[::2]] == [(24576, 24576), (8192, 32768)]
    summary = R.summarize(rows)
    assert [s["phase"] for s in summary] == ["p1", "p2"]
    assert [s["tokens"] for s in R.trajectories(summary)["stub/score"]] == [24576, 32768]
    table = report(rows, tmp_path / "out")
    assert "| stub/score | step2-tok8192 | 32.8k |" in table
    assert table.index("step6-tok24576") < table.index("step2-tok8192")
    assert (tmp_path / "out" / R.PLOT_NAME).is_file()


def test_rows_without_a_cumulative_count_still_load_and_use_the_phase_count(tmp_path):
    models = [_model(tmp_path, "step10-tok1000", 1000), _model(tmp_path, "step20-tok2000", 2000)]
    run_plan(_plan(tmp_path, CountingTask(), models, seeds=(0,)))
    path = tmp_path / "out" / R.RESULTS_NAME
    old = [json.loads(line) for line in path.read_text().splitlines()]
    for row in old:
        del row["total_tokens_seen"]  # as written before the field existed
    path.write_text("".join(json.dumps(row) + "\n" for row in old))
    rows = list(R.ResultsFile(path).rows.values())
    assert len(rows) == 4
    summary = R.summarize(rows)
    assert [s["tokens"] for s in summary] == [1000, 2000]
    assert "| stub/score | step20-tok2000 | 2k |" in R.markdown_table(summary)


# ----------------------------------------------------------------------------- targets and tasks
def test_export_root_is_every_step_tok_folder_in_token_order(tmp_path):
    _model(tmp_path, "step20-tok2000", 2000)
    _model(tmp_path, "step3-tok300", 300)
    _model(tmp_path, "notes", None)
    models = resolve_target(str(tmp_path))
    assert [m.name for m in models] == ["step3-tok300", "step20-tok2000"]
    assert [m.tokens_seen for m in models] == [300, 2000]


def test_bad_targets_say_what_to_pass(tmp_path):
    with pytest.raises(TargetError, match="does not exist"):
        resolve_target(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TargetError, match="neither an exported model folder"):
        resolve_target(str(tmp_path / "empty"))


def test_task_selection_by_name_and_family():
    names = [t.name for t in select_tasks(None)]
    assert names == ["embedded/code_search", "embedded/word_order"]
    assert [t.name for t in select_tasks(["embedded/word_order"])] == ["embedded/word_order"]
    assert [t.name for t in select_tasks(["embedded/word_order,embedded"])] == names
    with pytest.raises(UnknownTask, match="no such task or family"):
        select_tasks(["embedded/nope"])


@pytest.mark.parametrize("argv, says", [
    (["{tmp}/missing"], "does not exist"),
    (["{tmp}"], "neither an exported model folder"),
    (["{model}", "--tasks", "embedded/nope"], "no such task or family"),
    (["{model}", "--seeds", "0"], "--seeds must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, says):
    model = _model(tmp_path / "models", "m", 1)
    code = main([a.format(tmp=tmp_path, model=model) for a in argv] + ["--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and says in err and len(err.splitlines()) == 1 and err.startswith("evaluate: ")


def test_python_dash_m_reports_a_bad_target_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "modernbert_pretrain.evaluate", str(tmp_path / "nope")],
                         capture_output=True, text=True, env=env(), cwd=ROOT, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"evaluate: {tmp_path / 'nope'} does not exist; pass an exported "
                                               "model folder, an export root (step*-tok* folders) or a run "
                                               "folder (checkpoints)"]


def test_run_folder_exports_missing_checkpoints_once(smoke_workdir, tmp_path, monkeypatch):
    import shutil

    from modernbert_pretrain import export
    from modernbert_pretrain.checkpoints import list_checkpoints

    from .train_helpers import run_train

    work = tmp_path / "w"
    shutil.copytree(smoke_workdir, work, ignore=shutil.ignore_patterns("corpus"))
    run_train("smoke/phase1.yaml", work, "max_tokens=16384", "data.batch_size_warmup_start=null", "eval=null",
              "scheduler.warmup_tokens=1024", "save.interval=2ba")
    run = work / "checkpoints" / "smoke-phase1"
    checkpoints = list_checkpoints(run)
    assert len(checkpoints) >= 2
    models = resolve_target(str(run))
    assert len(models) == len(checkpoints)
    assert all(m.folder.parent == run / "hf" and m.tokens_seen and m.phase == "smoke-phase1"
               for m in models)
    assert models == sorted(models, key=lambda m: m.tokens_seen)
    shutil.rmtree(models[0].folder)  # a missing export is redone; the others are not read again

    exported = []
    original = export.export_checkpoint

    def counting(ckpt, out, **kw):
        exported.append(ckpt)
        return original(ckpt, out, **kw)

    monkeypatch.setattr(export, "export_checkpoint", counting)
    again = resolve_target(str(run))
    assert [m.folder for m in again] == [m.folder for m in models]
    assert exported == [checkpoints[0]]


def test_a_checkpoint_that_rotation_deletes_during_the_export_is_skipped(tmp_path, monkeypatch, capsys):
    from modernbert_pretrain import export
    from modernbert_pretrain.checkpoints import LATEST

    run = tmp_path / "run"
    run.mkdir()
    older, newer = run / "ba2-tok200-rank0.pt", run / "ba4-tok400-rank0.pt"
    for ckpt in (older, newer):
        ckpt.write_bytes(b"stands in for a checkpoint")
    (run / LATEST).symlink_to(newer.name)
    original = export.export_checkpoint

    def live_run(ckpt, out, **kw):
        if ckpt == older:
            ckpt.unlink()  # the live run's save.keep rotation removes it after it was listed
            return original(ckpt, out, **kw)
        return _model(Path(out), "step4-tok400", 400), True

    monkeypatch.setattr(export, "export_checkpoint", live_run)
    models = resolve_target(str(run))
    assert [m.name for m in models] == ["step4-tok400"]
    assert f"skipped: {older} was deleted during the export" in capsys.readouterr().err


def test_glue_and_retrieval_families_are_picked_up_when_their_modules_exist(monkeypatch):
    import types

    from modernbert_pretrain.evaluate.tasks import TaskError

    glue = types.ModuleType("modernbert_pretrain.evaluate.glue")
    glue.glue_tasks = lambda settings_path=None: [TaskSpec(name="glue/rte", family="glue", metric="accuracy",
                                                           run=lambda args: {"accuracy": 0.5})]
    monkeypatch.setitem(sys.modules, "modernbert_pretrain.evaluate.glue", glue)
    assert [t.name for t in select_tasks(["glue"])] == ["glue/rte"]
    assert [t.name for t in select_tasks(["glue/rte", "embedded/word_order"])] == ["embedded/word_order", "glue/rte"]

    def broken(settings_path=None):
        raise TaskError("yamls/eval/glue.yaml: grid.lr must be a list")

    glue.glue_tasks = broken
    assert [t.name for t in select_tasks(None)] == ["embedded/code_search", "embedded/word_order"]
    with pytest.raises(UnknownTask, match="grid.lr must be a list"):
        select_tasks(["glue"])
