#!/usr/bin/env bash
# One node's part of a multi-node run, for clusters without SLURM (slurm.sbatch runs this script on every node).
# Start it on every node with the same --nnodes, --master-addr and --master-port and that node's --node-rank.
# It runs Composer's launcher, which starts one training process per GPU of the node.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash launch/multinode.sh [options] [--] [train.py] <yaml> [key=value ...]

Runs `composer -n NPROC --world_size NNODES*NPROC --node_rank R --master_addr A --master_port P
train.py <yaml> [key=value ...]` on this node. Start it on every node, node rank 0 on MASTER_ADDR.

options (each falls back to the environment variable in brackets):
  --nnodes N           nodes in the job                               [NNODES, default 1]
  --node-rank R        this node's rank, 0 on the master node          [NODE_RANK, else SLURM_NODEID;
                       required when NNODES > 1]
  --master-addr HOST   address of node 0 that every node can reach     [MASTER_ADDR, default 127.0.0.1]
  --master-port PORT   free TCP port on node 0 for torch's rendezvous  [MASTER_PORT, default 29500;
                       one node: a free port]
  --nproc N            training processes on this node                 [NPROC_PER_NODE, default: the visible
                       GPUs, 1 without]
  --connect-timeout S  seconds a node of rank > 0 waits for the master  [CONNECT_TIMEOUT, default 300]
  -h, --help           this text

environment: PYTHON (interpreter, default python), LOG_DIR (if set: every rank's stdout/stderr is written to
LOG_DIR/rank{N}.{stdout,stderr}.txt; otherwise only local rank 0 prints), NCCL_* / GLOO_* / TORCH_* are passed on.

checks before training: on node 0, that MASTER_PORT is free; on the other nodes, that MASTER_ADDR:MASTER_PORT
accepts connections within CONNECT_TIMEOUT. Either failure prints why and exits 2, as do bad arguments.

SIGTERM (a scheduler's preemption notice) sent to this script or to its whole process tree reaches every
training process; they save a checkpoint at the next step boundary and exit 0. Run the same command
again to resume. Composer's launcher itself ignores SIGTERM so that it waits for them.

exit status: the training's (0 done or preempted, 2 config error, 3 NaN loss), or 2 for a failed check.
EOF
}

die() { echo "multinode.sh: error: $*" >&2; exit 2; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-${SLURM_NODEID:-}}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-}"
NPROC_PER_NODE="${NPROC_PER_NODE:-}"
CONNECT_TIMEOUT="${CONNECT_TIMEOUT:-300}"
PY="${PYTHON:-python}"

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --nnodes) need_value "$@"; NNODES="$2"; shift 2 ;;
    --node-rank) need_value "$@"; NODE_RANK="$2"; shift 2 ;;
    --master-addr) need_value "$@"; MASTER_ADDR="$2"; shift 2 ;;
    --master-port) need_value "$@"; MASTER_PORT="$2"; shift 2 ;;
    --nproc) need_value "$@"; NPROC_PER_NODE="$2"; shift 2 ;;
    --connect-timeout) need_value "$@"; CONNECT_TIMEOUT="$2"; shift 2 ;;
    --nnodes=*|--node-rank=*|--master-addr=*|--master-port=*|--nproc=*|--connect-timeout=*)
      opt="${1%%=*}"; set -- "$opt" "${1#*=}" "${@:2}" ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done

