#!/usr/bin/env bash
# Closed-book LooGLE evaluation of one model on one passage: N_RUNS seeded runs over the
# passage's held-out questions, judged by the judge server, written to
# eval_results/<model tag>/passage{N}/{answers.json,test_results.json}.
#
#   bash scripts/eval/eval_sft.sh                                        # passage 0, its stage-2 model
#   passage_id=3 MODEL_PATH=checkpoints/inherited/passage3 MODEL_TAG=inherited bash scripts/eval/eval_sft.sh
#   bash scripts/eval/eval_sft.sh --temperature 0.5                      # trailing args go to eval_with_remote
#   DRY_RUN=1 bash scripts/eval/eval_sft.sh                              # print the command only
# Settings from the environment (shared by the evaluation drivers; scripts/common.sh,
# eval_settings): passage_id, MODEL_PATH, MODEL_TAG (default: the variant in MODEL_PATH,
# checkpoints/passage3/stage2/final -> stage2), N_RUNS 3, EVAL_BACKEND (vllm on a GPU, else hf),
# EVAL_MAX_NEW_TOKENS (default from the eval set's split: 300 short-, 500 long-dependency),
# DATA_ROOT, RESULTS_DIR, JUDGE_URL, START_JUDGE=1 (start a judge with JUDGE_BACKEND if none
# answers at JUDGE_URL). An eval set with no questions stops before the model is loaded.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

passage_id=${passage_id:-0}
MODEL_PATH=${MODEL_PATH:-${CKPT_ROOT:-$ROOT/checkpoints}/passage$passage_id/stage2/final}
check_passage_id
eval_settings
eval_passage "$@"
