#!/usr/bin/env bash
# The main job on a fresh machine: embedded corpus -> tokenizer -> MDS shards -> smoke phases 1 -> 2 -> 3
# -> Hugging Face export -> a fill-mask example -> evaluation against a random-init model of the same size.
# The last line printed is the exported folder.
#   bash launch/quickstart.sh [workdir]        (default: quickstart/ in the repository root)
set -euo pipefail

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; }
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage; exit 0; fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORKDIR="$(mkdir -p "${1:-$ROOT/quickstart}" && cd "${1:-$ROOT/quickstart}" && pwd)"
PY="${PYTHON:-python}"
export WANDB_MODE="${WANDB_MODE:-offline}" TOKENIZERS_PARALLELISM=false

if ! "$PY" -c "import modernbert_pretrain, composer, streaming, sklearn, matplotlib" 2>/dev/null; then
  echo "== installing the project (with its evaluation extra)"
  "$PY" -m pip install -q -U pip  # pip 23's resolver backtracks for over 25 minutes on these pins
  "$PY" -m pip install -q -e "$ROOT[eval]"
fi
cd "$ROOT"

step() { echo; echo "== $*"; }

if [[ ! -s "$WORKDIR/corpus/train.jsonl" ]]; then
  step "1/7 building the embedded corpus (Python standard library: code, docstrings, bundled text)"
  "$PY" data_prep/sample_corpus.py "$WORKDIR/corpus/all.jsonl"
  # every 50th document is held out for evaluation
  awk 'NR % 50 == 0' "$WORKDIR/corpus/all.jsonl" > "$WORKDIR/corpus/val.jsonl"
  awk 'NR % 50 != 0' "$WORKDIR/corpus/all.jsonl" > "$WORKDIR/corpus/train.jsonl"
fi
if [[ ! -f "$WORKDIR/tokenizer/tokenizer.json" ]]; then
  step "2/7 training the tokenizer"
  "$PY" data_prep/train_tokenizer.py --input "$WORKDIR/corpus/train.jsonl" --output "$WORKDIR/tokenizer" \
      --vocab-size 8192
fi
if [[ ! -f "$WORKDIR/mds/val/index.json" ]]; then
  step "3/7 writing MDS shards"
  for split in train val; do
    "$PY" data_prep/tokenize_to_mds.py --input "$WORKDIR/corpus/$split.jsonl" --output "$WORKDIR/mds/$split" \
        --tokenizer "$WORKDIR/tokenizer" --workers 2 --max-seq-len 512 --overwrite
  done
fi

step "4/7 training smoke phases 1 -> 2 -> 3"
for phase in 1 2 3; do
  echo "-- phase $phase"
  "$PY" train.py "yamls/smoke/phase$phase.yaml" "workdir=$WORKDIR"
done

step "5/7 exporting the final checkpoint to a Hugging Face folder"
OUT="$("$PY" -m modernbert_pretrain.export "$WORKDIR/checkpoints/smoke-phase3" "$WORKDIR/hf" | tail -n 1)"

step "6/7 fill-mask with transformers"
"$PY" - "$OUT" <<'PYEOF'
import sys
from transformers import pipeline
fill = pipeline("fill-mask", model=sys.argv[1], tokenizer=sys.argv[1])
mask = fill.tokenizer.mask_token
text = f"def __init__(self):\n    return{mask}"
for guess in fill(text, top_k=3):
    print(f"  {guess['score']:.3f}  {guess['token_str']!r}")
PYEOF

step "7/7 evaluating the export and a random-init model of the same size (embedded tasks, held-out documents)"
# one seed keeps this step within a few minutes on 2 cores; EVAL_SEEDS=3 gives a median and spread
"$PY" -m modernbert_pretrain.evaluate "$OUT" --random-init-baseline --tasks embedded --seeds "${EVAL_SEEDS:-1}" \
    --data-dir "$WORKDIR/corpus" --out "$WORKDIR/eval"
echo "$OUT"
