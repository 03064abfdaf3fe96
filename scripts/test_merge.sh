#!/usr/bin/env bash
# Quick check that an (inherited) model loads and answers: one closed-book run over a passage's
# LooGLE questions with a small token budget, answers printed. No judge needed.
#
#   MODEL_PATH=checkpoints/inherited/passage3 passage_id=3 bash scripts/test_merge.sh
#   DRY_RUN=1 passage_id=3 bash scripts/test_merge.sh        # print the command only
# Settings: passage_id (default 1), MODEL_PATH (default checkpoints/inherited/passage{N}),
# DATA_ROOT, EVAL_MAX_NEW_TOKENS (default 64), EVAL_BACKEND (vllm on a GPU, else hf).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

passage_id=${passage_id:-1}
MODEL_PATH=${MODEL_PATH:-${CKPT_ROOT:-$ROOT/checkpoints}/inherited/passage$passage_id}
DATA_ROOT=${DATA_ROOT:-$ROOT/data}
EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-64}
EVAL_BACKEND=${EVAL_BACKEND:-}

check_passage_id
[[ "$DRY_RUN" == 1 || -e "$MODEL_PATH/config.json" ]] || usage_error "no model at $MODEL_PATH (set MODEL_PATH)"
answers="$(mktemp -d)/answers.json"
trap 'rm -rf "$(dirname "$answers")"' EXIT
run_cmd "$PYTHON" -m eval_loogle.generate_answers --passage_idx "$passage_id" --model_path "$MODEL_PATH" --n_runs 1 \
  --data_dir "$DATA_ROOT" --max_new_tokens "$EVAL_MAX_NEW_TOKENS" --output_file "$answers" \
  ${EVAL_BACKEND:+--backend "$EVAL_BACKEND"}
[[ "$DRY_RUN" == 1 ]] && exit 0
"$PYTHON" -m json.tool "$answers" | grep -E '"(question|response)"' | head -20
echo "test_merge.sh: $MODEL_PATH loaded and answered passage $passage_id's questions"
