#!/usr/bin/env bash
# Iterative skill refinement: K rounds of GRPO (default 10), round k on source passage s_k (one
# passage per round, all different, so the rounds see disjoint sources):
#   start_k = stage2(s_k) + ALPHA * skill_{k-1}    (inherit_weight.py; round 1: stage2(s_1) itself)
#   rl_k    = GRPO from start_k on s_k's prompts   (scripts/train/grpo.sh)
#   skill_k = rl_k - stage2(s_k)                   (calc_delta_and_save.py)
# and skill_k is applied to every TARGET_PASSAGES stage-2 model. So skill_K = sum over rounds j of
# ALPHA^(K-j) * (what round j's GRPO changed): with ALPHA < 1 earlier rounds fade geometrically.
# Kept per round (the round logic is skill_round in scripts/common.sh):
#   $ROUNDS_DIR/round{k}/start      the inherited start model (rounds >= 2)
#   $ROUNDS_DIR/round{k}/grpo/final the GRPO result
#   $ROUNDS_DIR/round{k}/skill_vector.safetensors
#   $ROUNDS_DIR/round{k}/targets/passage{t}   stage2(t) + ALPHA * skill_k
#   $ROUNDS_DIR/rounds.log          one line per finished round (paths above)
#
#   bash scripts/train/grpo_round10.sh
#   K=3 SOURCE_PASSAGES="4 7 9" TARGET_PASSAGES="0 1" bash scripts/train/grpo_round10.sh trainer.total_training_steps=20
#   DRY_RUN=1 bash scripts/train/grpo_round10.sh    # print every command, validate each round's GRPO config
# Needs each source's data/passage{s}/{grpo,eval}.parquet (RL_PROMPTS=loogle: eval.parquet for
# both) and checkpoints/passage{s}/stage2/final (scripts/train/sft.sh), and an LLM judge
# (scripts/train/start_judge_server.sh). GRPO settings come from the environment as for grpo.sh;
# trailing args are Hydra overrides for every round. RESUME=1 continues after the last finished part.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

K=${K:-10}
SOURCE_PASSAGES=${SOURCE_PASSAGES:-"0 1 2 3 4 5 6 7 8 9"}   # N, N-M, a comma or space list
TARGET_PASSAGES=${TARGET_PASSAGES:-}
ALPHA=${ALPHA:-1.0}
RL_PROMPTS=${RL_PROMPTS:-generated}   # generated: data/passage{s}/grpo.parquet | loogle: the source's own LooGLE QA
DATA_ROOT=${DATA_ROOT:-$ROOT/data}
CKPT_ROOT=${CKPT_ROOT:-$ROOT/checkpoints}
ROUNDS_DIR=${ROUNDS_DIR:-$CKPT_ROOT/grpo_round10}

ids="$(expand_passages "$SOURCE_PASSAGES")"
read -r -a sources <<< "$ids"
ids="$([[ -z "$TARGET_PASSAGES" ]] || expand_passages "$TARGET_PASSAGES")"
read -r -a targets <<< "$ids"
[[ "$K" =~ ^[1-9][0-9]*$ ]] || usage_error "K must be a positive number, got '$K'"
((${#sources[@]} >= K)) || usage_error "K=$K rounds need $K SOURCE_PASSAGES, got '$SOURCE_PASSAGES'"
sources=("${sources[@]:0:K}")
[[ "$(printf '%s\n' "${sources[@]}" | sort -u | wc -l)" == "$K" ]] \
  || usage_error "SOURCE_PASSAGES must be distinct (disjoint sources per round), got '${sources[*]}'"
case "$RL_PROMPTS" in generated) rl_file=grpo.parquet ;; loogle) rl_file=eval.parquet ;;
  *) usage_error "RL_PROMPTS must be generated or loogle, got '$RL_PROMPTS'" ;; esac
if [[ "$DRY_RUN" != 1 && -e "$ROUNDS_DIR/rounds.log" && "${RESUME:-0}" != 1 ]]; then
  echo "$ROUNDS_DIR already holds rounds ($ROUNDS_DIR/rounds.log). Set RESUME=1 to continue after the" \
    "last finished part, or remove $ROUNDS_DIR to start over." >&2
  exit 1
fi
[[ "$DRY_RUN" == 1 ]] || mkdir -p "$ROUNDS_DIR"

stage2() { echo "$CKPT_ROOT/passage$1/stage2/final"; }

previous_skill=""
for ((k = 1; k <= K; k++)); do
  source_id="${sources[k - 1]}"
  round_dir="$ROUNDS_DIR/round$k"
  skill="$round_dir/skill_vector.safetensors"
  if grep -q "^round $k " "$ROUNDS_DIR/rounds.log" 2>/dev/null; then
    echo "round $k (source passage $source_id) already finished; skipping" >&2
    previous_skill="$skill"
    continue
  fi
  echo "=== round $k/$K: source passage $source_id ===" >&2
  skill_round "$round_dir" "$(stage2 "$source_id")" "$previous_skill" \
    passage_id="$source_id" DATA_ROOT="$DATA_ROOT" DATA_DIR="$DATA_ROOT/passage$source_id" CKPT_ROOT="$CKPT_ROOT" \
    GRPO_TRAIN_FILES="$DATA_ROOT/passage$source_id/$rl_file" EXPERIMENT_NAME="round10_round${k}_passage$source_id" \
    -- "$@"
  for target_id in "${targets[@]}"; do
    out="$round_dir/targets/passage$target_id"
    [[ -e "$out/config.json" ]] || run_cmd "$PYTHON" "$ROOT/inherit_weight.py" --skill_vector "$skill" \
      --alpha "$ALPHA" --target_models "$(stage2 "$target_id")" --output_dirs "$out"
  done

  line="round $k source=$source_id start=$([[ -n "$previous_skill" ]] && echo "$round_dir/start" || stage2 "$source_id")"
  line+=" rl=$round_dir/grpo/final skill=$skill alpha=$ALPHA targets=${targets[*]:-none}"
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "DRY_RUN: log '$line'"
  else
    echo "$line" >> "$ROUNDS_DIR/rounds.log"
    echo "$line" >&2
  fi
  previous_skill="$skill"
done
