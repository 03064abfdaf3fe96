#!/usr/bin/env bash
# Passage-in-context LooGLE evaluation (the knowledge upper bound): the passage goes into the
# prompt, cut in the middle to fit the model's context window by tokens, then the question.
# Judged by the judge server; results in eval_results/<model tag>-context/passage{N}/.
#
#   bash scripts/eval_with_context.sh                                    # passage 0, base model
#   passage_id=3 MODEL_PATH=checkpoints/passage3/stage2/final bash scripts/eval_with_context.sh
#   MAX_CONTEXT_TOKENS=16384 bash scripts/eval_with_context.sh           # a smaller window than the model's
#   DRY_RUN=1 bash scripts/eval_with_context.sh                          # print the command only
# LOOGLE must be the jsonl that data/passage{N}/eval.parquet was made from (checked by title);
# MAX_CONTEXT_TOKENS empty: the model's max_position_embeddings. The other settings are those of
# scripts/eval/eval_sft.sh (see its --help); trailing args go to eval_loogle.eval_with_remote.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

passage_id=${passage_id:-0}
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-7B-Instruct}
LOOGLE=${LOOGLE:-$ROOT/data/loogle/shortdep_qa.jsonl}
MAX_CONTEXT_TOKENS=${MAX_CONTEXT_TOKENS:-}
check_passage_id
eval_settings
context_args=(--context_file "$LOOGLE")
[[ -z "$MAX_CONTEXT_TOKENS" ]] || context_args+=(--max_context_tokens "$MAX_CONTEXT_TOKENS")
eval_passage "${context_args[@]}" "$@"
