"""--input hf:NAME[:CONFIG[:SPLIT]]: a dataset read through `datasets` in streaming mode, here a local folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from itertools import islice

import pytest

from modernbert_pretrain.data.errors import InputDataError
from modernbert_pretrain.data.prep.corpus import iter_corpus
from modernbert_pretrain.data.prep.parts import make_plan
from modernbert_pretrain.data.prep.readers import find_input_files, iter_documents
from modernbert_pretrain.data.prep.to_mds import tokenize_to_mds
from modernbert_pretrain.data.prep.tokenizer_train import train_tokenizer
from tests.data_fixtures import fresh_dir, own_shm
from tests.test_data_scripts import REPO, load_script

DOCS_PER_FILE = 50
MAX_SEQ_LEN = 128


@pytest.fixture(autouse=True)
def _shm():
    with own_shm():
        yield


def _write_jsonl(folder: str, records: list[list[dict]]) -> list[str]:
    paths = []
    for n, rows in enumerate(records):
        path = os.path.join(folder, f"part{n}.jsonl")
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def data() -> dict:
    """Three jsonl files of real documents (one empty among them) and a small tokenizer trained on them."""
    records = [{"text": r["text"]} for r in islice(iter_corpus(), 3 * DOCS_PER_FILE)]
    records[7]["text"] = "   "
    folder = fresh_dir("hf-jsonl")
    files = _write_jsonl(folder, [records[i:i + DOCS_PER_FILE] for i in range(0, len(records), DOCS_PER_FILE)])
    tokenizer = os.path.join(fresh_dir("hf-tok"), "tok")
    train_tokenizer(files, tokenizer, vocab_size=512, progress=False)
    return {"folder": folder, "files": files, "tokenizer": tokenizer, "texts": [r["text"] for r in records]}


def _samples(root: str) -> list[bytes]:
    from streaming import LocalDataset

    dataset = LocalDataset(root)
    return [dataset[i]["input_ids"].tobytes() for i in range(len(dataset))]


def test_spec_syntax_and_canonical_spelling(data):
    assert find_input_files([f"hf:{data['folder']}"]) == [f"hf:{data['folder']}::train"]
    assert find_input_files([f"hf:{data['folder']}::train"]) == [f"hf:{data['folder']}::train"]
    for bad in ("hf:", "hf:a:b:c:d"):
        with pytest.raises(InputDataError, match="expected hf:NAME"):
            find_input_files([bad])
    with pytest.raises(InputDataError, match=r"::validation: cannot open the dataset \(.*validation.*check that the folder"):
        find_input_files([f"hf:{data['folder']}::validation"])


def test_documents_and_samples_equal_those_of_the_plain_files(data):
    hf = f"hf:{data['folder']}"
    assert list(iter_documents(hf)) == [t for f in data["files"] for t in iter_documents(f)] == data["texts"]

    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = fresh_dir("hf-parquet")
    for n in range(2):
        pq.write_table(pa.table({"text": data["texts"][n::2]}), os.path.join(parquet, f"p{n}.parquet"),
                       row_group_size=10)
    plain = [t for f in find_input_files([parquet]) for t in iter_documents(f)]
    assert list(iter_documents(f"hf:{parquet}")) == plain

    outs = [fresh_dir("hf-mds"), fresh_dir("plain-mds")]
    summaries = [tokenize_to_mds([source], out, data["tokenizer"], max_seq_len=MAX_SEQ_LEN, progress=False)
                 for source, out in zip([hf, data["folder"]], outs)]
    assert summaries[0].documents == summaries[1].documents == len(data["texts"]) - 1
    assert summaries[0].empty_documents == 1 and summaries[0].split_documents > 0
    assert _samples(outs[0]) == _samples(outs[1]) and len(_samples(outs[0])) == summaries[0].samples


def test_train_tokenizer_on_hf_input_equals_training_on_the_files(data, capsys):
    script = load_script("train_tokenizer.py")
    outs = [os.path.join(fresh_dir("tok"), "t") for _ in range(2)]
    for source, out in zip([f"hf:{data['folder']}:", data["folder"]], outs):
        assert script.main(["--input", source, "--output", out, "--vocab-size", "400", "--quiet"]) == 0
    assert f"trained on {len(data['texts']) - 1} documents" in capsys.readouterr().out
    tokens = [open(os.path.join(out, "tokenizer.json")).read() for out in outs]
    assert tokens[0] == tokens[1]


def test_parts_deal_whole_shards_and_merge_to_the_samples_of_one_part(data, capsys):
    hf = f"hf:{data['folder']}"
    plan = make_plan(find_input_files([hf]), 2)
    assert [[[(u.kind, u.start, u.end) for u in c] for c in p] for p in plan.chunks] == [
        [[("hf_shards", 0, 1)], [("hf_shards", 1, 2)]], [[("hf_shards", 2, 3)]]]
    to_mds, merge = load_script("tokenize_to_mds.py"), load_script("merge_mds.py")
    roots = {1: fresh_dir("hf-parts1"), 2: fresh_dir("hf-parts2")}
    common = ["--input", hf, "--tokenizer", data["tokenizer"], "--workers", "1", "--max-seq-len", str(MAX_SEQ_LEN),
              "--quiet"]
    for parts, root in roots.items():
        for part in range(parts):
            assert to_mds.main(common + ["--output", root, "--parts", str(parts), "--part", str(part)]) == 0
        assert merge.main([root]) == 0
    assert Counter(_samples(roots[2])) == Counter(_samples(roots[1])) and _samples(roots[1])

    # resume: a chunk without done.json is redone, the others kept; the part ends identical
    part0 = os.path.join(roots[2], "part-00000-of-00002")
    before = open(os.path.join(part0, "chunk-00001", "shard.00000.mds"), "rb").read()
    os.remove(os.path.join(part0, "chunk-00001", "done.json"))
    os.remove(os.path.join(part0, "complete.json"))
    capsys.readouterr()
    assert to_mds.main(common + ["--output", roots[2], "--parts", "2", "--part", "0"]) == 0
    assert "2 chunk(s), 1 kept from an earlier run, 1 written now" in capsys.readouterr().out
    assert open(os.path.join(part0, "chunk-00001", "shard.00000.mds"), "rb").read() == before

    capsys.readouterr()
    assert to_mds.main(common + ["--output", fresh_dir("hf-parts4"), "--parts", "4", "--part", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and hf in err[0] and "3 shard(s)" in err[0] and "--parts 3" in err[0], err


def test_a_bad_record_is_one_line_naming_the_dataset_and_record(data, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    to_mds = load_script("tokenize_to_mds.py")

    def refused(folder: str, *extra: str) -> str:
        args = ["--input", f"hf:{folder}", "--output", fresh_dir("hf-bad-out"), "--tokenizer", data["tokenizer"],
                "--workers", "1", "--quiet", *extra]
        capsys.readouterr()
        assert to_mds.main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"hf:{folder}::train: shard " in err[0], err
        return err[0]

    folder = fresh_dir("hf-bad-parquet")
    pq.write_table(pa.table({"text": [None, None, ["a", "list"]]}), os.path.join(folder, "p0.parquet"))
    err = refused(folder)
    assert "shard 0" in err and "p0.parquet" in err and "record 3: field 'text' is list" in err, err
    err = refused(folder, "--text-field", "body")
    assert "shard 0" in err and "record 1: no field 'body'" in err, err

    # a file whose column type differs from the first file's: the shard cannot be read, named in one line
    mixed = fresh_dir("hf-bad-mixed")
    pq.write_table(pa.table({"text": ["a", "b"]}), os.path.join(mixed, "o0.parquet"))
    shutil.copy(os.path.join(folder, "p0.parquet"), mixed)
    err = refused(mixed)
    assert "shard 1" in err and "p0.parquet" in err and "record 1 or a later one: cannot read" in err, err

    # JSON lines whose field mixes types: datasets would JSON-encode every text of the file; it is refused
    folder = fresh_dir("hf-bad-jsonl")
    rows = [{"text": f"document {i}"} for i in range(5)]
    _write_jsonl(folder, [rows, rows[:2] + [{"text": ["a", "list"]}] + rows[3:]])
    err = refused(folder)
    assert "shard 1" in err and "part1.jsonl" in err and "record 1 or a later one: cannot read" in err, err
    assert "changed from string to array in row 2" in err, err  # pyarrow's row, counted from 0


def test_an_unknown_name_offline_is_refused_in_one_line(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"),
               PYTHONPATH=os.pathsep.join([os.path.join(REPO, "src"), os.environ.get("PYTHONPATH", "")]))
    name = "no-such-owner/no-such-dataset"
    for script in ("tokenize_to_mds.py", "train_tokenizer.py"):
        extra = ["--tokenizer", str(tmp_path / "absent")] if script == "tokenize_to_mds.py" else []
        proc = subprocess.run([sys.executable, os.path.join(REPO, "data_prep", script), "--input", f"hf:{name}:en",
                               "--output", str(tmp_path / "out"), *extra], capture_output=True, text=True, env=env,
                              timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert f"hf:{name}:en:train" in lines[0] and "HF_HUB_OFFLINE" in lines[0], lines
    assert not (tmp_path / "out").exists()
