#!/usr/bin/env bash
# GSM8K accuracy by exact numeric match (the number after "####", else the last number), to
# check that adding a skill vector does not break general reasoning. Greedy, one run by default.
# Results in eval_results/<model tag>/gsm8k/test_results.json, next to the LooGLE passages.
#
#   bash scripts/eval_gsm8k.sh                                           # passage 0's stage-2 model
#   MODEL_PATH=checkpoints/inherited/passage3 MODEL_TAG=inherited bash scripts/eval_gsm8k.sh
#   EVAL_MAX_NEW_TOKENS=1024 bash scripts/eval_gsm8k.sh                  # trailing args go to eval_with_remote
#   DRY_RUN=1 bash scripts/eval_gsm8k.sh                                 # print the command only
# GSM8K_FILE is verl's RLHFDataset parquet of the test split (prepare_data/preprocess_gsm8k.py);
# its folder name (gsm8k) is the results row name. Here N_RUNS defaults to 1, EVAL_TEMPERATURE
# to 0 and EVAL_MAX_NEW_TOKENS to 512; the other settings are those of scripts/eval/eval_sft.sh.
# No judge server is needed: answers are scored by numeric match in-process.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

MODEL_PATH=${MODEL_PATH:-${CKPT_ROOT:-$ROOT/checkpoints}/passage${passage_id:-0}/stage2/final}
GSM8K_FILE=${GSM8K_FILE:-$ROOT/data/gsm8k/test.parquet}
N_RUNS=${N_RUNS:-1}
EVAL_TEMPERATURE=${EVAL_TEMPERATURE:-0}
EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-512}
eval_settings
[[ "$DRY_RUN" == 1 ]] || "$PYTHON" "$ROOT/scripts/preflight.py" eval --data "$GSM8K_FILE" --stage "GSM8K evaluation" >/dev/null \
  || exit 1
run_cmd "$PYTHON" -m eval_loogle.eval_with_remote --data_file "$GSM8K_FILE" --temperature "$EVAL_TEMPERATURE" \
  "${eval_args[@]}" "$@"
