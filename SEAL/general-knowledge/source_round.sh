#!/usr/bin/env bash
# One round k of PaST's SQuAD source stage, in ROUNDS_DIR/round{k}/:
#   passages.json       SOURCE_N SQuAD train passages: positions SOURCE_START + (k-1)*SOURCE_N .. of the
#                       SOURCE_SEED shuffle (squad_data.py), none of them an EXCLUDE (evaluation) passage
#   implications.json   GEN_COMPLETIONS completions per passage by MODEL itself (make_implications.py)
#   data/               stage1_sft.parquet (raw-text sequences) and grpo.parquet (make_source_data.py)
#   stage1/final        sft_k: knowledge SFT of all the round's passages into MODEL (scripts/train/sft.sh
#                       with the raw-text dataset class; full fine-tune, or SFT_LORA_RANK > 0)
#   gate.json           sft_k vs MODEL on the round's own questions (knowledge_gate.py); below
#                       GATE_MARGIN the round stops here, unless GATE_OVERRIDE=1
#   start, grpo/final   GRPO from sft_k + ALPHA * PREVIOUS_SKILL (round 1: sft_k itself) on the round's
#                       questions: raw prompts through the pass-through chat template, responses of
#                       MAX_RESPONSE_LENGTH tokens, reward = the judge's squad grader (grpo.sh)
#   skill_vector.safetensors   v_k = rl_k - sft_k
# The GRPO part is scripts/common.sh's skill_round, the round logic of scripts/train/grpo_round10.sh.
# Parts already complete are kept, so a rerun continues an interrupted round (RESUME=1 lets verl
# resume an interrupted SFT or GRPO run from its last checkpoint).
#
#   ROUND=1 MODEL=/models/Qwen2.5-7B EXCLUDE=data/squad/validation_seed42_from0_n200.json bash SEAL/general-knowledge/source_round.sh
#   ROUND=2 ... bash SEAL/general-knowledge/source_round.sh          # PREVIOUS_SKILL: round 1's vector
#   DRY_RUN=1 ROUND=2 ... bash SEAL/general-knowledge/source_round.sh   # commands + composed verl configs
# Needs a judge with the squad grader at JUDGE_URL (an open model served by vLLM suggested for RL).
# Settings (environment; "suggested" = the paper does not publish it): ROUND (1), ROUNDS_DIR
# (checkpoints/squad_rounds), MODEL (a local dir of the base model), SOURCE_INPUT (rajpurkar/squad),
# SOURCE_SPLIT (train), SOURCE_SEED (42), SOURCE_START (0), SOURCE_N (50, suggested: SEAL's round
# size), EXCLUDE (the evaluation passages' JSON), PREVIOUS_SKILL (round k-1's vector), ALPHA (1.0,
# suggested), GATE_MARGIN (0.05), GATE_OVERRIDE (0), GATE_BACKEND (vllm on a GPU with vLLM, else hf), the
# GEN_* settings and PROMPT_FILE of make_implications.sh (GEN_COMPLETIONS 1 here), ANSWER_TEMPLATE (a file
# with the answer prompt of the GRPO data and the gate, as start_servers.sh's; empty: SEAL's), sft.sh's and grpo.sh's
# settings, with these suggested defaults for the SQuAD source stage: SFT_EPOCHS 5, SFT_LR 1e-5,
# SFT_BATCH_SIZE 16, SFT_MAX_LENGTH 2048, ROLLOUT_N 8, ROLLOUT_TEMPERATURE 1.0, GRPO_LR 1e-6,
# KL_LOSS_COEF 0.001, GRPO_BATCH_SIZE 32, GRPO_EPOCHS 5, MAX_PROMPT_LENGTH 512, MAX_RESPONSE_LENGTH 64.
# Trailing args are Hydra overrides for GRPO.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/common.sh"
squad_answer_settings
ROUND=${ROUND:-1}
ROUNDS_DIR=${ROUNDS_DIR:-${CKPT_ROOT:-$ROOT/checkpoints}/squad_rounds}
MODEL=${MODEL:-}
SOURCE_INPUT=${SOURCE_INPUT:-rajpurkar/squad}
SOURCE_SPLIT=${SOURCE_SPLIT:-train}
SOURCE_SEED=${SOURCE_SEED:-42}
SOURCE_START=${SOURCE_START:-0}
SOURCE_N=${SOURCE_N:-50}
EXCLUDE=${EXCLUDE:-}
ALPHA=${ALPHA:-1.0}
GATE_MARGIN=${GATE_MARGIN:-0.05}
GATE_OVERRIDE=${GATE_OVERRIDE:-0}
GATE_BACKEND=${GATE_BACKEND:-$(default_generation_backend)}
GEN_COMPLETIONS=${GEN_COMPLETIONS:-1}
GENERATOR="$MODEL"
squad_generation_settings
export SFT_EPOCHS=${SFT_EPOCHS:-5} SFT_LR=${SFT_LR:-1e-5} SFT_BATCH_SIZE=${SFT_BATCH_SIZE:-16} SFT_MAX_LENGTH=${SFT_MAX_LENGTH:-2048}
export ROLLOUT_N=${ROLLOUT_N:-8} ROLLOUT_TEMPERATURE=${ROLLOUT_TEMPERATURE:-1.0} GRPO_LR=${GRPO_LR:-1e-6}
export KL_LOSS_COEF=${KL_LOSS_COEF:-0.001} GRPO_BATCH_SIZE=${GRPO_BATCH_SIZE:-32} GRPO_EPOCHS=${GRPO_EPOCHS:-5}
export MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-512} MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-64}

