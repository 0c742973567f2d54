"""Data at scale: tokenize_to_mds --parts, resume after SIGKILL, merge_mds and its refusals."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from modernbert_pretrain.data.prep.parts import COMPLETE_NAME, DONE_NAME, make_plan
from modernbert_pretrain.data.prep.to_mds import tokenize_to_mds
from tests.data_fixtures import PREP_MAX_SEQ_LEN, fresh_dir, own_shm, small_data
from tests.test_data_scripts import REPO, load_script

SCRIPT = os.path.join(REPO, "data_prep", "tokenize_to_mds.py")
CHUNK_MB = 0.1


@pytest.fixture(autouse=True)
def _shm():
    with own_shm():
        yield


def _corpus() -> str:
    """A folder whose largest file (the 1.6 MB small corpus) is several parts' worth, beside a gzipped
    file (never cut) and a parquet file of 4 row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = fresh_dir("parts-corpus")
    shutil.copy(small_data().corpus, os.path.join(folder, "big.jsonl"))
    with open(small_data().corpus) as f:
        lines = f.readlines()
    with gzip.open(os.path.join(folder, "small.jsonl.gz"), "wt") as f:
        f.writelines(lines[-40:])
    texts = [json.loads(line)["text"] for line in lines[-120:-40]]
    pq.write_table(pa.table({"text": texts}), os.path.join(folder, "rows.parquet"), row_group_size=20)
    return folder


def _args(corpus: str, out: str, part: int | None, parts: int | None) -> list[str]:
    args = ["--input", corpus, "--output", out, "--tokenizer", small_data().tokenizer, "--workers", "1",
            "--max-seq-len", str(PREP_MAX_SEQ_LEN), "--shard-size", "32kb", "--chunk-mb", str(CHUNK_MB), "--quiet"]
    return args + (["--parts", str(parts), "--part", str(part)] if parts else [])


def _samples(root: str) -> list[bytes]:
    from streaming import LocalDataset

    dataset = LocalDataset(root)
    return [dataset[i]["input_ids"].tobytes() for i in range(len(dataset))]


def _popen(args: list[str], **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, SCRIPT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, **env))


