"""Export of checkpoints to Hugging Face folders: the command, --all, the callback, parity and bad input."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
import transformers

from modernbert_pretrain.checkpoints import list_checkpoints, model_from_checkpoint
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


def test_unmappable_config(run_dir, tmp_path):
    ckpt = torch.load(_ckpts(run_dir)[0], map_location="cpu", weights_only=False)
    ckpt["state"]["callbacks"]["RunInfo"]["model_config"]["rotary_scaling"] = "yarn"
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
