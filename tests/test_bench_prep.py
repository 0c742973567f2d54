"""bench/prep_throughput.py on a few hundred documents, one run each: it runs and its report is complete.

No speed is asserted: the figures of such a small run on shared cores mean nothing."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "prep_throughput.py"
DOCS = 300


def _bench():
    spec = importlib.util.spec_from_file_location("bench_prep_throughput", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    return bench


def test_prep_bench_reports_every_figure(tmp_path, capsys):
    from modernbert_pretrain.data.prep.corpus import iter_corpus

    docs = tmp_path / "docs.jsonl"
    with open(docs, "w") as f:
        f.writelines(json.dumps({"text": r["text"][:3000]}) + "\n" for r in islice(iter_corpus(), DOCS))
    out = tmp_path / "report.json"
    code = _bench().main(["--input", str(docs), "--vocab-size", "512", "--repeats", "1", "--workers", "1",
                          "--max-seq-len", "128", "--json", str(out), "--work", str(tmp_path / "work")])
    assert code == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    for kind in ("ours", "raw", "baseline", "ours_w1", "ours_w2"):
        figures = report[kind]
        assert figures["tokens_per_s"] > 0 and figures["seconds_median"] > 0 and figures["tokens"] > 0, kind
        assert len(figures["runs_tokens_per_s"]) == 1
    assert report["ours_w1"]["workers"] == 1 and report["ours_w2"]["workers"] == 2
    # the three methods tokenized the same documents into the same tokens, and ours and the baseline wrote the
    # same number of samples
    assert report["ours"]["tokens"] == report["raw"]["tokens"] == report["baseline"]["tokens"]
    assert report["ours"]["documents"] == report["raw"]["documents"] == report["baseline"]["documents"] == DOCS
    assert report["ours"]["samples"] == report["baseline"]["samples"] > report["ours"]["documents"]
    for name in ("ours_over_raw", "ours_over_baseline", "scaling_w1_to_w2"):
        assert math.isfinite(report["ratios"][name]) and report["ratios"][name] > 0
    assert set(report["meets_targets"]) == {"ours_over_raw", "ours_over_baseline"}
    # only the kept scratch folder's inputs remain: each run's output was removed
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["tokenizer"]
