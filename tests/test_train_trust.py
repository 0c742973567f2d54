"""What a month-long run relies on: one run per save folder, the logged loss and LR of each step, refusals
that are one line (exit 2), recovery from a corrupt `latest`, and a full disk during a save."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from modernbert_pretrain import checkpoints as ckpt_io
from modernbert_pretrain.config import load_config
from modernbert_pretrain.train.main import main
from modernbert_pretrain.train.runlock import LOCK_NAME, RunLock, RunLocked
from modernbert_pretrain.train.schedule import lr_multiplier

from .train_helpers import ROOT, env, metrics, train_cmd

FOLDER = "checkpoints/smoke-phase1"
# 4096 tokens (32 rows x 128) a step, in 4 microbatches of 8 rows; no eval.
SHORT = ["data.batch_size_warmup_start=null", "data.device_microbatch_size=8", "eval=null",
         "logging.console_interval=100ba", "scheduler.warmup_tokens=0"]


def _fresh(smoke_workdir, path):
    shutil.copytree(smoke_workdir, path, ignore=shutil.ignore_patterns("corpus", "checkpoints"))
    return path


def _tree(folder, *, lock=True):
    """Names, sizes and mtimes; without the lock file's record when lock=False (a new holder rewrites it)."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())
            if lock or p.name != LOCK_NAME}


def _main(capsys, work, *overrides, yaml="smoke/phase1.yaml"):
    rc = main([str(ROOT / "yamls" / yaml), f"workdir={work}", *overrides])
    return rc, capsys.readouterr().err


def _refusal_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith(("error:", "config error:"))]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


# ---- one run per save folder ---------------------------------------------------------------------------------

def test_second_trainer_on_a_live_folder_is_refused_and_touches_nothing(smoke_workdir, tmp_path):
    from modernbert_pretrain.train.builder import build_trainer

    work = _fresh(smoke_workdir, tmp_path / "w")
    cfg = load_config(ROOT / "yamls/smoke/phase1.yaml", [f"workdir={work}", "max_tokens=8192", *SHORT])
    first = build_trainer(cfg)  # holds the folder from here until close()
    try:
        folder = work / FOLDER
        # What the live run's folder looks like in the middle of a save: a file `latest` does not name yet.
        # The repair a second start ran before the lock existed deleted exactly such a file.
        (folder / "ba3-tok12288-rank0.pt").write_bytes(b"half-written")
        before = _tree(folder)
        out = subprocess.run(train_cmd("smoke/phase1.yaml", work, "max_tokens=8192", *SHORT), capture_output=True,
                             text=True, env=env(), cwd=ROOT, timeout=300)
        assert out.returncode == 2, out.stderr[-3000:]
        line = _refusal_line(out.stderr)
        assert "in use by another training run" in line
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in line
        assert _tree(folder) == before
    finally:
        first.close()
    with RunLock(folder):  # closing the trainer released it
        pass


