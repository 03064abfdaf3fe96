#!/usr/bin/env bash
# λ sweep of one target without writing models: the target loaded once, its weights set in place
# to target + λ·skill for each λ of ALPHAS, the passage's LooGLE QA answered and judged at every
# point (eval_loogle.sweep_alpha); results in eval_results/<SWEEP_NAME>_a<λ>/passage{N}/, the
# table and the plot against λ from `python scripts/show_results.py`.
#
#   passage_id=3 SKILL_VECTOR=checkpoints/skill_vectors/sources_0.safetensors bash scripts/eval/sweep_alpha.sh
#   ALPHAS="0 0.5 1 1.5 2" SWEEP_NAME=sources_0 bash scripts/eval/sweep_alpha.sh --temperature 0   # trailing args go to sweep_alpha
#   DRY_RUN=1 bash scripts/eval/sweep_alpha.sh                           # print the command only
# Settings from the environment: passage_id, TARGET_MODEL (default: the passage's stage-2 model),
# SKILL_VECTOR (a saved vector; several, space-separated, are each scaled by λ), ALPHAS (default
# "-0.5 0 0.5 1 1.5"), SWEEP_NAME (default inherited), and those of the other evaluation drivers:
# N_RUNS 3, EVAL_BACKEND (vllm on a GPU, else hf), EVAL_MAX_NEW_TOKENS (default from the eval
# set's split), DATA_ROOT, RESULTS_DIR, JUDGE_URL, START_JUDGE=1. A rerun skips the λ already judged.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

passage_id=${passage_id:-0}
TARGET_MODEL=${TARGET_MODEL:-${CKPT_ROOT:-$ROOT/checkpoints}/passage$passage_id/stage2/final}
SKILL_VECTOR=${SKILL_VECTOR:-}
ALPHAS=${ALPHAS:--0.5 0 0.5 1 1.5}
SWEEP_NAME=${SWEEP_NAME:-inherited}
check_passage_id
[[ -n "$SKILL_VECTOR" ]] || usage_error "set SKILL_VECTOR to a saved skill vector (calc_delta_and_save.py --output FILE)"
MODEL_PATH=$TARGET_MODEL
eval_settings
read -r -a vectors <<< "$SKILL_VECTOR"
read -r -a alphas <<< "$ALPHAS"
sweep_args=(--target_model "$TARGET_MODEL" --skill_vector "${vectors[@]}" --alphas "${alphas[@]}" --sweep_name "$SWEEP_NAME"
  --passage_idx "$passage_id" --data_dir "$DATA_ROOT" --results_dir "$RESULTS_DIR" --n_runs "$N_RUNS" --judge_url "$JUDGE_URL")
[[ -z "$EVAL_BACKEND" ]] || sweep_args+=(--backend "$EVAL_BACKEND")
[[ -z "$EVAL_MAX_NEW_TOKENS" ]] || sweep_args+=(--max_new_tokens "$EVAL_MAX_NEW_TOKENS")
if [[ "$DRY_RUN" != 1 ]]; then
  "$PYTHON" "$ROOT/scripts/preflight.py" eval --data "$DATA_ROOT/passage$passage_id/eval.parquet" \
    --stage "λ sweep on passage $passage_id" >/dev/null || exit 1
  [[ "$START_JUDGE" != 1 ]] || bash "$ROOT/scripts/train/start_judge_server.sh" >/dev/null
fi
run_cmd "$PYTHON" -m eval_loogle.sweep_alpha "${sweep_args[@]}" "$@"