def test_four_concurrent_parts_merge_to_the_samples_of_one_part(capsys):
    corpus = _corpus()
    one = fresh_dir("parts1")
    to_mds, merge = load_script("tokenize_to_mds.py"), load_script("merge_mds.py")
    assert to_mds.main(_args(corpus, one, 0, 1)) == 0
    assert merge.main([one]) == 0

    four = fresh_dir("parts4")
    procs = [_popen(_args(corpus, four, part, 4)) for part in range(4)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    capsys.readouterr()
    assert merge.main([four]) == 0
    assert "merged 4 part(s)" in capsys.readouterr().out

    holders = Counter()
    for part in range(4):
        with open(os.path.join(four, f"part-{part:05d}-of-00004", COMPLETE_NAME)) as f:
            record = json.load(f)
        holders.update({path for path, *_ in record["inputs"]})
    assert holders[os.path.join(corpus, "big.jsonl")] >= 2  # the largest file was cut between parts
    assert Counter(_samples(four)) == Counter(_samples(one))
    assert len(_samples(four)) > 0

    from streaming import StreamingDataset

    streamed = StreamingDataset(local=four, shuffle=False, batch_size=1)
    assert len(streamed) == len(_samples(one))
    assert load_script("validate_dataset.py").main([four, "--quiet"]) == 0
    assert "1 index file(s)" in capsys.readouterr().out

    from modernbert_pretrain.data import build_train_loader
    from tests.data_fixtures import make_cfg, take

    batch = take(build_train_loader(make_cfg(local=four), rank=0, world_size=1), 1)[0]
    assert batch["num_real_tokens"] > 0


def test_parts_balance_bytes_and_cover_every_line_once():
    corpus = _corpus()
    big = os.path.join(corpus, "big.jsonl")
    plan = make_plan([big], 4, int(CHUNK_MB * 2**20))
    sizes = [sum(u.end - u.start for c in part for u in c) for part in plan.chunks]
    assert max(sizes) - min(sizes) <= 1
    from modernbert_pretrain.data.prep.readers import iter_documents, iter_unit_documents

    texts = [t for part in plan.chunks for chunk in part for unit in chunk for t in iter_unit_documents(unit)]
    assert texts == list(iter_documents(big))


def _part_files(folder: str) -> dict[str, bytes]:
    found = {}
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def _kill_mid_chunk(proc: subprocess.Popen, part_dir: str, min_done: int) -> tuple[list[str], str]:
    """SIGKILL ``proc`` once ``min_done`` chunks are done and the next one holds a shard but no done.json."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the part finished before it could be killed"
        done = sorted(c for c in os.listdir(part_dir) if os.path.isfile(os.path.join(part_dir, c, DONE_NAME))) \
            if os.path.isdir(part_dir) else []
        if len(done) >= min_done:
            current = os.path.join(part_dir, f"chunk-{len(done):05d}")
            if os.path.isdir(current) and any(n.startswith("shard.") for n in os.listdir(current)):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                now_done = sorted(c for c in os.listdir(part_dir)
                                  if os.path.isfile(os.path.join(part_dir, c, DONE_NAME)))
                return now_done, current
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the part never reached a chunk to kill in")


def test_a_part_killed_mid_chunk_resumes_to_identical_content(capsys):
    corpus = os.path.join(_corpus(), "big.jsonl")
    ref, killed = fresh_dir("ref"), fresh_dir("killed")
    to_mds, merge = load_script("tokenize_to_mds.py"), load_script("merge_mds.py")

    def args(out: str, part: int) -> list[str]:
        return _args(corpus, out, part, 2) + ["--shard-size", "4kb"]  # shards appear early in a chunk

    for part in range(2):
        assert to_mds.main(args(ref, part)) == 0
    assert to_mds.main(args(killed, 1)) == 0

    part_dir = os.path.join(killed, "part-00000-of-00002")
    proc = _popen(args(killed, 0), MODERNBERT_PREP_TEST_SAMPLE_DELAY="0.01")
    done, current = _kill_mid_chunk(proc, part_dir, min_done=2)
    assert not os.path.isfile(os.path.join(current, DONE_NAME))
    kept = {c: os.stat(os.path.join(part_dir, c, DONE_NAME)).st_mtime_ns for c in done}
    capsys.readouterr()
    assert merge.main([killed]) == 2
    assert "part 0 of 2 is unfinished" in capsys.readouterr().err

    # a rerun with another shard size is another plan: refused in one line naming the folder
    assert to_mds.main(_args(corpus, killed, 0, 2)) == 2
    err = capsys.readouterr().err.strip()
    assert "another plan" in err and len(err.splitlines()) == 1
    assert to_mds.main(args(killed, 0)) == 0
    out = capsys.readouterr().out
    total = len(make_plan([corpus], 2, int(CHUNK_MB * 2**20)).chunks[0])
    # the bound: every chunk done before the kill is kept, only the rest (the killed one first) is written
    assert f"{total} chunk(s), {len(done)} kept from an earlier run, {total - len(done)} written now" in out
    assert {c: os.stat(os.path.join(part_dir, c, DONE_NAME)).st_mtime_ns for c in done} == kept

    # byte for byte the part of the uninterrupted run
    assert _part_files(part_dir) == _part_files(os.path.join(ref, "part-00000-of-00002"))
    assert merge.main([killed]) == 0 and merge.main([ref]) == 0
    assert _samples(killed) == _samples(ref)

    capsys.readouterr()
    assert to_mds.main(args(killed, 0)) == 0
    assert "already complete" in capsys.readouterr().out
    assert {c: os.stat(os.path.join(part_dir, c, DONE_NAME)).st_mtime_ns for c in done} == kept


def _two_parts(parts_written=(0, 1)) -> tuple[str, str]:
    corpus = os.path.join(fresh_dir("refuse"), "c.jsonl")
    with open(small_data().corpus) as src, open(corpus, "w") as dst:
        dst.writelines(src.readlines()[:60])
    out = fresh_dir("refuse-out")
    for part in parts_written:
        tokenize_to_mds([corpus], out, small_data().tokenizer, parts=2, part=part, max_seq_len=PREP_MAX_SEQ_LEN,
                        progress=False)
    return corpus, out


def _refused(capsys, root: str, *words: str) -> None:
    capsys.readouterr()
    assert load_script("merge_mds.py").main([root]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), lines
    assert not os.path.isfile(os.path.join(root, "index.json"))


def test_merge_refuses_a_missing_part(capsys):
    _, out = _two_parts(parts_written=(0,))
    _refused(capsys, out, "part 1 of 2 is missing", "--part 1")


def test_merge_refuses_an_unfinished_part(capsys):
    _, out = _two_parts()
    os.remove(os.path.join(out, "part-00001-of-00002", COMPLETE_NAME))
    _refused(capsys, out, "part 1 of 2 is unfinished", "part-00001-of-00002")


def test_merge_refuses_parts_of_other_tokenizers_or_dtypes(capsys):
    _, out = _two_parts()
    fp_path = os.path.join(out, "part-00001-of-00002", "tokenizer_fingerprint.json")
    with open(fp_path) as f:
        original = f.read()
    with open(fp_path, "w") as f:
        json.dump(dict(json.loads(original), sha256="0" * 64, name="other"), f)
    _refused(capsys, out, "part 1", "another tokenizer")
    with open(fp_path, "w") as f:
        f.write(original)
    complete = os.path.join(out, "part-00001-of-00002", COMPLETE_NAME)
    with open(complete) as f:
        record = json.load(f)
    with open(complete, "w") as f:
        json.dump(dict(record, dtype="uint32"), f)
    _refused(capsys, out, "part 1", "uint32")


def test_a_part_refuses_folders_of_another_plan(capsys):
    corpus, out = _two_parts(parts_written=(0,))
    to_mds = load_script("tokenize_to_mds.py")
    args = ["--input", corpus, "--output", out, "--tokenizer", small_data().tokenizer, "--quiet"]
    capsys.readouterr()
    assert to_mds.main(args + ["--parts", "3", "--part", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "part-00000-of-00002" in err[0] and "--parts 2" in err[0]
    assert to_mds.main(args + ["--parts", "2", "--part", "1", "--max-seq-len", "128"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another plan" in err[0]
    assert not os.path.exists(os.path.join(out, "part-00001-of-00002"))
    assert to_mds.main(args + ["--parts", "2", "--part", "0", "--max-seq-len", "128"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert to_mds.main(args + ["--parts", "2", "--part", "0", "--max-seq-len", "128", "--overwrite"]) == 0
