#!/usr/bin/env bash
# GSM8K accuracy by exact numeric match (the number after "####", else the last number), to
# check that adding a skill vector does not break general reasoning. Greedy, one run by default.
# Results in eval_results/<model tag>/gsm8k/test_results.json, next to the LooGLE passages.
#
#   bash scripts/eval_gsm8k.sh                                           # passage 0's stage-2 model
#   MODEL_PATH=checkpoints/inherited/passage3 MODEL_TAG=inherited bash scripts/eval_gsm8k.sh
#   bash scripts/eval_gsm8k.sh --max_new_tokens 1024                     # trailing args go to eval_with_remote
#   DRY_RUN=1 bash scripts/eval_gsm8k.sh                                 # print the command only
# GSM8K_FILE is verl's RLHFDataset parquet of the test split (prepare_data/preprocess_gsm8k.py);
# its folder name (gsm8k) is the results row name.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

passage_id=${passage_id:-0}
MODEL_PATH=${MODEL_PATH:-$ROOT/checkpoints/passage$passage_id/stage2/final}
MODEL_TAG=${MODEL_TAG:-}                   # empty: derived from MODEL_PATH
GSM8K_FILE=${GSM8K_FILE:-$ROOT/data/gsm8k/test.parquet}
N_RUNS=${N_RUNS:-1}
TEMPERATURE=${TEMPERATURE:-0}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-512}
BACKEND=${BACKEND:-}                       # empty: vllm with a GPU, else hf
RESULTS_DIR=${RESULTS_DIR:-$ROOT/eval_results}
DRY_RUN=${DRY_RUN:-0}
PYTHON=${PYTHON:-$([[ -x "$ROOT/.venv/bin/python" ]] && echo "$ROOT/.venv/bin/python" || echo python3)}

[[ "${1:-}" == -h || "${1:-}" == --help ]] && { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0; }

# eval_with_remote scores GSM8K by numeric match in-process: no judge server is needed.
cmd=("$PYTHON" -m eval_loogle.eval_with_remote
  --data_file "$GSM8K_FILE" --model_path "$MODEL_PATH" --n_runs "$N_RUNS" --temperature "$TEMPERATURE"
  --max_new_tokens "$MAX_NEW_TOKENS" --results_dir "$RESULTS_DIR"
  ${MODEL_TAG:+--model_tag "$MODEL_TAG"} ${BACKEND:+--backend "$BACKEND"} "$@")
if [[ "$DRY_RUN" == 1 ]]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
cd "$ROOT"
"${cmd[@]}"
