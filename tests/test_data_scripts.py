"""The data_prep scripts: --help works, and each runs end to end and prints its summary."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.data_fixtures import fresh_dir, small_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["sample_corpus.py", "train_tokenizer.py", "tokenize_to_mds.py", "validate_dataset.py", "merge_mds.py"]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(REPO, "data_prep", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_script_has_help():
    commands = [[sys.executable, os.path.join(REPO, "data_prep", s), "--help"] for s in SCRIPTS]
    commands.append([sys.executable, "-m", "modernbert_pretrain.data.inspect", "--help"])
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    for command, proc in zip(commands, procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (command, err)
        assert "usage:" in out


def test_scripts_run_and_summarize(tmp_path, capsys):
    corpus = str(tmp_path / "corpus.jsonl")
    assert load_script("sample_corpus.py").main([corpus, "--max-bytes", "300K", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "documents" in out and "stopped at --max-bytes: yes" in out

    tok = str(tmp_path / "tok")
    assert load_script("train_tokenizer.py").main(["--input", corpus, "--output", tok, "--vocab-size", "400",
                                                   "--quiet"]) == 0
    assert "multiple of 64" in capsys.readouterr().out

    mds = os.path.join(fresh_dir("script"), "mds")
    to_mds = load_script("tokenize_to_mds.py")
    assert to_mds.main(["--input", corpus, "--output", mds, "--tokenizer", tok, "--workers", "1",
                        "--max-seq-len", "256", "--quiet"]) == 0
    out = capsys.readouterr().out
    for word in ("documents:", "tokens/s", "shards:"):
        assert word in out
    assert to_mds.main(["--input", corpus, "--output", mds, "--tokenizer", tok, "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err

    validate = load_script("validate_dataset.py")
    assert validate.main([mds, "--quiet"]) == 0
    assert "OK" in capsys.readouterr().out
    with open(os.path.join(mds, "index.json")) as f:
        shard = json.load(f)["shards"][0]["raw_data"]["basename"]
    with open(os.path.join(mds, shard), "r+b") as f:
        f.truncate(100)
    assert validate.main([mds, "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f"PROBLEM {os.path.join(mds, shard)}" in out and "FAILED" in out


def test_bad_arguments_exit_with_a_message(tmp_path, capsys):
    to_mds = load_script("tokenize_to_mds.py")
    code = to_mds.main(["--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o"),
                        "--tokenizer", small_data().tokenizer, "--quiet"])
    assert code == 2 and "missing.jsonl: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load_script("sample_corpus.py").main([str(tmp_path / "c.jsonl"), "--max-bytes", "lots"])


def test_a_full_disk_while_tokenizing_says_so(tmp_path, capsys, monkeypatch):
    import errno
    import re

    from streaming import MDSWriter

    def full(self, *args, **kwargs):  # the shard file's write fails as it does on a full disk
        raise OSError(errno.ENOSPC, "No space left on device")

    data = small_data()
    monkeypatch.setattr(MDSWriter, "flush_shard", full)
    out = os.path.join(fresh_dir("full"), "mds")
    to_mds = load_script("tokenize_to_mds.py")
    assert to_mds.main(["--input", data.corpus, "--output", out, "--tokenizer", data.tokenizer, "--workers", "1",
                        "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: no space left on device while writing shards to {out}: ")
    assert re.search(r": [\d.]+ [MG]iB free, it needs up to about [\d.]+ [MG]iB\. The partial shards were removed",
                     lines[0]), lines[0]
    assert not [name for name in os.listdir(out) if name.startswith("shard.")]