[[ "$ROUND" =~ ^[1-9][0-9]*$ ]] || usage_error "ROUND must be a positive number, got '$ROUND'"
[[ -n "$MODEL" && ( -d "$MODEL" || "$DRY_RUN" == 1 ) ]] || usage_error "MODEL must be a local dir of the base model" \
  "(inherit_weight.py reads it), got '$MODEL': download it first (huggingface-cli download Qwen/Qwen2.5-7B --local-dir DIR)"
[[ -n "$EXCLUDE" && ( -f "$EXCLUDE" || "$DRY_RUN" == 1 ) ]] || usage_error "EXCLUDE must be the evaluation passages' JSON" \
  "(squad_data.py), which no source passage may be, got '$EXCLUDE'"
if ((ROUND > 1)); then
  PREVIOUS_SKILL=${PREVIOUS_SKILL:-$ROUNDS_DIR/round$((ROUND - 1))/skill_vector.safetensors}
  [[ "$DRY_RUN" == 1 || -f "$PREVIOUS_SKILL" ]] || usage_error "round $ROUND starts from round $((ROUND - 1))'s vector:" \
    "$PREVIOUS_SKILL does not exist (run round $((ROUND - 1)) first, or set PREVIOUS_SKILL)"
else
  PREVIOUS_SKILL=${PREVIOUS_SKILL:-}
fi
round_dir="$ROUNDS_DIR/round$ROUND"
GK="$ROOT/SEAL/general-knowledge"
echo "=== SQuAD source round $ROUND: $SOURCE_N passages from position $((SOURCE_START + (ROUND - 1) * SOURCE_N)) of" \
  "$SOURCE_INPUT ($SOURCE_SPLIT), model $MODEL, previous skill ${PREVIOUS_SKILL:-none} ===" >&2

# data
[[ -f "$round_dir/passages.json" ]] || run_cmd "$PYTHON" "$GK/squad_data.py" --input "$SOURCE_INPUT" --split "$SOURCE_SPLIT" \
  --seed "$SOURCE_SEED" --start $((SOURCE_START + (ROUND - 1) * SOURCE_N)) --n "$SOURCE_N" --exclude "$EXCLUDE" \
  --output "$round_dir/passages.json"
[[ -f "$round_dir/implications.json" ]] || run_cmd "$PYTHON" "$GK/make_implications.py" --input "$round_dir/passages.json" \
  --output "$round_dir/implications.json" "${implications_args[@]}"
[[ -f "$round_dir/data/grpo.parquet" ]] || run_cmd "$PYTHON" "$GK/make_source_data.py" \
  --implications "$round_dir/implications.json" --output_dir "$round_dir/data" \
  ${ANSWER_TEMPLATE:+--answer_template "$ANSWER_TEMPLATE"}

# knowledge SFT: MODEL -> sft_k
sft_model="$round_dir/stage1/final"
if [[ ! -e "$sft_model/config.json" ]]; then
  env STAGES=1 MODEL="$MODEL" DATA_DIR="$round_dir/data" CKPT_DIR="$round_dir" passage_id="$ROUND" \
    EXPERIMENT_NAME="squad_round$ROUND" SFT_DATASET_CLASS=seal_squad.sft_dataset.RawTextSFTDataset \
    RESUME="${RESUME:-0}" NNODES=1 bash "$ROOT/scripts/train/sft.sh"   # on this node's GPUs (GRPO spans the nodes)
fi

# the gate: does sft_k know its passages better than MODEL?
gate_passed() { [[ -f "$round_dir/gate.json" ]] && grep -qE '"(passed|overridden)": true' "$round_dir/gate.json"; }
if ! gate_passed; then
  check_judge "knowledge gate of round $ROUND"
  for who in base sft; do
    model="$MODEL"
    [[ "$who" == sft ]] && model="$sft_model"
    [[ -f "$round_dir/gate/$who.json" ]] || run_cmd "$PYTHON" "$GK/knowledge_gate.py" answer --model "$model" \
      --passages "$round_dir/passages.json" --output "$round_dir/gate/$who.json" --backend "$GATE_BACKEND" \
      --judge_url "$JUDGE_URL" ${JUDGE_TOKEN_FILE:+--judge_token_file "$JUDGE_TOKEN_FILE"} \
      --max_new_tokens "$MAX_RESPONSE_LENGTH" ${ANSWER_TEMPLATE:+--answer_template "$ANSWER_TEMPLATE"}
  done
  gate_cmd=("$PYTHON" "$GK/knowledge_gate.py" decide --base "$round_dir/gate/base.json" --sft "$round_dir/gate/sft.json"
    --margin "$GATE_MARGIN" --output "$round_dir/gate.json")
  [[ "$GATE_OVERRIDE" == 1 ]] && gate_cmd+=(--override)
  run_cmd "${gate_cmd[@]}" || { echo "round $ROUND stops before GRPO (see $round_dir/gate.json)" >&2; exit 3; }
fi

# GRPO from sft_k + ALPHA * v_{k-1}; v_k = rl_k - sft_k
skill_round "$round_dir" "$sft_model" "$PREVIOUS_SKILL" \
  DATA_DIR="$round_dir/data" GRPO_TRAIN_FILES="$round_dir/data/grpo.parquet" GRPO_VAL_FILES="$round_dir/data/grpo.parquet" \
  CHAT_TEMPLATE="$GK/raw_prompt.jinja" GRADER=squad EXPERIMENT_NAME="squad_round${ROUND}_grpo" -- "$@"
echo "round $ROUND done: sft $sft_model, rl $round_dir/grpo/final, skill $round_dir/skill_vector.safetensors" >&2
