"""Data preparation: corpus, tokenizer, MDS shards (every token exactly once), validation, bad inputs."""

from __future__ import annotations

import gzip
import json
import os
import shutil

import numpy as np
import pytest

from modernbert_pretrain.data.errors import InputDataError, OutputExistsError, TokenizerLoadError
from modernbert_pretrain.data.prep.corpus import iter_corpus, write_corpus
from modernbert_pretrain.data.prep.to_mds import tokenize_to_mds
from modernbert_pretrain.data.shards import validate_mds_dataset
from tests.data_fixtures import PREP_MAX_SEQ_LEN, fresh_dir, small_data


def read_samples(mds: str) -> list[np.ndarray]:
    """Samples of an MDS folder in written order."""
    from streaming import LocalDataset

    dataset = LocalDataset(mds)
    return [dataset[i]["input_ids"] for i in range(len(dataset))]


def load_docs(path: str) -> list[str]:
    with open(path) as f:
        return [json.loads(line)["text"] for line in f]


def test_corpus_is_deterministic_and_varied():
    data = small_data()
    again = fresh_dir("corpus")
    summary = write_corpus(os.path.join(again, "c.jsonl"), max_bytes=200_000, progress=False)
    first = [r for _, r in zip(range(summary.documents), iter_corpus())]
    with open(os.path.join(again, "c.jsonl")) as f:
        assert [json.loads(line) for line in f] == first
    assert summary.bytes <= 200_000 and summary.reached_limit
    records = [json.loads(line) for line in open(data.corpus)]
    kinds = {r["source"].split(":", 1)[0] for r in records}
    assert kinds == {"code", "docstring", "text"}
    lengths = np.array([len(r["text"]) for r in records])
    assert lengths.max() > 50 * np.median(lengths)  # short docstrings next to long modules


def test_tokenizer_folder_loads_with_specials_and_padding():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(small_data().tokenizer)
    assert len(tok) % 64 == 0
    assert (tok.cls_token, tok.sep_token, tok.pad_token, tok.mask_token, tok.unk_token) == (
        "[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]")
    ids = tok("def f(x): return x").input_ids
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    # [MASK] absorbs the space before it (lstrip), as in ModernBERT
    assert tok(" [MASK]", add_special_tokens=False).input_ids == [tok.mask_token_id]


