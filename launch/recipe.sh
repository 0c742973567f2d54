#!/usr/bin/env bash
# Runs training phases in order (e.g. the three-phase recipe); finished phases are skipped, so after an
# interruption the same command picks up where it stopped.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash launch/recipe.sh [--plan] <yaml> [<yaml> ...] [--] [key=value ...] [N:key=value ...]

Runs `$LAUNCHER train.py <yaml> [key=value ...]` for every YAML in order. Arguments with '=' (and all
arguments after `--`) are overrides: key=value goes to every phase (so workdir=/path/to/run reaches them
all), N:key=value only to the N-th YAML (1-based).

  bash launch/recipe.sh yamls/phase1.yaml yamls/phase2.yaml yamls/phase3.yaml -- workdir=/data/run1
  LAUNCHER="composer -n 8" bash launch/recipe.sh yamls/phase{1,2,3}.yaml -- workdir=/data/run1 \
      1:data.device_microbatch_size=48

Before running anything, every phase is checked with `train.py <yaml> [overrides] --dry-run --no-memory`
(run the dry run without --no-memory for a phase's memory plan), which also names
its save folder. A phase whose <save_folder>/training_complete.json exists has finished and is skipped; an
unfinished one resumes from its latest checkpoint (autoresume). Each phase starts from the previous phase's
final checkpoint through its YAML's `load_from` (the shipped phase 2 and 3 YAMLs name the previous run's
folder). The first phase that fails stops the recipe with its exit code.

options:
  --plan      check every phase and print its save folder and state; train nothing
  -h, --help  this text

environment:
  LAUNCHER         command that train.py and its arguments are appended to (default: $PYTHON). E.g.
                   "composer -n 8", or "bash launch/multinode.sh --nnodes 2 --node-rank 0 --master-addr ..."
                   (that one also forwards SIGTERM to every rank; composer's own launcher does not)
  PYTHON           interpreter for the dry runs and the default launcher (default: python)
  WORLD_SIZE       if set, the dry runs check the batch arithmetic for this many processes
  MARKER_WAIT      seconds to wait for training_complete.json after a phase exits 0 (default 30; it is
                   written by global rank 0, possibly on another node)
  FORWARD_SIGTERM  1 (default): a SIGTERM to this script is passed on to the running phase (which saves a
                   checkpoint and stops), and no further phase starts. 0: not passed on (slurm.sbatch sets 0:
                   SLURM signals the tasks itself, and srun would turn a SIGTERM into SIGKILL)

exit status: 0 all phases finished; a failing phase's status (2 config error, 3 NaN loss, ...); 75 a phase
stopped before its end (SIGTERM/preemption) and the recipe can be resumed by running it again.
EOF
}

say() { echo "recipe.sh: $*"; }
die() { echo "recipe.sh: error: $*" >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
yamls=()
overrides=()        # key=value for every phase
only_phase=()       # N of each N:key=value ...
only_override=()    # ... and its key=value
plan_only=0
after_dashes=0
add_override() {
  if [[ "$1" =~ ^([0-9]+):([^=]+=.*)$ ]]; then
    only_phase+=("$(( 10#${BASH_REMATCH[1]} ))")
    only_override+=("${BASH_REMATCH[2]}")
  elif [[ "$1" == *=* ]]; then
    overrides+=("$1")
  else
    die "'$1' after -- is not a key=value or N:key=value override"
  fi
}
for arg in "$@"; do
  if (( after_dashes )); then add_override "$arg"; continue; fi
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --plan) plan_only=1 ;;
    --) after_dashes=1 ;;
    -*) die "unknown option $arg (see --help)" ;;
    *=*) add_override "$arg" ;;
    *) yamls+=("$arg") ;;
  esac
