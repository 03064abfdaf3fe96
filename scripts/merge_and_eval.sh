#!/usr/bin/env bash
# Inherit a skill onto many targets in one pass, then evaluate every inherited model on its
# passage's LooGLE QA (the original release's merge-and-evaluate loop, batched).
#
#   SKILL_VECTOR=checkpoints/skill_vectors/sources_0.safetensors TARGET_PASSAGES=1-20 bash scripts/merge_and_eval.sh
#   GRPO_MODEL=checkpoints/passage0/grpo/final GRPO_BASE_MODEL=checkpoints/passage0/stage2/final \
#     TARGET_PASSAGES=1-20 ALPHA=0.5 MODEL_TAG=inherited_a0.5 bash scripts/merge_and_eval.sh
#   DRY_RUN=1 ... bash scripts/merge_and_eval.sh        # print the commands only
#
# Targets are checkpoints/passage{N}/stage2/final; outputs checkpoints/<MODEL_TAG>/passage{N};
# results eval_results/<MODEL_TAG>/passage{N}/. Existing outputs and results are kept (a rerun
# continues). A judge server must answer at JUDGE_URL (scripts/train/start_judge_server.sh). The
# evaluation settings are those of scripts/eval/eval_sft.sh (N_RUNS, EVAL_BACKEND,
# EVAL_MAX_NEW_TOKENS, ...); every setting below can be overridden from the environment.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TARGET_PASSAGES=${TARGET_PASSAGES:-1-4}
SKILL_VECTOR=${SKILL_VECTOR:-}             # a saved skill vector, or GRPO_MODEL + GRPO_BASE_MODEL
GRPO_MODEL=${GRPO_MODEL:-}                 # the GRPO result
GRPO_BASE_MODEL=${GRPO_BASE_MODEL:-}       # the model that GRPO run started from
ALPHA=${ALPHA:-1.0}
MODEL_TAG=${MODEL_TAG:-inherited}
CKPT_ROOT=${CKPT_ROOT:-$ROOT/checkpoints}

if [[ -n "$SKILL_VECTOR" ]]; then
  skill_args=(--skill_vector "$SKILL_VECTOR")
elif [[ -n "$GRPO_MODEL" && -n "$GRPO_BASE_MODEL" ]]; then
  skill_args=(--grpo_model "$GRPO_MODEL" --base_model "$GRPO_BASE_MODEL")
else
  usage_error "set SKILL_VECTOR, or GRPO_MODEL and GRPO_BASE_MODEL"
fi
ids="$(expand_passages "$TARGET_PASSAGES")"
read -r -a targets <<< "$ids"

todo_targets=() todo_outputs=()
for p in "${targets[@]}"; do
  out="$CKPT_ROOT/$MODEL_TAG/passage$p"
  if [[ -e "$out/config.json" ]]; then echo "passage $p: $out exists" >&2; continue; fi
  todo_targets+=("$CKPT_ROOT/passage$p/stage2/final") todo_outputs+=("$out")
done
if ((${#todo_targets[@]} > 0)); then
  run_cmd "$PYTHON" "$ROOT/inherit_weight.py" "${skill_args[@]}" --alpha "$ALPHA" \
    --target_models "${todo_targets[@]}" --output_dirs "${todo_outputs[@]}"
fi

START_JUDGE=0
for p in "${targets[@]}"; do
  passage_id="$p" MODEL_PATH="$CKPT_ROOT/$MODEL_TAG/passage$p"
  if [[ -f "${RESULTS_DIR:-$ROOT/eval_results}/$MODEL_TAG/passage$p/test_results.json" ]]; then
    echo "passage $p, $MODEL_TAG: evaluated" >&2
    continue
  fi
  eval_settings
  eval_passage
done
