"""Fault tolerance: SIGTERM, a crash during a save, NaN losses, an unusable save folder."""

import os
import shutil
import signal
import subprocess
import time

import pytest
import torch

from modernbert_pretrain import checkpoints as ckpt_io
from modernbert_pretrain.config import load_config
from modernbert_pretrain.schema import ConfigError
from modernbert_pretrain.train.faults import NonFiniteLoss

from .train_helpers import ROOT, env, metrics, run_train, train_cmd

RUN = ["max_tokens=163840", "data.batch_size_warmup_tokens=40960", "scheduler.warmup_tokens=16384", "eval=null"]
FOLDER = "checkpoints/smoke-phase1"


def _fresh(smoke_workdir, path):
    shutil.copytree(smoke_workdir, path, ignore=shutil.ignore_patterns("corpus", "checkpoints"))
    return path


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state"]["model"]


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in b)


@pytest.fixture(scope="module")
def reference(smoke_workdir, tmp_path_factory):
    """An uninterrupted run with a checkpoint every 3 steps."""
    work = _fresh(smoke_workdir, tmp_path_factory.mktemp("faults") / "ref")
    run_train("smoke/phase1.yaml", work, *RUN, "save.interval=3ba", f"logging.metrics_file={work / 'm.jsonl'}")
    return work