def test_a_lock_left_by_a_killed_run_does_not_block(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from modernbert_pretrain.train.runlock import RunLock\n"
                               f"RunLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True, env=env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"pid {holder.pid} on host"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / LOCK_NAME).exists()  # the file stays behind, its lock does not
    RunLock(tmp_path).acquire().release()


def test_without_flock_a_stale_lock_file_is_taken_over(tmp_path, monkeypatch):
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / LOCK_NAME
    path.write_text(f'{{"pid": {dead.pid}, "host": "{socket.gethostname()}", "start": null, "time": 0}}')
    lock = RunLock(tmp_path).acquire()  # that pid is gone: the lock is stale
    with pytest.raises(RunLocked, match=f"pid {os.getpid()} on host"):
        RunLock(tmp_path).acquire()
    lock.release()
    assert not path.exists()
    path.write_text('{"pid": 1, "host": "elsewhere", "start": null, "time": 0}')
    with pytest.raises(RunLocked, match="if that run is dead, delete"):
        RunLock(tmp_path).acquire()


# ---- the loss and the LR each step logs ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def logged_run(smoke_workdir, tmp_path_factory):
    """8 steps of 4 microbatches; LR warmup over 2 steps, then a linear decay to 0. Records what each
    microbatch's loss and masked-token count were, independently of Composer's bookkeeping."""
    from modernbert_pretrain.train.builder import build_trainer

    work = _fresh(smoke_workdir, tmp_path_factory.mktemp("logged") / "w")
    cfg = load_config(ROOT / "yamls/smoke/phase1.yaml",
                      [f"workdir={work}", "max_tokens=32768", *SHORT, "scheduler.warmup_tokens=8192",
                       "scheduler.decay={shape: linear, tokens: 24576, final_lr_fraction: 0.0}",
                       "save.interval=1000ba", f"logging.metrics_file={work / 'm.jsonl'}"])
    trainer = build_trainer(cfg)
    model = trainer.state.model
    real_loss = model.loss
    seen: list[tuple[int, float, int]] = []

    def recording(outputs, batch, *args, **kwargs):
        loss = real_loss(outputs, batch)
        masked = int((batch["labels"] != -100).sum())
        seen.append((int(trainer.state.timestamp.batch.value) + 1, float(loss.detach()), masked))
        return loss

    model.loss = recording
    trainer.fit()
    trainer.close()
    return cfg, metrics(work / "m.jsonl"), seen


def test_metrics_file_logs_the_steps_token_weighted_loss(logged_run):
    _, records, seen = logged_run
    assert len(records) == 8
    gaps = []
    for record in records:
        parts = [(loss, n) for step, loss, n in seen if step == record["batch"]]
        assert len(parts) == 4
        expected = sum(loss * n for loss, n in parts) / sum(n for _, n in parts)
        assert record["loss"] == pytest.approx(expected, rel=1e-5), record
        gaps.append(abs(parts[-1][0] - expected))
    assert max(gaps) > 1e-3  # the last microbatch alone is measurably different


def test_step_k_uses_the_lr_of_the_tokens_seen_before_it(logged_run):
    cfg, records, _ = logged_run
    before = [0] + [r["tokens"] for r in records[:-1]]
    for record, tokens in zip(records, before):
        expected = cfg.optimizer.lr * lr_multiplier(tokens, cfg.scheduler, cfg.max_tokens)
        assert record["lr"] == pytest.approx(expected, rel=1e-6, abs=1e-12), record
    lrs = [r["lr"] for r in records]
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(cfg.optimizer.lr / 2)  # not two steps at 0
    # The decay reaches 0 at max_tokens: the last of 6 decay steps runs at 1/6 of the peak, not 2/6.
    assert lrs[-1] == pytest.approx(cfg.optimizer.lr / 6)


# ---- one-line refusals, recovery ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_run(smoke_workdir, tmp_path_factory):
    """A finished 4-step run with a checkpoint every 2 steps."""
    work = _fresh(smoke_workdir, tmp_path_factory.mktemp("saved") / "w")
    assert main([str(ROOT / "yamls/smoke/phase1.yaml"), f"workdir={work}", "max_tokens=16384", *SHORT,
                 "save.interval=2ba"]) == 0
    return work


def _copy_run(saved_run, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(saved_run, work, symlinks=True)
    return work


def test_rerunning_a_finished_run_says_so_and_exits_0(saved_run, tmp_path, capsys):
    work = _copy_run(saved_run, tmp_path)
    before = _tree(work / FOLDER)
    rc, err = _main(capsys, work, "max_tokens=16384", *SHORT, "save.interval=2ba")
    assert rc == 0
    assert "is already complete: step 4, 16384 tokens" in err
    assert _tree(work / FOLDER) == before


def test_a_finished_run_with_a_raised_max_tokens_continues(saved_run, tmp_path, capsys):
    import json

    work = _copy_run(saved_run, tmp_path)
    rc, err = _main(capsys, work, "max_tokens=20480", *SHORT, "save.interval=2ba")
    assert rc == 0, err[-3000:]
    assert (work / FOLDER / ckpt_io.LATEST).resolve().name == "ba5-tok20480-rank0.pt"
    assert json.loads((work / FOLDER / "training_complete.json").read_text())["tokens"] == 20480


def test_latest_pointing_at_a_corrupt_file_falls_back_to_the_newest_loadable(saved_run, tmp_path, capsys, caplog):
    work = _copy_run(saved_run, tmp_path)
    folder = work / FOLDER
    (folder / "training_complete.json").unlink()
    ba4 = (folder / ckpt_io.LATEST).resolve()
    assert ba4.name.startswith("ba4-")
    with open(ba4, "r+b") as f:
        f.truncate(ba4.stat().st_size // 2)
    rc, err = _main(capsys, work, "max_tokens=16384", *SHORT, "save.interval=2ba")
    assert rc == 0, err[-3000:]
    assert "does not load" in caplog.text and "now points at ba2-" in caplog.text
    assert (folder / f"{ba4.name}.corrupt").is_file()  # kept aside, not deleted
    final = (folder / ckpt_io.LATEST).resolve()
    assert final.name == ba4.name  # steps 3-4 were trained again from step 2
    torch.load(final, map_location="cpu", weights_only=False)


def test_a_changed_model_preset_on_resume_is_one_line(saved_run, tmp_path, capsys):
    work = _copy_run(saved_run, tmp_path)
    (work / FOLDER / "training_complete.json").unlink()
    before = _tree(work / FOLDER, lock=False)
    rc, err = _main(capsys, work, "max_tokens=16384", *SHORT, "model.preset=tiny-large")
    assert rc == 2
    line = _refusal_line(err)
    assert "preset: 'tiny' -> 'tiny-large'" in line and "model.preset='tiny'" in line
    assert _tree(work / FOLDER, lock=False) == before


def test_autoresume_false_on_a_folder_with_checkpoints_is_one_line(saved_run, tmp_path, capsys):
    work = _copy_run(saved_run, tmp_path)
    before = _tree(work / FOLDER, lock=False)
    rc, err = _main(capsys, work, "max_tokens=16384", *SHORT, "save.interval=2ba", "autoresume=false")
    assert rc == 2
    line = _refusal_line(err)
    assert f"{work / FOLDER} already holds checkpoints of a run (2, the newest ba4-" in line
    assert "set autoresume=true to continue that run, or choose a new save.folder" in line
    assert _tree(work / FOLDER, lock=False) == before


def test_a_changed_global_batch_size_on_resume_is_refused(saved_run, tmp_path, capsys):
    work = _copy_run(saved_run, tmp_path)
    (work / FOLDER / "training_complete.json").unlink()
    before = _tree(work / FOLDER, lock=False)
    rc, err = _main(capsys, work, "max_tokens=24576", *SHORT, "save.interval=2ba", "data.global_batch_size=16")
    assert rc == 2
    line = _refusal_line(err)
    assert "data.global_batch_size is 16, the checkpoint was saved with 32" in line and "load_from" in line
    assert _tree(work / FOLDER, lock=False) == before


def test_an_unreadable_load_from_checkpoint_is_named(saved_run, tmp_path, capsys):
    bad = tmp_path / "ba9-tok0-rank0.pt"
    bad.write_bytes(b"not a checkpoint")
    work = _fresh(saved_run, tmp_path / "w")
    rc, err = _main(capsys, work, "max_tokens=8192", *SHORT, f"load_from={{path: {bad}}}")
    assert rc == 2
    line = _refusal_line(err)
    assert f"{bad} is not a readable checkpoint" in line


def test_a_corrupt_model_safetensors_in_init_from_is_named(saved_run, tmp_path, capsys):
    from modernbert_pretrain.model.hf import save_pretrained

    hf = tmp_path / "hf"
    save_pretrained(ckpt_io.model_from_checkpoint(saved_run / FOLDER), hf)
    weights = hf / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    work = _fresh(saved_run, tmp_path / "w")
    rc, err = _main(capsys, work, "max_tokens=8192", *SHORT, f"init_from={{path: {hf}}}")
    assert rc == 2
    line = _refusal_line(err)
    assert f"{weights} cannot be loaded" in line


def test_debug_flag_shows_the_traceback(saved_run, tmp_path, capsys):
    work = _fresh(saved_run, tmp_path / "w")
    bad = tmp_path / "ba9-tok0-rank0.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt_io.CheckpointError):
        main([str(ROOT / "yamls/smoke/phase1.yaml"), f"workdir={work}", *SHORT, f"load_from={{path: {bad}}}",
              "--debug"])


# ---- a full disk --------------------------------------------------------------------------------------------

def test_export_never_runs_before_or_instead_of_the_steps_checkpoint(smoke_workdir, tmp_path, monkeypatch):
    from modernbert_pretrain import export
    from modernbert_pretrain.train.builder import build_trainer

    def failing(*args, **kwargs):  # a failure other than a full disk, which the export only logs
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(export, "write_folder", failing)
    work = _fresh(smoke_workdir, tmp_path / "w")
    cfg = load_config(ROOT / "yamls/smoke/phase1.yaml",
                      [f"workdir={work}", "max_tokens=16384", *SHORT, "save.interval=2ba",
                       f"export={{folder: {work / 'hf'}}}"])
    trainer = build_trainer(cfg)
    with pytest.raises(OSError, match="Input/output error"):
        trainer.fit()
    trainer.close()
    assert (work / FOLDER / ckpt_io.LATEST).resolve().name.startswith("ba2-")


def _can_mount_tmpfs() -> bool:
    try:
        out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                              "mount -t tmpfs tmpfs /mnt"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="a small file system needs unshare and mount (root)")
def test_a_full_disk_during_a_save_says_so(saved_run, tmp_path):
    size = (saved_run / FOLDER / ckpt_io.LATEST).resolve().stat().st_size
    work = _fresh(saved_run, tmp_path / "w")
    folder = work / FOLDER
    folder.mkdir(parents=True)
    # A file system with room for one checkpoint and a half: the save at step 2 fits, the one at step 4 not.
    cmd = train_cmd("smoke/phase1.yaml", work, "max_tokens=16384", *SHORT, "save.interval=2ba")
    script = (f'mount -t tmpfs -o size={size * 3 // 2} tmpfs "{folder}" && "$@"; rc=$?; '
              f'echo "latest -> $(readlink "{folder}/{ckpt_io.LATEST}")"; exit $rc')
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script, "_", *cmd],
                         capture_output=True, text=True, env=env(), cwd=ROOT, timeout=600)
    assert out.returncode == 2, out.stderr[-3000:]
    line = _refusal_line(out.stderr)
    assert "no space left on device while saving the checkpoint of step 4" in line
    assert str(folder) in line and "GiB free, one checkpoint needs about" in line
    assert "inline_container" not in line
    assert "latest -> ba2-tok8192-rank0.pt" in out.stdout