done
(( ${#yamls[@]} )) || { usage >&2; die "no phase YAML given"; }
for k in "${!only_phase[@]}"; do
  (( only_phase[k] >= 1 && only_phase[k] <= ${#yamls[@]} )) \
    || die "override ${only_phase[k]}:${only_override[k]} names phase ${only_phase[k]}, but there are ${#yamls[@]}"
done
# phase_overrides <index from 0>: sets `args` to the overrides of that phase (shared ones first)
phase_overrides() {
  args=("${overrides[@]}")
  local k
  for k in "${!only_phase[@]}"; do
    if (( only_phase[k] == $1 + 1 )); then args+=("${only_override[k]}"); fi
  done
}

# Command prefixes may hold quoted words: LAUNCHER="srun --label bash '/my dir/launch/multinode.sh'".
eval "py=(${PYTHON:-python})"
if [[ -n "${LAUNCHER:-}" ]]; then eval "launcher=($LAUNCHER)"; else launcher=("${py[@]}"); fi
parser="$(command -v python3 || command -v python || true)"
[[ -n "$parser" ]] || die "no python3 on PATH to read the dry-run plans"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"

for i in "${!yamls[@]}"; do
  y="${yamls[$i]}"
  if [[ ! -f "$y" && -f "$ROOT/$y" ]]; then y="$ROOT/$y"; fi
  [[ -f "$y" ]] || die "phase YAML '${yamls[$i]}' not found"
  yamls[i]="$(cd "$(dirname "$y")" && pwd)/$(basename "$y")"
done

# ---- check every phase up front: a typo in the last phase should not wait for the first to finish -------
n=${#yamls[@]}
folders=()
errf="$(mktemp)"
trap 'rm -f "$errf"' EXIT
for i in "${!yamls[@]}"; do
  y="${yamls[$i]}"
  phase_overrides "$i"
  rc=0
  out="$("${py[@]}" "$ROOT/train.py" "$y" "${args[@]}" --dry-run --no-memory 2>"$errf")" || rc=$?
  if (( rc )); then
    echo "recipe.sh: phase $((i + 1))/$n ($y) does not pass the dry run (exit $rc):" >&2
    cat "$errf" >&2
    exit "$rc"
  fi
  folder="$(printf '%s\n' "$out" | tail -n 1 | "$parser" -c 'import json, sys; print(json.loads(sys.stdin.read())["save_folder"])')" \
    || die "phase $((i + 1))/$n ($y): could not read save_folder from the dry run's last line"
  folders+=("$folder")
done

done_marker() { echo "${folders[$1]}/training_complete.json"; }
say "$n phase(s); overrides for all: ${overrides[*]:-(none)}"
for i in "${!yamls[@]}"; do
  state="to run"
  [[ -f "$(done_marker "$i")" ]] && state="finished"
  say "  $((i + 1)). ${yamls[$i]} -> ${folders[$i]} [$state]"
done
for k in "${!only_phase[@]}"; do say "  phase ${only_phase[k]} only: ${only_override[k]}"; done
(( plan_only )) && exit 0

# ---- run -----------------------------------------------------------------------------------------------
stop=""
phase_pid=""
on_term() {
  stop="SIGTERM"
  if [[ "${FORWARD_SIGTERM:-1}" == 1 && -n "$phase_pid" ]]; then
    say "SIGTERM: passing it on to the running phase (it saves a checkpoint and stops); no further phase starts"
    kill -TERM "$phase_pid" 2>/dev/null || true
  else
    say "SIGTERM: no further phase starts"
  fi
}
trap on_term TERM

for i in "${!yamls[@]}"; do
  y="${yamls[$i]}"
  if [[ -f "$(done_marker "$i")" ]]; then
    say "phase $((i + 1))/$n ($y) already finished ($(done_marker "$i")): skipping"
    continue
  fi
  if [[ -n "$stop" ]]; then
    say "stopped on $stop before phase $((i + 1))/$n; run the same command again to continue"
    exit 75
  fi
  phase_overrides "$i"
  say "phase $((i + 1))/$n: ${launcher[*]} $ROOT/train.py $y ${args[*]}"
  ( trap - INT TERM; exec "${launcher[@]}" "$ROOT/train.py" "$y" "${args[@]}" ) &
  phase_pid=$!
  while :; do
    rc=0
    wait "$phase_pid" || rc=$?
    kill -0 "$phase_pid" 2>/dev/null || break  # woken by the trap: the phase is still running
  done
  phase_pid=""
  if (( rc )); then
    echo "recipe.sh: phase $((i + 1))/$n ($y) failed with exit code $rc; stopping. Fix the cause and run the" \
         "same command again: finished phases are skipped, this one resumes from its latest checkpoint." >&2
    exit "$rc"
  fi
  # On a node other than the first, the phase can end a moment before rank 0 has written the marker (or
  # before a network filesystem shows it): give it a little time unless we were told to stop.
  waited=0
  while [[ ! -f "$(done_marker "$i")" && -z "$stop" ]] && (( waited < ${MARKER_WAIT:-30} )); do
    sleep 1
    waited=$(( waited + 1 ))
  done
  if [[ ! -f "$(done_marker "$i")" ]]; then
    say "phase $((i + 1))/$n ($y) stopped before its end${stop:+ on $stop} (no $(done_marker "$i"));" \
        "its checkpoint is saved: run the same command again to resume"
    exit 75
  fi
  say "phase $((i + 1))/$n finished"
done
say "all $n phase(s) finished"
