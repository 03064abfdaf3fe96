#!/usr/bin/env bash
# Inherit a skill onto many targets in one pass, then evaluate every inherited model on its
# passage's LooGLE QA (the original release's merge-and-evaluate loop, batched).
#
#   SKILL_VECTOR=checkpoints/skill_vectors/sources_0.safetensors TARGET_PASSAGES=1-20 bash scripts/merge_and_eval.sh
#   GRPO_MODEL=checkpoints/passage0/grpo/final BASE_MODEL=checkpoints/passage0/stage2/final \
#     TARGET_PASSAGES=1-20 ALPHA=0.5 OUTPUT_TAG=inherited_a0.5 bash scripts/merge_and_eval.sh
#
# Targets are checkpoints/passage{N}/stage2/final; outputs checkpoints/<OUTPUT_TAG>/passage{N};
# results eval_results/<OUTPUT_TAG>/passage{N}/. Existing outputs and results are kept (a rerun
# continues). A judge server must answer at JUDGE_URL (scripts/train/start_judge_server.sh).
# Every setting below can be overridden from the environment.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/passages.sh"

TARGET_PASSAGES=${TARGET_PASSAGES:-1-4}
SKILL_VECTOR=${SKILL_VECTOR:-}             # a saved skill vector, or GRPO_MODEL + BASE_MODEL
GRPO_MODEL=${GRPO_MODEL:-}
BASE_MODEL=${BASE_MODEL:-}
ALPHA=${ALPHA:-1.0}
OUTPUT_TAG=${OUTPUT_TAG:-inherited}
N_RUNS=${N_RUNS:-3}
EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-300}
CKPT_ROOT=${CKPT_ROOT:-$ROOT/checkpoints}
DATA_ROOT=${DATA_ROOT:-$ROOT/data}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/eval_results}
JUDGE_URL=${JUDGE_URL:-${JUDGE_SERVER_URL:-http://127.0.0.1:8123}}
PY=${PYTHON:-${PAST_VENV:-$ROOT/.venv}/bin/python}
[[ -x "$PY" ]] || PY=python3

[[ "${1:-}" == -h || "${1:-}" == --help ]] && { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }
if [[ -n "$SKILL_VECTOR" ]]; then
  skill_args=(--skill_vector "$SKILL_VECTOR")
elif [[ -n "$GRPO_MODEL" && -n "$BASE_MODEL" ]]; then
  skill_args=(--grpo_model "$GRPO_MODEL" --base_model "$BASE_MODEL")
else
  echo "set SKILL_VECTOR, or GRPO_MODEL and BASE_MODEL (see --help)" >&2; exit 2
fi
target_ids="$(expand_passages "$TARGET_PASSAGES")"
read -r -a targets <<< "$target_ids"

todo_targets=(); todo_outputs=()
for p in "${targets[@]}"; do
  out="$CKPT_ROOT/$OUTPUT_TAG/passage$p"
  if [[ -e "$out/config.json" ]]; then echo "passage $p: $out exists"; continue; fi
  todo_targets+=("$CKPT_ROOT/passage$p/stage2/final"); todo_outputs+=("$out")
done
if [[ ${#todo_targets[@]} -gt 0 ]]; then
  echo "+ inherit_weight.py onto ${#todo_targets[@]} target(s)"
  "$PY" "$ROOT/inherit_weight.py" "${skill_args[@]}" --alpha "$ALPHA" \
    --target_models "${todo_targets[@]}" --output_dirs "${todo_outputs[@]}"
fi

for p in "${targets[@]}"; do
  if [[ -f "$RESULTS_DIR/$OUTPUT_TAG/passage$p/test_results.json" ]]; then
    echo "passage $p, $OUTPUT_TAG: evaluated"; continue
  fi
  passage_id="$p" MODEL_PATH="$CKPT_ROOT/$OUTPUT_TAG/passage$p" MODEL_TAG="$OUTPUT_TAG" N_RUNS="$N_RUNS" \
    DATA_DIR="$DATA_ROOT" RESULTS_DIR="$RESULTS_DIR" JUDGE_URL="$JUDGE_URL" START_JUDGE=0 \
    bash "$ROOT/scripts/eval/eval_sft.sh" --max_new_tokens "$EVAL_MAX_NEW_TOKENS"
done