SCRIPT="$ROOT/train.py"
if [[ $# -gt 0 && "$1" == *.py ]]; then SCRIPT="$1"; shift; fi
[[ $# -ge 1 ]] || { usage >&2; die "no training YAML given"; }
[[ -f "$SCRIPT" ]] || die "training script $SCRIPT not found"

is_uint "$NNODES" && (( NNODES >= 1 )) || die "--nnodes/NNODES must be a positive integer, got '$NNODES'"
if [[ -z "$NODE_RANK" ]]; then
  (( NNODES == 1 )) || die "NNODES=$NNODES but this node's rank is unknown: pass --node-rank (or NODE_RANK)"
  NODE_RANK=0
fi
is_uint "$NODE_RANK" && (( NODE_RANK < NNODES )) \
  || die "--node-rank/NODE_RANK must be an integer in [0, $NNODES), got '$NODE_RANK'"
is_uint "$CONNECT_TIMEOUT" || die "--connect-timeout/CONNECT_TIMEOUT must be whole seconds, got '$CONNECT_TIMEOUT'"
if [[ -n "$MASTER_PORT" ]]; then
  is_uint "$MASTER_PORT" && (( MASTER_PORT >= 1 && MASTER_PORT <= 65535 )) \
    || die "--master-port/MASTER_PORT must be a TCP port (1-65535), got '$MASTER_PORT'"
elif (( NNODES > 1 )); then
  MASTER_PORT=29500
fi
command -v "$PY" >/dev/null || die "python interpreter '$PY' not found (set PYTHON)"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"

if [[ -z "$NPROC_PER_NODE" ]]; then
  NPROC_PER_NODE="$("$PY" -c 'import torch; print(max(1, torch.cuda.device_count()))')" \
    || die "could not count the GPUs with torch; pass --nproc"
fi
is_uint "$NPROC_PER_NODE" && (( NPROC_PER_NODE >= 1 )) \
  || die "--nproc/NPROC_PER_NODE must be a positive integer, got '$NPROC_PER_NODE'"
WORLD_SIZE=$(( NNODES * NPROC_PER_NODE ))

# ---- checks that turn a would-be hang or a late torch error into a message ---------------------------------
if [[ -n "$MASTER_PORT" && "$NODE_RANK" == 0 ]]; then
  # The master (global rank 0) binds MASTER_PORT on all interfaces for torch's TCP store.
  if ! err="$("$PY" - "$MASTER_PORT" 2>&1 <<'PYEOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("", int(sys.argv[1])))
except OSError as e:
    sys.exit(e.strerror)
PYEOF
)"; then
    die "master port $MASTER_PORT is already in use on this node ($err): another job or a stale run holds it;" \
        "pick another with --master-port/MASTER_PORT on every node"
  fi
elif (( NODE_RANK > 0 )); then
  now_ms() {
    if [[ -n "${EPOCHREALTIME:-}" ]]; then local t="${EPOCHREALTIME/[.,]/}"; echo $(( 10#$t / 1000 ))
    else echo $(( $(date +%s%N) / 1000000 )); fi
  }
  deadline=$(( $(now_ms) + CONNECT_TIMEOUT * 1000 ))
  echo "multinode.sh: node $NODE_RANK waiting up to ${CONNECT_TIMEOUT}s for the master at $MASTER_ADDR:$MASTER_PORT" >&2
  # one connection attempt (bash's /dev/tcp) at most every second, each cut off after 5 s
  until timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$MASTER_ADDR" "$MASTER_PORT" 2>/dev/null; do
    if (( $(now_ms) >= deadline )); then
      die "cannot reach the master at $MASTER_ADDR:$MASTER_PORT within ${CONNECT_TIMEOUT}s: is node rank 0" \
          "running, is MASTER_ADDR an address of it that this node can reach, and does no firewall block the port?"
    fi
    sleep 1
  done
fi

# ---- launch ------------------------------------------------------------------------------------------------
cmd=("$PY" -m composer.cli.launcher -n "$NPROC_PER_NODE" --world_size "$WORLD_SIZE" --node_rank "$NODE_RANK"
     --base_rank $(( NODE_RANK * NPROC_PER_NODE )) --master_addr "$MASTER_ADDR")
[[ -n "$MASTER_PORT" ]] && cmd+=(--master_port "$MASTER_PORT")
if [[ -n "${LOG_DIR:-}" ]]; then
  mkdir -p "$LOG_DIR"
  cmd+=(--stdout "$LOG_DIR/rank{rank}.stdout.txt" --stderr "$LOG_DIR/rank{rank}.stderr.txt")
fi
# Composer's launcher is started with SIGTERM ignored (so it outlives a preemption notice and reports the
# ranks' exit codes); `env --default-signal` gives the training processes the default handling back.
if env --default-signal=TERM true 2>/dev/null; then
  pyexe="$("$PY" -c 'import sys; print(sys.executable)')"
  cmd+=(-c env --default-signal=TERM "$pyexe" "$SCRIPT" "$@")
else
  cmd+=("$SCRIPT" "$@")
fi

echo "multinode.sh: node $NODE_RANK of $NNODES, $NPROC_PER_NODE processes, world size $WORLD_SIZE," \
     "master ${MASTER_ADDR}:${MASTER_PORT:-<free port>}" >&2
children_of() {  # the launcher's child processes: the training processes of this node
  cat "/proc/$1/task/$1/children" 2>/dev/null || pgrep -P "$1" 2>/dev/null || true
}
launcher=""
forward_term() {
  echo "multinode.sh: SIGTERM: asking the training processes on node $NODE_RANK to checkpoint and stop" >&2
  local pid
  [[ -n "$launcher" ]] || return 0
  for pid in $(children_of "$launcher"); do kill -TERM "$pid" 2>/dev/null || true; done
}
trap forward_term TERM
( trap '' TERM; trap - INT; exec "${cmd[@]}" ) &
launcher=$!

while :; do
  rc=0
  wait "$launcher" || rc=$?
  kill -0 "$launcher" 2>/dev/null || break  # wait returned because of the trap: keep waiting
done
exit "$rc"
