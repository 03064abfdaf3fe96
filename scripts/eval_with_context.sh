#!/usr/bin/env bash
# Passage-in-context LooGLE evaluation (the knowledge upper bound): the passage goes into the
# prompt, cut in the middle to fit the model's context window by tokens, then the question.
# Judged by the judge server; results in eval_results/<model tag>-context/passage{N}/.
#
#   bash scripts/eval_with_context.sh                                    # passage 0, base model
#   passage_id=3 MODEL_PATH=checkpoints/passage3/stage2/final bash scripts/eval_with_context.sh
#   MAX_CONTEXT_TOKENS=16384 bash scripts/eval_with_context.sh           # a smaller window than the model's
#   DRY_RUN=1 bash scripts/eval_with_context.sh                          # print the command only
# LOOGLE_FILE must be the jsonl that data/passage{N}/eval.parquet was made from (checked by
# title). Trailing args go to eval_loogle.eval_with_remote; START_JUDGE as in eval/eval_sft.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

passage_id=${passage_id:-0}
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-7B-Instruct}
MODEL_TAG=${MODEL_TAG:-}                   # empty: <variant from MODEL_PATH>-context
LOOGLE_FILE=${LOOGLE_FILE:-$ROOT/data/loogle/shortdep_qa.jsonl}  # as scripts/gen_data/process_loogle_eval.sh
MAX_CONTEXT_TOKENS=${MAX_CONTEXT_TOKENS:-} # empty: the model's max_position_embeddings
N_RUNS=${N_RUNS:-3}
BACKEND=${BACKEND:-}                       # empty: vllm with a GPU, else hf
DATA_DIR=${DATA_DIR:-$ROOT/data}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/eval_results}
JUDGE_URL=${JUDGE_URL:-${JUDGE_SERVER_URL:-http://127.0.0.1:8123}}
START_JUDGE=${START_JUDGE:-1}
DRY_RUN=${DRY_RUN:-0}
PYTHON=${PYTHON:-$([[ -x "$ROOT/.venv/bin/python" ]] && echo "$ROOT/.venv/bin/python" || echo python3)}

[[ "${1:-}" == -h || "${1:-}" == --help ]] && { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0; }
[[ "$passage_id" =~ ^[0-9]+$ ]] || { echo "passage_id must be a number, got '$passage_id'" >&2; exit 2; }

cmd=("$PYTHON" -m eval_loogle.eval_with_remote
  --passage_idx "$passage_id" --model_path "$MODEL_PATH" --n_runs "$N_RUNS" --context_file "$LOOGLE_FILE"
  --data_dir "$DATA_DIR" --results_dir "$RESULTS_DIR" --judge_url "$JUDGE_URL"
  ${MAX_CONTEXT_TOKENS:+--max_context_tokens "$MAX_CONTEXT_TOKENS"}
  ${MODEL_TAG:+--model_tag "$MODEL_TAG"} ${BACKEND:+--backend "$BACKEND"} "$@")
if [[ "$DRY_RUN" == 1 ]]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
if [[ "$START_JUDGE" == 1 ]]; then
  port=${JUDGE_URL##*:}; port=${port%%/*}
  JUDGE_PORT=$port bash "$ROOT/scripts/train/start_judge_server.sh" > /dev/null
fi
cd "$ROOT"
"${cmd[@]}"
