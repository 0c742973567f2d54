#!/usr/bin/env bash
# Tokenize a corpus in N parts and merge them: on SLURM (an array job, then a merge job that waits for it) or
# on this machine K parts at a time. Either way only the parts without complete.json are (re)run.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash launch/prep.sh submit --parts N [--sbatch "OPTS"] [--force] -- <tokenize_to_mds.py args>
       bash launch/prep.sh local --parts N [--jobs K] -- <tokenize_to_mds.py args>
       bash launch/prep.sh missing --parts N -- <tokenize_to_mds.py args>
       bash launch/prep.sh --help

The tokenize_to_mds.py arguments must include --output OUT (written as `--output OUT` or `--output=OUT`)
and not --parts/--part, which this script adds. Part I is done when OUT/part-0000I-of-0000N/complete.json
exists; every command works on the other parts only, so rerunning the same command after a failure redoes
only what is unfinished (a killed part also keeps its finished chunks).

  submit   sbatch --array=<unfinished parts> launch/prep.sbatch --parts N -- <args>, then
           sbatch --dependency=afterok:<array job> --kill-on-invalid-dep=yes launch/prep.sbatch --merge OUT.
           Prints both job ids. With every part complete, submits the merge only. --sbatch "OPTS" adds
           options to both sbatch calls (e.g. "--partition=cpu --time=4:00:00 --cpus-per-task=16").
           Refuses while a job of an earlier submit for the same OUT is still queued or running
           (squeue; --force submits anyway, and two runs of one part would then overwrite each other).
  local    runs the unfinished parts on this machine, K at a time (--jobs, default 1), each logging to
           LOG_DIR/part-I.log (LOG_DIR default: OUT.logs), then merge_mds.py OUT when all succeeded.
           Give each part --workers W with K x W about the core count. Holds a lock on OUT meanwhile.
  missing  prints the unfinished part numbers, one per line (nothing when all are complete).

Over ssh (hosts sharing OUT): start part I on host I with tokenize_to_mds.py <args> --parts N --part I,
wait for them, then run `bash launch/prep.sh local ...` on one host: it redoes any unfinished part and merges.
(The lock of `local` holds on one host only: never run two `local` on different hosts for one OUT.)

environment: PYTHON (interpreter, default python), SBATCH/SQUEUE (the SLURM commands), LOG_DIR.
exit status: 0 done/submitted, 1 a local part or the merge failed, 2 bad arguments or a refused submit.
EOF
}

die() { echo "prep.sh: error: $*" >&2; exit 2; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python}"

[[ $# -ge 1 ]] || { usage >&2; die "no command given (submit, local or missing)"; }
case "$1" in
  -h|--help) usage; exit 0 ;;
  submit|local|missing) CMD="$1"; shift ;;
  *) die "unknown command '$1': use submit, local or missing (see --help)" ;;
esac

PARTS="" JOBS=1 SBATCH_OPTS="" FORCE=0
need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --parts) need_value "$@"; PARTS="$2"; shift 2 ;;
    --jobs) need_value "$@"; JOBS="$2"; shift 2 ;;
    --sbatch) need_value "$@"; SBATCH_OPTS="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    --parts=*|--jobs=*|--sbatch=*) opt="${1%%=*}"; set -- "$opt" "${1#*=}" "${@:2}" ;;
    --) shift; break ;;
    *) die "unknown option $1: the tokenize_to_mds.py arguments go after -- (see --help)" ;;
  esac
done

[[ -n "$PARTS" ]] || die "--parts N is required (see --help)"
is_uint "$PARTS" && (( PARTS >= 1 && PARTS <= 99999 )) || die "--parts must be an integer in 1..99999, got '$PARTS'"
is_uint "$JOBS" && (( JOBS >= 1 )) || die "--jobs must be a positive integer, got '$JOBS'"
[[ "$CMD" == local || "$JOBS" == 1 ]] || die "--jobs is for the local command only"
[[ "$CMD" == submit || ( -z "$SBATCH_OPTS" && "$FORCE" == 0 ) ]] || die "--sbatch and --force are for submit only"
(( $# )) || die "no tokenize_to_mds.py arguments after -- (they need at least --output OUT)"

OUT=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --output) OUT="${args[i + 1]:-}" ;;
    --output=*) OUT="${args[i]#*=}" ;;
    --parts|--parts=*|--part|--part=*)
      die "${args[i]} among the tokenize_to_mds.py arguments: give --parts before -- (the parts are set here)" ;;
  esac
done
[[ -n "$OUT" ]] || die "no --output OUT among the tokenize_to_mds.py arguments (needed to find finished parts)"

# ---- which parts are unfinished ----------------------------------------------------------------------------
missing=()
for ((i = 0; i < PARTS; i++)); do
  printf -v folder "%s/part-%05d-of-%05d" "$OUT" "$i" "$PARTS"
  [[ -f "$folder/complete.json" ]] || missing+=("$i")
done