# ---- rolling back -------------------------------------------------------------------------------------------

def _point_latest_at(folder, name):
    (folder / ckpt_io.LATEST).unlink()
    os.symlink(name, folder / ckpt_io.LATEST)


def test_a_hand_rolled_back_latest_keeps_the_later_checkpoints(saved_run, tmp_path, capsys, caplog):
    """`latest` pointed back at step 2 by hand (after a loss spike): step 4's complete checkpoint is moved aside,
    never deleted; a later file that does not load (an interrupted save) is removed; the run trains on from 2."""
    work = _copy_run(saved_run, tmp_path)
    folder = work / FOLDER
    (folder / "training_complete.json").unlink()  # a run still under way
    ba2, ba4 = ckpt_io.list_checkpoints(folder)
    original = ba4.read_bytes()
    partial = folder / "ba6-tok24576-rank0.pt"
    partial.write_bytes(original[: len(original) // 3])
    _point_latest_at(folder, ba2.name)
    rc, err = _main(capsys, work, "max_tokens=16384", *SHORT, "save.interval=2ba")
    assert rc == 0, err[-3000:]
    assert [p for p in folder.rglob(ba4.name) if p.read_bytes() == original], "step 4's checkpoint was lost"
    asides = sorted(folder.glob(f"{ckpt_io.ASIDE_PREFIX}*"))
    assert len(asides) == 1 and (asides[0] / ba4.name).read_bytes() == original
    assert "later complete checkpoint(s) exist" in caplog.text and str(asides[0]) in caplog.text
    assert not partial.exists() and "does not load" in caplog.text
    assert (folder / ckpt_io.LATEST).resolve().name == ba4.name  # steps 3-4 trained again from step 2
    torch.load(ba4, map_location="cpu", weights_only=False)


def test_the_rollback_command_sets_later_checkpoints_aside_and_the_run_says_so(saved_run, tmp_path, capsys,
                                                                                 caplog):
    import json

    from modernbert_pretrain.train import rollback

    work = _copy_run(saved_run, tmp_path)
    folder = work / FOLDER
    ba2, ba4 = ckpt_io.list_checkpoints(folder)
    assert rollback.main([str(folder), "ba9-tok0-rank0.pt"]) == 2
    assert "is not a checkpoint of" in capsys.readouterr().err
    assert rollback.main([str(folder), ba2.name]) == 0
    assert f"rolled back {folder} to {ba2.name}" in capsys.readouterr().err
    assert (folder / ckpt_io.LATEST).resolve() == ba2
    aside = next(folder.glob(f"{ckpt_io.ASIDE_PREFIX}*"))
    assert sorted(p.name for p in aside.iterdir()) == sorted([ba4.name, "training_complete.json",
                                                               ckpt_io.ASIDE_NOTE])
    note = json.loads((aside / ckpt_io.ASIDE_NOTE).read_text())
    assert note["rolled_back_to"] == ba2.name and note["latest_before"] == ba4.name
    rc, err = _main(capsys, work, "max_tokens=16384", *SHORT, "save.interval=2ba")
    assert rc == 0, err[-3000:]
    assert f"rollback: this run resumes from {ba2.name}" in caplog.text and str(aside) in caplog.text
    assert (folder / ckpt_io.LATEST).resolve().name == ba4.name
    assert (folder / "training_complete.json").is_file() and (aside / ba4.name).is_file()


def test_a_rollback_with_another_data_seed_trains_on_other_batches(saved_run, tmp_path, capsys, caplog):
    from modernbert_pretrain.train import rollback

    work = _copy_run(saved_run, tmp_path)
    folder = work / FOLDER
    ba2, ba4 = ckpt_io.list_checkpoints(folder)
    first = torch.load(ba4, map_location="cpu", weights_only=False)["state"]["model"]
    assert rollback.main([str(folder), ba2.name, "--data-seed", "5"]) == 0
    assert "with data.seed=5" in capsys.readouterr().err
    args = ["max_tokens=16384", *SHORT, "save.interval=2ba"]
    rc, err = _main(capsys, work, *args)  # the YAML's data seed
    assert rc == 2
    assert "add data.seed=5 to the command" in _refusal_line(err)
    rc, err = _main(capsys, work, *args, "data.seed=5")
    assert rc == 0, err[-3000:]
    assert "rollback: this run resumes from" in caplog.text and "with data seed 5" in caplog.text
    again = torch.load((folder / ckpt_io.LATEST).resolve(), map_location="cpu", weights_only=False)["state"]["model"]
    assert (folder / ckpt_io.LATEST).resolve().name == ba4.name
    assert not all(torch.equal(first[k], again[k]) for k in first)  # steps 3-4 saw other batches
    rc, err = _main(capsys, work, "max_tokens=20480", *SHORT, "save.interval=2ba", "data.seed=5")
    assert rc == 0, err[-3000:]  # later resumes keep the new seed


def test_a_finished_run_whose_latest_was_rolled_back_by_hand_continues(saved_run, tmp_path, capsys, caplog):
    work = _copy_run(saved_run, tmp_path)
    folder = work / FOLDER
    ba2, ba4 = ckpt_io.list_checkpoints(folder)
    _point_latest_at(folder, ba2.name)
    rc, err = _main(capsys, work, "max_tokens=16384", *SHORT, "save.interval=2ba")
    assert rc == 0, err[-3000:]
    assert "already complete" not in err and "now names step 2 (rolled back): continuing" in caplog.text
    assert (folder / ckpt_io.LATEST).resolve().name == ba4.name
    assert len(list(folder.glob(f"{ckpt_io.ASIDE_PREFIX}*/{ba4.name}"))) == 1


def test_the_rollback_command_is_refused_while_a_run_holds_the_folder(saved_run, tmp_path, capsys):
    from modernbert_pretrain.train import rollback

    work = _copy_run(saved_run, tmp_path)
    folder = work / FOLDER
    before = _tree(folder, lock=False)
    with RunLock(folder):
        assert rollback.main([str(folder), ckpt_io.list_checkpoints(folder)[0].name]) == 2
    assert "in use by another training run" in capsys.readouterr().err
    assert _tree(folder, lock=False) == before


# ---- load_from a checkpoint that does not fit ---------------------------------------------------------------

def test_load_from_a_checkpoint_of_another_size_is_one_line(saved_run, tmp_path, capsys):
    ckpt = ckpt_io.list_checkpoints(saved_run / FOLDER)[-1]
    work = _fresh(saved_run, tmp_path / "w")
    rc, err = _main(capsys, work, "max_tokens=8192", *SHORT, f"load_from={{path: {ckpt}}}",
                    "model.preset=tiny-large")
    assert rc == 2
    line = _refusal_line(err)
    assert line.startswith(f"error: load_from.path: {ckpt} holds a model that does not fit")
    assert "preset: 'tiny' there, 'tiny-large' here" in line and "model.preset='tiny'" in line


def test_load_from_a_checkpoint_missing_weights_is_one_line(saved_run, tmp_path, capsys):
    ckpt = torch.load(ckpt_io.list_checkpoints(saved_run / FOLDER)[-1], map_location="cpu", weights_only=False)
    gone = next(k for k in ckpt["state"]["model"] if "layers.0." in k)
    del ckpt["state"]["model"][gone]
    bad = tmp_path / "ba4-tok16384-rank0.pt"
    torch.save(ckpt, bad)
    work = _fresh(saved_run, tmp_path / "w")
    rc, err = _main(capsys, work, "max_tokens=8192", *SHORT, f"load_from={{path: {bad}}}")
    assert rc == 2
    line = _refusal_line(err)
    assert f"load_from.path: {bad} holds a model that does not fit" in line and "missing" in line
