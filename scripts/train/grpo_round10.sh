#!/usr/bin/env bash
# Iterative skill refinement: K rounds of GRPO (default 10), round k on source passage s_k (one
# passage per round, all different, so the rounds see disjoint sources):
#   start_k = stage2(s_k) + skill_{k-1}            (inherit_weight.py; round 1: stage2(s_1) itself)
#   rl_k    = GRPO from start_k on s_k's prompts   (scripts/train/grpo.sh)
#   skill_k = rl_k - stage2(s_k)                   (calc_delta_and_save.py)
# and skill_k is applied to every TARGET_PASSAGES stage-2 model. Kept per round:
#   $OUT_DIR/round{k}/start      the inherited start model (rounds >= 2)
#   $OUT_DIR/round{k}/grpo/final the GRPO result
#   $OUT_DIR/round{k}/skill_vector.safetensors
#   $OUT_DIR/round{k}/targets/passage{t}   stage2(t) + skill_k
#   $OUT_DIR/rounds.log          one line per finished round (paths above)
#
#   bash scripts/train/grpo_round10.sh
#   K=3 SOURCE_PASSAGES="4 7 9" TARGET_PASSAGES="0 1" bash scripts/train/grpo_round10.sh trainer.total_training_steps=20
#   DRY_RUN=1 bash scripts/train/grpo_round10.sh    # print every command, validate each round's GRPO config
# Needs each source's data/passage{s}/grpo.parquet + eval.parquet and checkpoints/passage{s}/stage2/final
# (scripts/train/sft.sh), and a judge server (scripts/train/start_judge_server.sh). GRPO settings
# come from the environment as for grpo.sh; trailing args are Hydra overrides for every round.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

K=${K:-10}
SOURCE_PASSAGES=${SOURCE_PASSAGES:-"0 1 2 3 4 5 6 7 8 9"}
TARGET_PASSAGES=${TARGET_PASSAGES:-}
ALPHA=${ALPHA:-1.0}
DATA_ROOT=${DATA_ROOT:-$ROOT/data}
CKPT_ROOT=${CKPT_ROOT:-$ROOT/checkpoints}
OUT_DIR=${OUT_DIR:-$CKPT_ROOT/grpo_round10}

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ "${1:-}" == -h || "${1:-}" == --help ]] && usage
read -r -a sources <<< "$SOURCE_PASSAGES"
read -r -a targets <<< "$TARGET_PASSAGES"
[[ "$K" =~ ^[1-9][0-9]*$ ]] || { echo "K must be a positive number, got '$K'" >&2; usage; }
(( ${#sources[@]} >= K )) || { echo "K=$K rounds need $K SOURCE_PASSAGES, got '${SOURCE_PASSAGES}'" >&2; usage; }
sources=("${sources[@]:0:K}")
[[ "$(printf '%s\n' "${sources[@]}" | sort -u | wc -l)" == "$K" ]] || {
  echo "SOURCE_PASSAGES must be distinct (disjoint sources per round), got '${sources[*]}'" >&2; usage; }
if [[ "$DRY_RUN" != 1 && -e "$OUT_DIR/rounds.log" && "${RESUME:-0}" != 1 ]]; then
  echo "$OUT_DIR already holds rounds ($OUT_DIR/rounds.log). Set RESUME=1 to continue after the" \
    "last finished round, or remove $OUT_DIR to start over." >&2
  exit 1
fi
[[ "$DRY_RUN" == 1 ]] || mkdir -p "$OUT_DIR"

stage2() { echo "$CKPT_ROOT/passage$1/stage2/final"; }

previous_skill=""
for ((k = 1; k <= K; k++)); do
  source_id="${sources[k - 1]}"
  round_dir="$OUT_DIR/round$k"
  skill="$round_dir/skill_vector.safetensors"
  if [[ "${RESUME:-0}" == 1 ]] && grep -q "^round $k " "$OUT_DIR/rounds.log" 2>/dev/null; then
    echo "round $k (source passage $source_id) already finished; skipping" >&2
    previous_skill="$skill"
    continue
  fi
  echo "=== round $k/$K: source passage $source_id ===" >&2

  base="$(stage2 "$source_id")"
  start="$base"
  if [[ -n "$previous_skill" ]]; then
    start="$round_dir/start"
    run_cmd "$PYTHON" "$ROOT/inherit_weight.py" --skill_vector "$previous_skill" --alpha "$ALPHA" \
      --target_models "$base" --output_dirs "$start" --overwrite
  fi

  passage_id="$source_id" MODEL_PATH="$start" OUTPUT_DIR="$round_dir/grpo" \
    DATA_ROOT="$DATA_ROOT" CKPT_ROOT="$CKPT_ROOT" \
    EXPERIMENT_NAME="round10_round${k}_passage$source_id" \
    bash "$ROOT/scripts/train/grpo.sh" "$@"

  run_cmd "$PYTHON" "$ROOT/calc_delta_and_save.py" --grpo_model "$round_dir/grpo/final" \
    --base_model "$base" --output "$skill" --overwrite

  for target_id in "${targets[@]}"; do
    run_cmd "$PYTHON" "$ROOT/inherit_weight.py" --skill_vector "$skill" --alpha "$ALPHA" \
      --target_models "$(stage2 "$target_id")" --output_dirs "$round_dir/targets/passage$target_id" --overwrite
  done

  line="round $k source=$source_id start=$start rl=$round_dir/grpo/final skill=$skill targets=${targets[*]:-none}"
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "DRY_RUN: log '$line'"
  else
    echo "$line" >> "$OUT_DIR/rounds.log"
    echo "$line" >&2
  fi
  previous_skill="$skill"
done
