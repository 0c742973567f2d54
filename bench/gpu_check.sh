#!/usr/bin/env bash
# One prepared GPU check, for an offline machine that has Python, torch and transformers but not this
# project's other dependencies. Gather the wheels first on a machine with an index (see the wheels script
# that ships with the GPU environment, or: pip download --no-deps ... -d .whl), then copy the checkout with
# .whl/ and run:
#   bash bench/gpu_check.sh [out_dir] [max_seconds]
# It installs the wheels into a private folder, runs the GPU tests (attention backends against SDPA) and the
# throughput sweep within the time budget, and writes everything under out_dir (default: $OUT or gpu-out/).
set -uo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${1:-${OUT:-$ROOT/gpu-out}}"
BUDGET="${2:-420}"
mkdir -p "$OUT_DIR"
cd "$ROOT"
if [[ -d .whl ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    || { echo "installing .whl/ failed" >&2; exit 1; }
  export PYTHONPATH="/tmp/site:$ROOT/src:$ROOT"
else
  export PYTHONPATH="$ROOT/src:$ROOT"
fi
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())" \
  | tee "$OUT_DIR/versions.txt"
timeout 240 python3 -m pytest -q -m gpu tests/test_model_backends.py -p no:cacheprovider 2>&1 | tail -30 \
  | tee "$OUT_DIR/gpu_tests.txt"
timeout $((BUDGET + 120)) python3 bench/train_throughput.py --sweep --max-seconds "$BUDGET" \
  --json-out "$OUT_DIR/throughput.json" 2>&1 | tee "$OUT_DIR/throughput.txt" | tail -60