if [[ "$CMD" == missing ]]; then
  (( ${#missing[@]} == 0 )) || printf "%s\n" "${missing[@]}"
  exit 0
fi

# 0 1 2 5 7 8 -> 0-2,5,7-8 (sbatch's --array syntax; the list is sorted)
ranges() {
  local out="" start="" prev="" n
  for n in "$@" ""; do
    if [[ -n "$prev" && ( -z "$n" || "$n" -ne $((prev + 1)) ) ]]; then
      [[ "$start" == "$prev" ]] && out+="${out:+,}$start" || out+="${out:+,}$start-$prev"
      start=""
    fi
    [[ -z "$start" ]] && start="$n"
    prev="$n"
  done
  echo "$out"
}

if [[ "$CMD" == submit ]]; then
  SBATCH="${SBATCH:-sbatch}" SQUEUE="${SQUEUE:-squeue}"
  command -v "${SBATCH%% *}" >/dev/null || die "'$SBATCH' not found on PATH: submit runs on a SLURM login node"
  abs_out="$(cd "$(dirname "$OUT")" 2>/dev/null && pwd)/$(basename "$OUT")" \
    || die "the folder holding --output $OUT does not exist"
  tag="prep:$abs_out"  # the jobs' --comment: how a later submit finds them
  if (( ! FORCE )); then
    queued="$($SQUEUE -h -u "$(id -un)" -o '%F|%k' 2>/dev/null | awk -F'|' -v t="$tag" '$2 == t {print $1}' | sort -u)" \
      || die "'$SQUEUE' failed: cannot check for earlier jobs on $OUT (--force submits anyway)"
    [[ -z "$queued" ]] || die "job(s) $(echo $queued | tr ' ' ',') of an earlier submit for $OUT are still" \
      "queued or running: wait for them or scancel them (--force submits anyway)"
  fi
  # shellcheck disable=SC2206  # SBATCH_OPTS is a list of options
  common=(--parsable --comment="$tag" --export=ALL ${SBATCH_OPTS})
  dep=()
  if (( ${#missing[@]} )); then
    array="$(ranges "${missing[@]}")"
    out="$(REPO_DIR="$ROOT" $SBATCH "${common[@]}" --array="$array" "$ROOT/launch/prep.sbatch" \
           --parts "$PARTS" -- "$@")" || die "sbatch failed for the array job (see its message above)"
    job="${out%%;*}"
    is_uint "$job" || die "sbatch printed '$out' instead of a job id"
    echo "prep.sh: submitted ${#missing[@]} of $PARTS part(s) as array job $job (--array=$array)"
    dep=(--dependency="afterok:$job" --kill-on-invalid-dep=yes)
  else
    echo "prep.sh: all $PARTS parts of $OUT are complete: submitting the merge only"
  fi
  out="$(REPO_DIR="$ROOT" $SBATCH "${common[@]}" "${dep[@]}" --job-name=prep-merge --output=%x-%j.out \
         "$ROOT/launch/prep.sbatch" --merge "$OUT")" || die "sbatch failed for the merge job (see its message above)"
  merge_job="${out%%;*}"
  is_uint "$merge_job" || die "sbatch printed '$out' instead of a job id"
  echo "prep.sh: submitted the merge as job $merge_job${dep:+ (runs when every part succeeded)}"
  exit 0
fi

# ---- local: K parts at a time, then the merge ----------------------------------------------------------------
mkdir -p "$OUT"
exec 9<"$OUT"
flock -n 9 || die "another launch/prep.sh local holds $OUT: wait for it to finish"
LOG_DIR="${LOG_DIR:-${OUT%/}.logs}"
mkdir -p "$LOG_DIR"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
echo "prep.sh: ${#missing[@]} of $PARTS part(s) to run, $JOBS at a time; logs in $LOG_DIR" >&2
declare -A running=()  # pid -> part
failed=()
reap() {  # wait until at least one part has ended (wait -n: bash >= 4.3), then collect the ended ones
  local pid rc
  wait -n 2>/dev/null || true
  for pid in "${!running[@]}"; do
    kill -0 "$pid" 2>/dev/null && continue
    rc=0; wait "$pid" || rc=$?
    if (( rc )); then
      failed+=("${running[$pid]}")
      echo "prep.sh: part ${running[$pid]} failed (exit $rc): see $LOG_DIR/part-${running[$pid]}.log" >&2
    fi
    unset "running[$pid]"
  done
}
for part in "${missing[@]}"; do
  (( ${#running[@]} < JOBS )) || reap
  # shellcheck disable=SC2086  # PYTHON may be a command with arguments
  $PY "$ROOT/data_prep/tokenize_to_mds.py" "$@" --parts "$PARTS" --part "$part" >"$LOG_DIR/part-$part.log" 2>&1 9<&- &
  running[$!]="$part"
done
while (( ${#running[@]} )); do reap; done
if (( ${#failed[@]} )); then
  echo "prep.sh: error: part(s) $(ranges $(printf "%s\n" "${failed[@]}" | sort -n)) failed; run the same" \
       "command again to redo only the unfinished parts" >&2
  exit 1
fi
$PY "$ROOT/data_prep/merge_mds.py" "$OUT" || exit 1
