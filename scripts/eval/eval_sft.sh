#!/usr/bin/env bash
# Closed-book LooGLE evaluation of one model on one passage: N_RUNS seeded runs over the
# passage's held-out questions, judged by the judge server, written to
# eval_results/<model tag>/passage{N}/{answers.json,test_results.json}.
#
#   bash scripts/eval/eval_sft.sh                                        # passage 0, its stage-2 model
#   passage_id=3 MODEL_PATH=checkpoints/inherited/passage3 MODEL_TAG=inherited bash scripts/eval/eval_sft.sh
#   bash scripts/eval/eval_sft.sh --temperature 0.5 --max_new_tokens 200  # trailing args go to eval_with_remote
#   DRY_RUN=1 bash scripts/eval/eval_sft.sh                              # print the command only
# The model tag (the results table's column) defaults to the variant in MODEL_PATH
# (checkpoints/passage3/stage2/final -> stage2). With START_JUDGE=1 (default) a judge server is
# started on JUDGE_URL's port if none answers there (scripts/train/start_judge_server.sh: OpenAI
# if a key is configured, else the offline lexical judge). Every setting can be set from the env.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

passage_id=${passage_id:-0}
MODEL_PATH=${MODEL_PATH:-$ROOT/checkpoints/passage$passage_id/stage2/final}
MODEL_TAG=${MODEL_TAG:-}                   # empty: derived from MODEL_PATH
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
  --passage_idx "$passage_id" --model_path "$MODEL_PATH" --n_runs "$N_RUNS"
  --data_dir "$DATA_DIR" --results_dir "$RESULTS_DIR" --judge_url "$JUDGE_URL"
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
