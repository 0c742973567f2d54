"""Export of checkpoints to Hugging Face folders: the command, --all, the callback, parity and bad input."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
import transformers

from modernbert_pretrain.checkpoints import (
    decode_run_info,
    encode_run_info,
    list_checkpoints,
    model_from_checkpoint,
)
from modernbert_pretrain.export import ExportError, export_checkpoint, main

from .train_helpers import ROOT, env, run_train


@pytest.fixture(scope="module")
def run_dir(smoke_workdir, tmp_path_factory):
    """A short smoke run with a checkpoint every 2 steps and the export callback on."""
    work = tmp_path_factory.mktemp("export") / "w"
    shutil.copytree(smoke_workdir, work, ignore=shutil.ignore_patterns("corpus"))
    run_train("smoke/phase1.yaml", work, "max_tokens=24576", "data.batch_size_warmup_start=null", "eval=null",
              "scheduler.warmup_tokens=4096", "save.interval=2ba", f"export.folder={work}/hf-callback",
              "export.interval=checkpoint")
    return work


def _ckpts(run_dir):
    return list_checkpoints(run_dir / "checkpoints/smoke-phase1")


def test_single_export_loads_in_transformers_with_fill_mask(run_dir, tmp_path):
    ckpt = _ckpts(run_dir)[-1]
    folder, written = export_checkpoint(ckpt, tmp_path)
    assert written and folder.name == "step6-tok24576"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "training_metadata.json"):
        assert (folder / name).is_file(), name
    meta = json.loads((folder / "training_metadata.json").read_text())
    assert meta["phase"] == "smoke-phase1" and meta["step"] == 6 and meta["tokens_seen"] == 24576
    assert meta["lr"] == pytest.approx(3e-3) and meta["train_config"]["run_name"] == "smoke-phase1"
    model = transformers.AutoModelForMaskedLM.from_pretrained(folder)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    fill = transformers.pipeline("fill-mask", model=model, tokenizer=tok)
    guesses = fill(f"import os{tok.mask_token}path", top_k=2)
    assert len(guesses) == 2 and all(0 <= g["score"] <= 1 for g in guesses)


def test_exported_logits_match_the_checkpoint_model(run_dir, tmp_path):
    ckpt = _ckpts(run_dir)[-1]
    folder, _ = export_checkpoint(ckpt, tmp_path)
    ours = model_from_checkpoint(ckpt, attn_backend="sdpa").eval()
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    ids = torch.randint(5, ours.config.vocab_size, (2, 100), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 60:] = 0
    with torch.no_grad():
        a = ours(ids, attention_mask=mask).logits
        b = theirs(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(a[mask.bool()], b[mask.bool()], atol=1e-4, rtol=0)


def test_export_all_skips_finished_folders(run_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "modernbert_pretrain.export", str(run_dir / "checkpoints/smoke-phase1"),
                          str(tmp_path), "--all"], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["step2-tok8192", "step4-tok16384", "step6-tok24576"]
    assert out.stdout.strip().splitlines()[-1] == str(tmp_path / "step6-tok24576")
    shutil.rmtree(tmp_path / "step4-tok16384")  # as if the first export had been interrupted there
    again = subprocess.run([sys.executable, "-m", "modernbert_pretrain.export",
                            str(run_dir / "checkpoints/smoke-phase1"), str(tmp_path), "--all"],
                           capture_output=True, text=True, env=env(), cwd=ROOT, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already exported") == 2 and again.stderr.count("exported:") == 3
    assert (tmp_path / "step4-tok16384" / "model.safetensors").is_file()


def test_bfloat16_export(run_dir, tmp_path):
    folder, _ = export_checkpoint(_ckpts(run_dir)[0], tmp_path, dtype="bfloat16")
    model = transformers.AutoModelForMaskedLM.from_pretrained(folder, torch_dtype="auto")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_callback_exported_every_checkpoint(run_dir):
    folders = sorted(p.name for p in (run_dir / "hf-callback").iterdir())
    assert folders == ["step2-tok8192", "step4-tok16384", "step6-tok24576"]
    folder = run_dir / "hf-callback" / "step6-tok24576"
    ours = model_from_checkpoint(_ckpts(run_dir)[-1])
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(folder)
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(value, ours.state_dict()[key], atol=0, rtol=0)


def test_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "notes.pt"
    bogus.write_text("hello")
    with pytest.raises(ExportError, match="not a readable checkpoint"):
        export_checkpoint(bogus, tmp_path / "out")
    assert main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2


def _edit_run_info(ckpt, edit) -> None:
    info = decode_run_info(ckpt["state"]["callbacks"]["RunInfo"])
    edit(info)
    ckpt["state"]["callbacks"]["RunInfo"] = encode_run_info(info)


def test_unmappable_config(run_dir, tmp_path):
    ckpt = torch.load(_ckpts(run_dir)[0], map_location="cpu", weights_only=False)
    _edit_run_info(ckpt, lambda info: info["model_config"].update(rotary_scaling="yarn"))
    bad = tmp_path / "ba2-bad.pt"
    torch.save(ckpt, bad)
    with pytest.raises(ExportError, match="cannot be mapped to ModernBERT.*rotary_scaling"):
        export_checkpoint(bad, tmp_path / "out")


def test_output_holding_a_different_export(run_dir, tmp_path):
    ckpt = _ckpts(run_dir)[-1]
    folder, _ = export_checkpoint(ckpt, tmp_path)
    meta = json.loads((folder / "training_metadata.json").read_text())
    meta["phase"] = "someone-else"
    (folder / "training_metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ExportError, match="already holds a different export"):
        export_checkpoint(ckpt, tmp_path)


def test_partial_export_never_looks_complete(run_dir, tmp_path, monkeypatch):
    from modernbert_pretrain.model import ModernBertForMaskedLM

    def boom(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ModernBertForMaskedLM, "save_pretrained", boom)
    with pytest.raises(OSError, match="disk full"):
        export_checkpoint(_ckpts(run_dir)[-1], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_hub_plan_one_branch_per_checkpoint(run_dir, tmp_path):
    from modernbert_pretrain.export import hub_plan

    folders = [export_checkpoint(c, tmp_path)[0] for c in _ckpts(run_dir)]
    plan = hub_plan(folders, "me/modernbert-smoke")
    assert [p["revision"] for p in plan] == ["step2-tok8192", "step4-tok16384", "step6-tok24576"]
    assert all(p["repo_id"] == "me/modernbert-smoke" for p in plan)
    assert {"config.json", "model.safetensors", "tokenizer.json", "training_metadata.json"} <= set(plan[0]["files"])
    with pytest.raises(ExportError, match="repo id like 'user/name'"):
        hub_plan(folders, "no-namespace")


def test_sharded_checkpoint_folder_exports_like_a_monolithic_one(run_dir, tmp_path):
    """A torch.distributed.checkpoint folder (the layout FSDP's sharded checkpoints use), written here in one
    process from the monolithic checkpoint, exports to the same weights."""
    import torch.distributed.checkpoint as dcp

    ckpt = torch.load(_ckpts(run_dir)[-1], map_location="cpu", weights_only=False)
    sharded = tmp_path / "ba6-sharded"
    dcp.save({"state": ckpt["state"]}, checkpoint_id=str(sharded), no_dist=True)
    assert (sharded / ".metadata").is_file()
    folder, _ = export_checkpoint(sharded, tmp_path / "out")
    mono, _ = export_checkpoint(_ckpts(run_dir)[-1], tmp_path / "mono")
    a = transformers.AutoModelForMaskedLM.from_pretrained(folder).state_dict()
    b = transformers.AutoModelForMaskedLM.from_pretrained(mono).state_dict()
    assert folder.name == mono.name and all(torch.equal(a[k], b[k]) for k in b)


def _cli(*args, extra_env=None):
    run_env = env()
    run_env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "modernbert_pretrain.export", *map(str, args)], capture_output=True,
                          text=True, env=run_env, cwd=ROOT, timeout=300)


def test_export_target_that_is_a_file_is_one_line_and_exit_2(run_dir, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("not a folder")
    out = _cli(_ckpts(run_dir)[-1], target)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [f"export error: output folder {target} is a file, not a folder; "
                                               "give a folder path (it is created if missing)"]
    assert target.read_text() == "not a folder"
    debug = _cli(_ckpts(run_dir)[-1], target, extra_env={"MODERNBERT_DEBUG": "1"})
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert "Traceback" in _cli(_ckpts(run_dir)[-1], target, "--debug").stderr


@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_exported_folder_follows_the_umask(run_dir, tmp_path, umask):
    import os

    old = os.umask(umask)
    try:
        folder, _ = export_checkpoint(_ckpts(run_dir)[-1], tmp_path / "out")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    assert {"model.safetensors", "config.json", "tokenizer.json", "training_metadata.json"} <= set(modes)
    assert modes == {name: 0o666 & ~umask for name in modes}


def test_stale_temp_folders_of_killed_exports_are_removed(run_dir, tmp_path, caplog):
    import socket

    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        out = tmp_path / "out"
        stale = out / f".tmp-step4-tok16384-pid{dead.pid}@{host}-0123abcd"
        running = out / f".tmp-step6-tok24576-pid{live.pid}@{host}-89abcdef"
        elsewhere = out / f".tmp-step6-tok24576-pid{dead.pid}@not-{host}-89abcdef"
        unnamed = out / ".tmp-step2-tok8192-k3j4h5"
        for folder in (stale, running, elsewhere, unnamed):
            folder.mkdir(parents=True)
            (folder / "model.safetensors").write_bytes(b"partial")
        with caplog.at_level("WARNING"):
            folder, written = export_checkpoint(_ckpts(run_dir)[-1], out)
        assert written
        assert not stale.exists()
        assert running.is_dir() and elsewhere.is_dir() and unnamed.is_dir()
        text = caplog.text
        assert f"removed {stale}" in text and str(unnamed) in text and str(elsewhere) in text
        assert sorted(p.name for p in out.iterdir()) == sorted([running.name, elsewhere.name, unnamed.name,
                                                                 folder.name])
    finally:
        live.kill()
        live.wait()


def test_export_all_skips_a_checkpoint_deleted_mid_pass(run_dir, tmp_path, monkeypatch, capsys):
    import modernbert_pretrain.export as export_mod

    run = tmp_path / "run"
    shutil.copytree(run_dir / "checkpoints/smoke-phase1", run, symlinks=True)
    ckpts = list_checkpoints(run)
    assert len(ckpts) == 3
    real = export_mod.export_checkpoint

    def rotating(path, *args, **kwargs):
        if path == ckpts[0]:
            ckpts[1].unlink()  # rotation deletes the next checkpoint while the first one is exported
        return real(path, *args, **kwargs)

    monkeypatch.setattr(export_mod, "export_checkpoint", rotating)
    assert main([str(run), str(tmp_path / "out"), "--all"]) == 0
    captured = capsys.readouterr()
    assert f"skipped: {ckpts[1]} was deleted during the export" in captured.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["step2-tok8192", "step6-tok24576"]
    assert captured.out.strip() == str(tmp_path / "out" / "step6-tok24576")


def test_export_folder_that_is_a_file_is_refused_before_training(smoke_workdir, tmp_path):
    from modernbert_pretrain.config import load
    from modernbert_pretrain.schema import ConfigError
    from modernbert_pretrain.train.preflight import check_paths

    target = tmp_path / "hf.txt"
    target.write_text("notes")
    _, cfg = load(ROOT / "yamls/smoke/phase1.yaml", [f"workdir={smoke_workdir}", f"export.folder={target}",
                                                       "export.interval=checkpoint"])
    with pytest.raises(ConfigError, match=f"export.folder: {target} is a file"):
        check_paths(cfg, strict=True)


# ----------------------------------------------------------------------------- counts across phases
def _meta(folder):
    return json.loads((folder / "training_metadata.json").read_text())


@pytest.fixture(scope="module")
def phase2_dir(run_dir, tmp_path_factory):
    """Phase 2 (load_from phase 1's run folder, whose latest checkpoint is step 6, 24576 tokens): 2 steps of
    8 x 512 tokens, then the same run resumed and extended by one step."""
    out = tmp_path_factory.mktemp("phase2")
    common = ["eval=null", f"save.folder={out}/ckpt", "save.interval=1ba", f"export.folder={out}/hf-callback",
              "export.interval=checkpoint"]
    first = run_train("smoke/phase2.yaml", run_dir, "max_tokens=8192", *common)
    run_train("smoke/phase2.yaml", run_dir, "max_tokens=12288", *common)
    return out, first


def test_phase_two_exports_count_phase_one_tokens(phase2_dir, tmp_path):
    out, first = phase2_dir
    assert "tokens seen before this run: 24576 (phases: smoke-phase1)" in first.stderr
    ckpts = list_checkpoints(out / "ckpt")
    assert [c.name.split("-")[0] for c in ckpts] == ["ba1", "ba2", "ba3"]
    folder, _ = export_checkpoint(ckpts[1], tmp_path)
    meta = _meta(folder)
    # the phase-local fields and the folder name stay as they were
    assert folder.name == "step2-tok8192" and meta["step"] == 2 and meta["tokens_seen"] == 8192
    assert meta["total_tokens_seen"] == 24576 + 8192 and meta["total_steps"] == 6 + 2
    assert meta["phases"] == ["smoke-phase1", "smoke-phase2"]
    # the step after the resume keeps the prior the run started with
    resumed = _meta(export_checkpoint(ckpts[2], tmp_path)[0])
    assert resumed["tokens_seen"] == 12288 and resumed["total_tokens_seen"] == 24576 + 12288
    # the export written during training says the same
    for name, total in (("step2-tok8192", 24576 + 8192), ("step3-tok12288", 24576 + 12288)):
        assert _meta(out / "hf-callback" / name)["total_tokens_seen"] == total, name


def test_phase_one_total_equals_its_own_count(run_dir, tmp_path):
    meta = _meta(export_checkpoint(_ckpts(run_dir)[-1], tmp_path)[0])
    assert meta["total_tokens_seen"] == meta["tokens_seen"] == 24576 and meta["total_steps"] == 6
    assert meta["phases"] == ["smoke-phase1"]
    assert _meta(run_dir / "hf-callback" / "step6-tok24576")["total_tokens_seen"] == 24576


def test_checkpoints_without_a_recorded_prior_still_export(run_dir, phase2_dir, tmp_path):
    """Checkpoints written before the prior was recorded: a run without load_from counts from 0; one with
    load_from has an unknown total (null), never a phase-local count passed off as cumulative."""
    out, _ = phase2_dir
    for source, name, expected in ((_ckpts(run_dir)[-1], "ba6-old.pt", 24576),
                                   (list_checkpoints(out / "ckpt")[1], "ba2-old.pt", None)):
        ckpt = torch.load(source, map_location="cpu", weights_only=False)
        # the run info as such checkpoints held it: a plain dict (before its JSON form), without "prior"
        info = decode_run_info(ckpt["state"]["callbacks"]["RunInfo"])
        del info["prior"]
        ckpt["state"]["callbacks"]["RunInfo"] = info
        old = tmp_path / name
        torch.save(ckpt, old)
        meta = _meta(export_checkpoint(old, tmp_path / name.replace(".pt", ""))[0])
        assert meta["total_tokens_seen"] == expected, name


def test_init_from_starts_a_new_count(run_dir):
    """Tiling makes a new, larger model: its count starts at 0 although the tiled source had seen 24576 tokens."""
    from modernbert_pretrain.config import load
    from modernbert_pretrain.train.builder import start_model

    _, cfg = load(ROOT / "yamls/smoke/large/phase1.yaml", [f"workdir={run_dir}"])
    _, _, prior = start_model(cfg, resuming=False)
    assert prior["tokens_seen"] == 0 and prior["steps"] == 0 and prior["phases"] == []


# ----------------------------------------------------------------------------- identity, full disk, tokenizer
def _other_run(run_dir, tmp_path):
    """A checkpoint of another run with the same run name, step and tokens (as a second run with another LR
    would write): other weights, another save folder."""
    ckpt = torch.load(_ckpts(run_dir)[-1], map_location="cpu", weights_only=False)
    weights = ckpt["state"]["model"]
    key = next(k for k in weights if "layers.0." in k and weights[k].is_floating_point())
    weights[key] = weights[key] + 1.0
    _edit_run_info(ckpt, lambda info: info["train_config"]["save"].update(folder=str(tmp_path / "other-run")))
    other = tmp_path / "other-run" / _ckpts(run_dir)[-1].name
    other.parent.mkdir()
    torch.save(ckpt, other)
    return other


def test_an_export_of_another_run_with_the_same_step_is_refused_naming_both(run_dir, tmp_path, capsys):
    ours = _ckpts(run_dir)[-1]
    other = _other_run(run_dir, tmp_path)
    out = tmp_path / "out"
    assert main([str(ours), str(out)]) == 0
    capsys.readouterr()
    assert main([str(other), str(out)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "already exported" not in err, err
    assert lines[0].startswith(f"export error: {out / 'step6-tok24576'} already holds a different export")
    assert f"saved in {run_dir / 'checkpoints/smoke-phase1'}" in lines[0]
    assert f"saved in {tmp_path / 'other-run'}" in lines[0]
    mine = transformers.AutoModelForMaskedLM.from_pretrained(out / "step6-tok24576").state_dict()
    assert all(torch.equal(mine[k], v) for k, v in model_from_checkpoint(ours).state_dict().items())


def test_the_same_checkpoint_is_already_exported_whoever_wrote_it(run_dir, tmp_path):
    """The training-time export and the command's export of the same checkpoint are one export, also when the
    folder was written before the weights digest was recorded."""
    out = tmp_path / "hf"
    shutil.copytree(run_dir / "hf-callback", out)
    folder, written = export_checkpoint(_ckpts(run_dir)[-1], out)
    assert not written and folder == out / "step6-tok24576"
    meta_path = out / "step4-tok16384" / "training_metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["weights_sha256"]
    meta_path.write_text(json.dumps(meta))
    assert export_checkpoint(_ckpts(run_dir)[1], out) == (out / "step4-tok16384", False)


def _full_disk_safetensors(monkeypatch):
    """What safetensors raises when the disk fills (its error carries no errno, only the text)."""
    from safetensors import SafetensorError

    from modernbert_pretrain.model import hf

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    monkeypatch.setattr(hf, "save_file", full)


def test_a_full_disk_during_export_says_so(run_dir, tmp_path, monkeypatch, capsys):
    import re

    _full_disk_safetensors(monkeypatch)
    out = tmp_path / "out"
    assert main([str(_ckpts(run_dir)[-1]), str(out)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"export error: no space left on device while exporting step 6 (step6-tok24576) "
                               f"to {out}: ")
    assert re.search(r": [\d.]+ [MG]iB free, it needs about [\d.]+ [MG]iB\. The partial folder was removed",
                     lines[0]), lines[0]
    assert list(out.iterdir()) == []  # the partial folder is gone


def test_an_export_larger_than_the_free_space_is_refused_before_writing(run_dir, tmp_path, monkeypatch, capsys):
    from modernbert_pretrain import diskspace

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(diskspace.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    out = tmp_path / "out"
    assert main([str(_ckpts(run_dir)[-1]), str(out)]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"export error: no space left on device while exporting step 6 (step6-tok24576) to {out}: "
                           "0.00 MiB free, it needs about") and "Nothing was written" in line
    assert list(out.iterdir()) == []


def test_a_training_time_export_on_a_full_disk_does_not_stop_the_run(smoke_workdir, tmp_path, monkeypatch,
                                                                     caplog):
    import errno

    from modernbert_pretrain import checkpoints as ckpt_io
    from modernbert_pretrain.config import load_config
    from modernbert_pretrain.model import hf
    from modernbert_pretrain.train.builder import build_trainer

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hf, "save_file", full)
    work = tmp_path / "w"
    shutil.copytree(smoke_workdir, work, ignore=shutil.ignore_patterns("corpus", "checkpoints"))
    cfg = load_config(ROOT / "yamls/smoke/phase1.yaml",
                      [f"workdir={work}", "max_tokens=16384", "data.batch_size_warmup_start=null", "eval=null",
                       "scheduler.warmup_tokens=0", "save.interval=2ba", f"export={{folder: {work / 'hf'}}}"])
    trainer = build_trainer(cfg)
    trainer.fit()
    trainer.close()
    assert (work / "checkpoints/smoke-phase1" / ckpt_io.LATEST).resolve().name.startswith("ba4-")
    assert caplog.text.count("training-time export skipped, training goes on: no space left on device") == 2
    assert list((work / "hf").iterdir()) == []


def test_an_empty_tokenizer_folder_is_named(run_dir, tmp_path, capsys):
    empty = tmp_path / "tok"
    empty.mkdir()
    assert main([str(_ckpts(run_dir)[-1]), str(tmp_path / "out"), "--tokenizer", str(empty)]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"export error: --tokenizer {empty}: the folder has no tokenizer.json or "
                           "tokenizer_config.json (it is empty)")
    assert "pass --tokenizer" not in line