def test_every_input_token_lands_in_the_shards_exactly_once():
    from transformers import AutoTokenizer

    data = small_data()
    tok = AutoTokenizer.from_pretrained(data.tokenizer)
    samples = read_samples(data.mds)
    docs = [d for d in load_docs(data.corpus) if d.strip()]
    assert all(s.dtype == np.uint16 for s in samples)
    assert max(s.size for s in samples) <= PREP_MAX_SEQ_LEN
    position, chunk = 0, PREP_MAX_SEQ_LEN - 2
    for text in docs:
        expected = tok(text, add_special_tokens=False).input_ids
        pieces = samples[position:position + -(-len(expected) // chunk)]
        position += len(pieces)
        for piece in pieces:
            assert piece[0] == tok.cls_token_id and piece[-1] == tok.sep_token_id
        assert np.concatenate([p[1:-1] for p in pieces]).tolist() == expected
    assert position == len(samples)
    summary = data.mds_summary
    assert summary.split_documents > 0 and summary.shards > 1
    assert summary.tokens == sum(s.size for s in samples)


def test_workers_give_identical_shards_and_all_formats_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = small_data()
    docs = load_docs(data.corpus)[:300]
    pq.write_table(pa.table({"content": docs[:100]}), tmp_path / "a.parquet")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        for d in docs[100:299]:
            f.write(json.dumps({"content": d}) + "\n")
        f.write(json.dumps({"content": "   "}) + "\n")  # empty: skipped and counted
    (tmp_path / "c.txt").write_text(docs[299])
    one = tokenize_to_mds([str(tmp_path)], fresh_dir("w1"), data.tokenizer, text_field="content", workers=1,
                          max_seq_len=128, progress=False)
    two = tokenize_to_mds([str(tmp_path)], fresh_dir("w2"), data.tokenizer, text_field="content", workers=2,
                          max_seq_len=128, progress=False)
    assert one.documents == 300 and one.empty_documents == 1 and one.files == 3
    a, b = read_samples(one.output), read_samples(two.output)
    assert len(a) == len(b) == one.samples and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_bad_inputs_name_the_file(tmp_path):
    tok = small_data().tokenizer
    out = fresh_dir("bad")
    with pytest.raises(InputDataError, match="nope.jsonl: no such file"):
        tokenize_to_mds([str(tmp_path / "nope.jsonl")], out, tok, progress=False)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(InputDataError, match="no documents"):
        tokenize_to_mds([str(tmp_path / "empty.jsonl")], out, tok, progress=False)
    assert os.listdir(out) == []  # nothing half-written stays behind
    (tmp_path / "field.jsonl").write_text('{"text": "ok"}\n{"body": "x"}\n')
    with pytest.raises(InputDataError, match=r"field.jsonl:2: no field 'text'"):
        tokenize_to_mds([str(tmp_path / "field.jsonl")], out, tok, progress=False)
    (tmp_path / "broken.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(InputDataError, match="broken.jsonl.gz: cannot read"):
        tokenize_to_mds([str(tmp_path / "broken.jsonl.gz")], out, tok, progress=False)
    (tmp_path / "json.jsonl").write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(InputDataError, match=r"json.jsonl:2: not valid JSON"):
        tokenize_to_mds([str(tmp_path / "json.jsonl")], out, tok, progress=False)
    (tmp_path / "data.csv").write_text("text\nx\n")
    with pytest.raises(InputDataError, match="data.csv: unsupported"):
        tokenize_to_mds([str(tmp_path / "data.csv")], out, tok, progress=False)
    with pytest.raises(TokenizerLoadError, match="no-such-tokenizer"):
        tokenize_to_mds([str(tmp_path / "field.jsonl")], out, str(tmp_path / "no-such-tokenizer"), progress=False)


def test_output_with_shards_is_refused_unless_overwrite(tmp_path):
    data = small_data()
    (tmp_path / "d.jsonl").write_text('{"text": "hello world"}\n')
    out = fresh_dir("out")
    tokenize_to_mds([str(tmp_path / "d.jsonl")], out, data.tokenizer, progress=False)
    with pytest.raises(OutputExistsError, match="already holds shards.*--overwrite"):
        tokenize_to_mds([str(tmp_path / "d.jsonl")], out, data.tokenizer, progress=False)
    summary = tokenize_to_mds([str(tmp_path / "d.jsonl")], out, data.tokenizer, overwrite=True, progress=False)
    assert summary.documents == 1 and len(read_samples(out)) == 1


def test_validate_dataset_names_truncated_and_corrupt_shards():
    data = small_data()
    report = validate_mds_dataset(data.mds)
    assert report.ok and report.shards == data.mds_summary.shards and report.samples == data.mds_summary.samples
    copy = os.path.join(fresh_dir("validate"), "mds")
    shutil.copytree(data.mds, copy)
    with open(os.path.join(copy, "shard.00001.mds"), "r+b") as f:
        f.truncate(1000)
    with open(os.path.join(copy, "shard.00002.mds"), "r+b") as f:
        f.seek(-3, os.SEEK_END)
        f.write(b"\xff\xfe\xfd")
    report = validate_mds_dataset(copy)
    problems = {os.path.basename(p.path): p.problem for p in report.problems}
    assert not report.ok
    assert "truncated" in problems["shard.00001.mds"]
    assert "hash mismatch" in problems["shard.00002.mds"]
    assert len(problems) == 2


def test_text_pieces_cut_at_word_ends_and_lose_nothing():
    from modernbert_pretrain.data.prep.to_mds import text_pieces

    text = "alpha beta\n\ngamma  delta " + "x" * 50 + " omega"
    pieces = list(text_pieces(text, 12))
    assert "".join(pieces) == text and all(0 < len(p) <= 12 for p in pieces)
    assert pieces[:3] == ["alpha beta", "\n\ngamma", "  delta"]  # each cut sits before whitespace after a word
    assert "x" * 12 in pieces  # a stretch without whitespace is cut at the limit


def test_long_documents_are_tokenized_in_pieces_without_loss(tmp_path, monkeypatch):
    """Cut into 2,000-character pieces, a ~250 kB document gives the tokens of whole-document
    tokenization, chunked exactly as before; a 9,000-character run without whitespace loses nothing."""
    from modernbert_pretrain.data.prep import to_mds
    from modernbert_pretrain.data.tokenizer_info import load_tokenizer

    data = small_data()
    monkeypatch.setattr(to_mds, "PIECE_CHARS", 2000)
    monkeypatch.setattr(to_mds, "BATCH_CHARS", 5000)
    words = "\n\n".join(load_docs(data.corpus))[:250_000]
    blob = "".join(chr(ord("a") + (i * 7) % 26) for i in range(9000))
    docs = [words, "short one", f"{words[:30_000]} {blob} tail"]
    (tmp_path / "long.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    out = fresh_dir("long")
    summary = tokenize_to_mds([str(tmp_path / "long.jsonl")], out, data.tokenizer, max_seq_len=PREP_MAX_SEQ_LEN,
                              progress=False)
    tok = load_tokenizer(data.tokenizer)
    samples = read_samples(out)
    assert all(s.size <= PREP_MAX_SEQ_LEN and s[0] == tok.cls_token_id and s[-1] == tok.sep_token_id
               for s in samples)
    whole = [np.asarray(tok.encode(d, add_special_tokens=False), dtype=np.int64) for d in docs]
    expected = [c for ids in whole[:2] for c in to_mds.split_document(ids, tok.cls_token_id, tok.sep_token_id,
                                                                         PREP_MAX_SEQ_LEN, np.dtype(np.uint16))]
    assert len(samples) > len(expected) > 100
    for got, want in zip(samples, expected):
        np.testing.assert_array_equal(got, want)
    last_doc = samples[len(expected):]
    assert all(s.size == PREP_MAX_SEQ_LEN for s in last_doc[:-1])
    content = np.concatenate([s[1:-1] for s in last_doc])
    assert tok.decode(content.tolist()) == docs[2]  # byte-level BPE decodes losslessly: no text lost
    assert summary.documents == 3 and summary.split_documents == 2 and summary.samples == len(samples)


def test_globs_zstd_json_gz_and_saved_datasets_read_the_same_documents(tmp_path):
    import datasets
    import zstandard

    from modernbert_pretrain.data.prep.readers import find_input_files, iter_documents

    records = [{"text": t} for t in load_docs(small_data().corpus)[:30]]
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.jsonl").write_text(lines)
    (tmp_path / "a" / "two.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    with gzip.open(tmp_path / "a" / "three.json.gz", "wt") as f:
        f.write(lines)
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "saved"))
    files = find_input_files([str(tmp_path / "a" / "*.json*"), str(tmp_path / "saved")])
    assert [os.path.basename(f) for f in files] == ["one.jsonl", "three.json.gz", "two.jsonl.zst",
                                                    "data-00000-of-00001.arrow"]
    for path in files:
        assert list(iter_documents(path)) == [r["text"] for r in records], path

    bad = lines.splitlines()
    bad[6] = '{"text": 3}'
    (tmp_path / "bad.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress("\n".join(bad).encode()))
    with pytest.raises(InputDataError, match=r"bad\.jsonl\.zst:7: field 'text' is int"):
        list(iter_documents(str(tmp_path / "bad.jsonl.zst")))
    with pytest.raises(InputDataError, match="matches no files"):
        find_input_files([str(tmp_path / "*.parquet")])
    datasets.DatasetDict({"train": datasets.Dataset.from_list(records)}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(InputDataError, match=r"splits \['train'\]; pass one split's folder"):
        find_input_files([str(tmp_path / "dict")])

    one = tokenize_to_mds([str(tmp_path / "a" / "one.jsonl")], fresh_dir("glob1"), small_data().tokenizer,
                          max_seq_len=PREP_MAX_SEQ_LEN, progress=False)
    saved = tokenize_to_mds([str(tmp_path / "saved")], fresh_dir("saved"), small_data().tokenizer,
                            max_seq_len=PREP_MAX_SEQ_LEN, progress=False)
    assert [s.tobytes() for s in read_samples(saved.output)] == [s.tobytes() for s in read_samples(one.output)]


def test_line_ranges_name_the_line_of_a_bad_record(tmp_path):
    from modernbert_pretrain.data.prep.readers import InputUnit, iter_unit_documents

    path = tmp_path / "x.jsonl"
    path.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(9)) + "{broken\n")
    size = os.path.getsize(path)
    with pytest.raises(InputDataError, match=r"x\.jsonl:10: not valid JSON"):
        list(iter_unit_documents(InputUnit(str(path), "lines", size // 2, size)))