def test_sigterm_saves_at_the_step_boundary_and_exits_cleanly(smoke_workdir, reference, tmp_path):
    work = _fresh(smoke_workdir, tmp_path / "w")
    args = [*RUN, "save.interval=1000ba", f"logging.metrics_file={work / 'm.jsonl'}"]
    proc = subprocess.Popen(train_cmd("smoke/phase1.yaml", work, *args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (work / "m.jsonl").exists() and len(metrics(work / "m.jsonl")) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "preempted" in err
    stopped_at = max(m["batch"] for m in metrics(work / "m.jsonl"))
    assert stopped_at < max(m["batch"] for m in metrics(reference / "m.jsonl"))
    latest = (work / FOLDER / ckpt_io.LATEST).resolve()
    assert latest.name.startswith(f"ba{stopped_at}-"), (latest.name, stopped_at)

    run_train("smoke/phase1.yaml", work, *args)  # the next start resumes from that checkpoint
    final = (work / FOLDER / ckpt_io.LATEST).resolve()
    assert _same(_weights(final), _weights((reference / FOLDER / ckpt_io.LATEST).resolve()))


def _crashed_copy(reference, tmp_path, smoke_workdir):
    """The reference run's folder as a crash during the save of step 9 would leave it."""
    work = _fresh(smoke_workdir, tmp_path / "w")
    folder = work / FOLDER
    folder.mkdir(parents=True)
    for ckpt in ckpt_io.list_checkpoints(reference / FOLDER):
        if int(ckpt.name.split("-")[0][2:]) <= 9:
            shutil.copy(ckpt, folder / ckpt.name)
    return work, folder


def test_crash_in_the_middle_of_a_save(smoke_workdir, reference, tmp_path):
    work, folder = _crashed_copy(reference, tmp_path, smoke_workdir)
    ba6, ba9 = (next(folder.glob(f"ba{n}-*.pt")) for n in (6, 9))
    os.symlink(ba6.name, folder / ckpt_io.LATEST)
    with open(ba9, "r+b") as f:  # half of step 9 reached the disk; `latest` still names step 6
        f.truncate(ba9.stat().st_size // 2)
    run_train("smoke/phase1.yaml", work, *RUN, "save.interval=3ba")
    final = (folder / ckpt_io.LATEST).resolve()
    assert _same(_weights(final), _weights((reference / FOLDER / ckpt_io.LATEST).resolve()))


def test_crash_between_removing_and_recreating_latest(smoke_workdir, reference, tmp_path):
    work, folder = _crashed_copy(reference, tmp_path, smoke_workdir)
    ba9 = next(folder.glob("ba9-*.pt"))
    with open(ba9, "r+b") as f:  # and a later partial file, to make the choice non-trivial
        partial = f.read(1000)
    (folder / "ba12-tok0-rank0.pt").write_bytes(partial)
    assert ckpt_io.repair_latest(folder) == ba9
    assert (folder / ckpt_io.LATEST).resolve() == ba9
    assert not (folder / "ba12-tok0-rank0.pt").exists()
    run_train("smoke/phase1.yaml", work, *RUN, "save.interval=3ba")
    final = (folder / ckpt_io.LATEST).resolve()
    assert _same(_weights(final), _weights((reference / FOLDER / ckpt_io.LATEST).resolve()))


def _in_process_trainer(smoke_workdir, tmp_path, *overrides):
    from modernbert_pretrain.train.builder import build_trainer

    work = _fresh(smoke_workdir, tmp_path / "w")
    cfg = load_config(ROOT / "yamls/smoke/phase1.yaml",
                      [f"workdir={work}", "max_tokens=24576", "data.batch_size_warmup_start=null", "eval=null",
                       "scheduler.warmup_tokens=0", "save.interval=2ba", "logging.console_interval=100ba",
                       *overrides])
    trainer = build_trainer(cfg)
    model = trainer.state.model
    real_loss = model.loss

    def poisoned(outputs, batch, *args, **kwargs):  # step 4 (1-based) gets a NaN loss
        loss = real_loss(outputs, batch)
        return loss * float("nan") if int(trainer.state.timestamp.batch.value) == 3 else loss

    model.loss = poisoned
    return trainer, work


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(smoke_workdir, tmp_path):
    trainer, work = _in_process_trainer(smoke_workdir, tmp_path)
    with pytest.raises(NonFiniteLoss, match="at step 4"):
        trainer.fit()
    trainer.close()
    latest = (work / FOLDER / ckpt_io.LATEST).resolve()
    assert latest.name.startswith("ba2-")
    assert all(torch.isfinite(v).all() for v in _weights(latest).values() if v.is_floating_point())


def test_nan_loss_skip_policy_drops_the_batch_and_counts_it(smoke_workdir, tmp_path):
    trainer, work = _in_process_trainer(smoke_workdir, tmp_path, "nonfinite_loss=skip")
    trainer.fit()
    trainer.close()
    guard = next(cb for cb in trainer.state.callbacks if type(cb).__name__ == "NonFiniteGuard")
    assert guard.skipped == 1
    final = (work / FOLDER / ckpt_io.LATEST).resolve()
    assert final.name.startswith("ba6-")
    assert all(torch.isfinite(v).all() for v in _weights(final).values() if v.is_floating_point())


def test_unwritable_save_folder_fails_at_start_up(smoke_workdir, tmp_path):
    work = _fresh(smoke_workdir, tmp_path / "w")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = subprocess.run(train_cmd("smoke/phase1.yaml", work, *RUN, f"save.folder={blocker}/ckpt"),
                         capture_output=True, text=True, env=env(), cwd=ROOT, timeout=300)
    assert out.returncode == 2
    assert "save.folder: cannot write to" in out.stderr
    assert not (work / "m.jsonl").exists()


def test_too_little_disk_for_one_checkpoint(tmp_path, monkeypatch):
    from modernbert_pretrain.train import preflight

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: usage._replace(free=10 * 2**20))
    with pytest.raises(ConfigError, match="less than one checkpoint"):
        preflight.check_save_folder(str(tmp_path), needed_bytes=2**30)


def _poison_from(trainer, step):
    """Every step from `step` (1-based) on gets a NaN loss."""
    model = trainer.state.model
    real_loss = model.loss

    def poisoned(outputs, batch, *args, **kwargs):
        loss = real_loss(outputs, batch)
        return loss * float("nan") if int(trainer.state.timestamp.batch.value) + 1 >= step else loss

    model.loss = poisoned


def test_skip_policy_stops_after_too_many_skipped_steps_in_a_row(smoke_workdir, tmp_path):
    trainer, work = _in_process_trainer(smoke_workdir, tmp_path, "nonfinite_loss=skip", "nonfinite_max_skipped=2")
    _poison_from(trainer, 3)
    with pytest.raises(NonFiniteLoss, match="at step 5 .*after 2 skipped steps in a row"):
        trainer.fit()
    trainer.close()
    latest = (work / FOLDER / ckpt_io.LATEST).resolve()
    assert latest.name.startswith("ba4-")  # saved after the skipped step 4, with step 2's weights
    assert _same(_weights(latest), _weights(next((work / FOLDER).glob("ba2-*.pt"))))


def test_a_run_whose_last_steps_were_skipped_is_not_complete(smoke_workdir, tmp_path, monkeypatch, capsys):
    from modernbert_pretrain.train import builder
    from modernbert_pretrain.train.main import COMPLETE_NAME, main

    real_build = builder.build_trainer

    def poisoned_build(cfg, raw_config=None):
        trainer = real_build(cfg, raw_config)
        _poison_from(trainer, 5)
        return trainer

    monkeypatch.setattr(builder, "build_trainer", poisoned_build)
    work = _fresh(smoke_workdir, tmp_path / "w")
    overrides = [f"workdir={work}", "max_tokens=24576", "data.batch_size_warmup_start=null", "eval=null",
                 "scheduler.warmup_tokens=0", "save.interval=2ba", "nonfinite_loss=skip"]
    assert main([str(ROOT / "yamls/smoke/phase1.yaml"), *overrides]) == 3
    err = capsys.readouterr().err
    assert "the last 2 step(s) of the run, up to step 6, were all skipped" in err
    assert not (work / FOLDER / COMPLETE_NAME).exists()
    # the rerun finds the same: the count of skipped steps is in the checkpoint
    assert main([str(ROOT / "yamls/smoke/phase1.yaml"), *overrides]) == 3
    assert not (work / FOLDER / COMPLETE_NAME).exists()


def test_nonfinite_max_skipped_is_validated(smoke_workdir):
    with pytest.raises(ConfigError, match="nonfinite_max_skipped must be >= 1"):
        load_config(ROOT / "yamls/smoke/phase1.yaml", [f"workdir={smoke_workdir}", "nonfinite_max_skipped=0"])
