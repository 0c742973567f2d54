"""launch/prep.sh and launch/prep.sbatch without a cluster: stand-ins for sbatch, squeue and python record
what they are asked to run, so the tests check the array indices, the merge job's dependency, resubmission of
the unfinished parts only, and how an array task picks its part."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .train_helpers import ROOT, env

PREP = ROOT / "launch" / "prep.sh"
PREP_SBATCH = ROOT / "launch" / "prep.sbatch"

# sbatch stand-in: one line of argv per call in $WORK/sbatch.log, job ids 100, 101, ...
FAKE_SBATCH = r"""#!/usr/bin/env bash
n=$(( $(wc -l <"$WORK/sbatch.log" 2>/dev/null || echo 0) + 100 ))
printf '%s\n' "$*" >>"$WORK/sbatch.log"
echo "$n;cluster"
"""
FAKE_SQUEUE = '#!/usr/bin/env bash\ncat "$WORK/queue" 2>/dev/null || true\n'
FAKE_PYTHON = '#!/usr/bin/env bash\nprintf "%s\\n" "$@" >>"$WORK/python.log"\n'


def _tool(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def work(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _tool(bin_dir / "sbatch", FAKE_SBATCH)
    _tool(bin_dir / "squeue", FAKE_SQUEUE)
    _tool(bin_dir / "fakepython", FAKE_PYTHON)
    return tmp_path


def _env(work: Path, **extra: str) -> dict[str, str]:
    out = {k: v for k, v in env().items() if not k.startswith("SLURM_")}
    out.update(WORK=str(work), PYTHON=str(work / "bin" / "fakepython"), PATH=f"{work / 'bin'}:{out['PATH']}",
               **extra)
    return out


def _run(cmd, work: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *map(str, cmd)], capture_output=True, text=True, timeout=30, cwd=work,
                          env=_env(work, **extra))


def _complete(out: Path, parts: int, *done: int) -> None:
    for i in done:
        folder = out / f"part-{i:05d}-of-{parts:05d}"
        folder.mkdir(parents=True)
        (folder / "complete.json").write_text("{}")


def _sbatch_calls(work: Path) -> list[str]:
    log = work / "sbatch.log"
    return log.read_text().splitlines() if log.exists() else []


TOKENIZE = ["--input", "corpus/*.jsonl", "--output", "mds", "--tokenizer", "tok"]


def _submit(work: Path, parts: int, *extra: str) -> subprocess.CompletedProcess:
    return _run([PREP, "submit", "--parts", parts, *extra, "--", *TOKENIZE], work)


def test_submit_every_part_then_the_merge(work):
    out = _submit(work, 16)
    assert out.returncode == 0, out.stderr
    array, merge = _sbatch_calls(work)
    assert "--array=0-15 " in array and array.endswith(f"{PREP_SBATCH} --parts 16 -- {' '.join(TOKENIZE)}")
    assert f"--comment=prep:{work}/mds" in array and f"--comment=prep:{work}/mds" in merge
    assert "--dependency=afterok:100 " in merge and "--kill-on-invalid-dep=yes" in merge
    assert merge.endswith(f"{PREP_SBATCH} --merge mds")
    assert "array job 100" in out.stdout and "merge as job 101" in out.stdout


def test_resubmit_only_the_unfinished_parts(work):
    _complete(work / "mds", 16, 0, 1, 2, 4, 8, 9, 10, 15)
    out = _submit(work, 16, "--sbatch", "--partition=cpu --time=1:00:00")
    assert out.returncode == 0, out.stderr
    array, merge = _sbatch_calls(work)
    assert "--array=3,5-7,11-14 " in array and "--parts 16 --" in array
    assert "--partition=cpu --time=1:00:00" in array and "--partition=cpu --time=1:00:00" in merge
    assert "--dependency=afterok:100 " in merge
    # parts of another --parts count do not count as done
    assert _run([PREP, "missing", "--parts", 8, "--", *TOKENIZE], work).stdout.split() == [str(i) for i in range(8)]
    missing = _run([PREP, "missing", "--parts", 16, "--", *TOKENIZE], work).stdout.split()
    assert missing == ["3", "5", "6", "7", "11", "12", "13", "14"]


def test_all_complete_submits_the_merge_only(work):
    _complete(work / "mds", 4, 0, 1, 2, 3)
    out = _submit(work, 4)
    assert out.returncode == 0, out.stderr
    (merge,) = _sbatch_calls(work)
    assert "--dependency" not in merge and merge.endswith("--merge mds")
    assert "all 4 parts" in out.stdout


def test_refuses_while_an_earlier_submit_is_queued(work):
    (work / "queue").write_text(f"77|prep:{work}/mds\n78|prep:{work}/other\n")
    out = _submit(work, 4)
    assert out.returncode == 2 and "job(s) 77 " in out.stderr and "scancel" in out.stderr, out.stderr
    assert _sbatch_calls(work) == []
    assert _submit(work, 4, "--force").returncode == 0
    assert len(_sbatch_calls(work)) == 2


@pytest.mark.parametrize("args, message", [
    (["submit", "--", *TOKENIZE], "--parts N is required"),
    (["submit", "--parts", "0", "--", *TOKENIZE], "--parts must be an integer"),
    (["submit", "--parts", "4", "--", "--input", "x", "--tokenizer", "tok"], "no --output OUT"),
    (["submit", "--parts", "4", "--", *TOKENIZE, "--part", "1"], "--part among the tokenize_to_mds.py"),
    (["submit", "--parts", "4", "--jobs", "2", "--", *TOKENIZE], "--jobs is for the local command only"),
    (["launch", "--parts", "4"], "unknown command 'launch'"),
    (["submit", "--parts", "4", "--input", "x"], "unknown option --input"),
])
def test_bad_arguments(work, args, message):
    out = _run([PREP, *args], work)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert _sbatch_calls(work) == []


def _task(work: Path, *args: str, **slurm: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    out = _run([PREP_SBATCH, *args], work, **slurm)
    log = work / "python.log"
    return out, (log.read_text().splitlines() if log.exists() else [])


def test_array_task_runs_its_part(work):
    out, argv = _task(work, "--parts", "16", "--", *TOKENIZE,
                      SLURM_ARRAY_TASK_ID="7", SLURM_ARRAY_TASK_COUNT="3", SLURM_CPUS_PER_TASK="6")
    assert out.returncode == 0, out.stderr
    assert argv == [str(ROOT / "data_prep" / "tokenize_to_mds.py"), *TOKENIZE,
                    "--workers", "6", "--parts", "16", "--part", "7"]


def test_array_task_count_gives_the_parts_only_for_a_whole_array(work):
    whole = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0",
             "SLURM_ARRAY_TASK_MAX": "3"}
    out, argv = _task(work, "--", *TOKENIZE, "--workers", "2", **whole)
    assert out.returncode == 0, out.stderr
    assert argv[-4:] == ["--parts", "4", "--part", "2"] and argv.count("--workers") == 1
    some = {**whole, "SLURM_ARRAY_TASK_MIN": "2", "SLURM_ARRAY_TASK_COUNT": "2"}
    out, _ = _task(work, "--", *TOKENIZE, **some)
    assert out.returncode == 2 and "pass --parts N" in out.stderr, out.stderr


def test_array_task_bad_input(work):
    out, argv = _task(work, "--parts", "4", "--", *TOKENIZE)
    assert out.returncode == 2 and "SLURM_ARRAY_TASK_ID is not set" in out.stderr, out.stderr
    out, argv = _task(work, "--parts", "4", "--", *TOKENIZE, SLURM_ARRAY_TASK_ID="4")
    assert out.returncode == 2 and "array index 4 is not a part of 4" in out.stderr, out.stderr
    assert argv == []


def test_merge_job_runs_merge_mds(work):
    out, argv = _task(work, "--merge", "mds")
    assert out.returncode == 0, out.stderr
    assert argv == [str(ROOT / "data_prep" / "merge_mds.py"), "mds"]


LOCAL_PYTHON = r"""#!/usr/bin/env bash
# stand-in for python: a part fails when its number is in $FAIL, else writes its complete.json
printf '%s\n' "$*" >>"$WORK/python.log"
[[ "$1" == *merge_mds.py ]] && exit 0
part="${@: -1}" parts="${@: -3:1}"
[[ " $FAIL " == *" $part "* ]] && { echo "part $part broke"; exit 1; }
d=$(printf "mds/part-%05d-of-%05d" "$part" "$parts"); mkdir -p "$d"; echo '{}' >"$d/complete.json"
"""


def test_local_runs_the_unfinished_parts_then_merges(work):
    _tool(work / "bin" / "fakepython", LOCAL_PYTHON)
    _complete(work / "mds", 6, 1)
    out = _run([PREP, "local", "--parts", 6, "--jobs", 2, "--", *TOKENIZE], work, FAIL="3 4")
    assert out.returncode == 1 and "part(s) 3-4 failed" in out.stderr, out.stderr
    assert "part 3 broke" in (work / "mds.logs" / "part-3.log").read_text()
    calls = (work / "python.log").read_text().splitlines()
    assert sorted(c.split()[-1] for c in calls) == ["0", "2", "3", "4", "5"]  # no merge after a failure
    (work / "python.log").unlink()
    out = _run([PREP, "local", "--parts", 6, "--jobs", 2, "--", *TOKENIZE], work)
    assert out.returncode == 0, out.stderr
    calls = (work / "python.log").read_text().splitlines()
    assert sorted(c.split()[-1] for c in calls[:2]) == ["3", "4"] and calls[2].endswith("merge_mds.py mds")
