#!/usr/bin/env bash
# GRPO on a source passage's QA prompts, from that passage's stage-2 SFT model, with the judge
# server's score as reward (reward_function.py through reward.custom_reward_function.*; the judge
# URL, and for a judge off loopback the path of its token file, are reward kwargs). KL loss on
# (KL_LOSS_COEF=0: off, and no reference model).
# The final HF model is recorded as checkpoints/passage{N}/grpo/final ->
# global_step_<last>/actor/huggingface; then the FSDP shards and optimizer state are deleted
# (KEEP_RESUMABLE=1 keeps them). At most GRPO_CKPT_TO_KEEP checkpoints exist during the run.
# Writes each step's metrics to $GRPO_DIR/metrics.jsonl (python -m analysis.reward_curve plots them).
#
#   JUDGE_BACKEND=openai bash scripts/train/start_judge_server.sh   # an LLM judge first
#   bash scripts/train/grpo.sh                                      # passage 0
#   passage_id=2 ROLLOUT_N=16 bash scripts/train/grpo.sh trainer.total_training_steps=50
#   DRY_RUN=1 bash scripts/train/grpo.sh                            # print the command + composed config
# Several nodes: a Ray cluster first (`ray start --head` on the head node, `ray start
# --address=<head>:6379` on the others; on a node with JUDGE_GPUS leave them out of Ray:
# `CUDA_VISIBLE_DEVICES=<the others> ray start ... --num-gpus=<their count>`), a judge every node
# reaches, then on the head node:
#   RAY_ADDRESS=auto NNODES=2 N_GPUS_PER_NODE=8 MASTER_ADDR=<head address> bash scripts/train/grpo.sh
# The workers then use JUDGE_URL=http://<MASTER_ADDR>:$JUDGE_PORT (or the JUDGE_URL you set; a
# loopback one is refused) and JUDGE_TOKEN_FILE (default outputs/judge_token, shared filesystem).
# Before training, scripts/preflight.py nodes checks the cluster (NNODES nodes with N_GPUS_PER_NODE
# GPUs each, none of this node's JUDGE_GPUS) and, with a Ray task per node, that the run, model and
# data dirs are one shared filesystem.
# On GPUs a one-line GPU-memory estimate per GPU is printed first (actor, reference, vLLM's share;
# scripts/preflight.py gpu); a run that clearly cannot fit is refused, naming more GPUs, LoRA and
# offload as fixes. MODEL (the start model's base) sizes it until START_MODEL exists.
#
# The judge must be an LLM judge: a judge running the lexical (word-overlap) backend is refused
# unless JUDGE_BACKEND=lexical names it. Batch sizes fit the prompts verl keeps (it drops those
# longer than MAX_PROMPT_LENGTH): with fewer than GRPO_BATCH_SIZE the largest batch they allow is
# used, said in one line and in run.log; none, or too few for the ranks, stops before verl starts.
# A run dir that already holds checkpoints is refused; RESUME=1 resumes it. Settings below come
# from the environment; trailing args are Hydra overrides. Raw prompts for a base model (the SQuAD
# setting): CHAT_TEMPLATE names a Jinja file that replaces the tokenizer's chat template in the
# rollouts (actor_rollout_ref.model.custom_chat_template; SEAL/general-knowledge/raw_prompt.jinja
# passes the prompt through as it is), and GRADER picks the judge's grader (squad).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

passage_id=${passage_id:-0}
DATA_ROOT=${DATA_ROOT:-$ROOT/data}
CKPT_ROOT=${CKPT_ROOT:-$ROOT/checkpoints}
DATA_DIR=${DATA_DIR:-$DATA_ROOT/passage$passage_id}
CKPT_DIR=${CKPT_DIR:-$CKPT_ROOT/passage$passage_id}
START_MODEL=${START_MODEL:-$CKPT_DIR/stage2/final}   # the actor starts here
MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}             # START_MODEL's base: sizes the GPU memory estimate until START_MODEL exists
GRPO_DIR=${GRPO_DIR:-$CKPT_DIR/grpo}                 # run dir (checkpoints, final)
GRPO_TRAIN_FILES=${GRPO_TRAIN_FILES:-$DATA_DIR/grpo.parquet}
GRPO_VAL_FILES=${GRPO_VAL_FILES:-$DATA_DIR/eval.parquet}
ROLLOUT_N=${ROLLOUT_N:-8}
GRPO_BATCH_SIZE=${GRPO_BATCH_SIZE:-32}               # prompts per step
GRPO_MINI_BATCH_SIZE=${GRPO_MINI_BATCH_SIZE:-16}     # prompts per actor update
GRPO_MICRO_BATCH_SIZE=${GRPO_MICRO_BATCH_SIZE:-4}    # sequences per GPU per forward
GRPO_LR=${GRPO_LR:-1e-6}
KL_LOSS_COEF=${KL_LOSS_COEF:-0.001}
ENTROPY_COEFF=${ENTROPY_COEFF:-0}
ROLLOUT_TEMPERATURE=${ROLLOUT_TEMPERATURE:-1.0}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-1024}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-512}
GRPO_EPOCHS=${GRPO_EPOCHS:-5}
GRPO_STEPS=${GRPO_STEPS:-null}                       # exactly this many steps (null: the epochs decide)
GRPO_SAVE_FREQ=${GRPO_SAVE_FREQ:-20}                 # > 0: verl also saves at the last step
GRPO_CKPT_TO_KEEP=${GRPO_CKPT_TO_KEEP:-1}            # checkpoints kept while training (one more while saving)
GRPO_TEST_FREQ=${GRPO_TEST_FREQ:-10}
GRPO_VAL_BEFORE_TRAIN=${GRPO_VAL_BEFORE_TRAIN:-True}
ROLLOUT_TP=${ROLLOUT_TP:-1}
ROLLOUT_GPU_MEMORY_UTILIZATION=${ROLLOUT_GPU_MEMORY_UTILIZATION:-0.6}
CHAT_TEMPLATE=${CHAT_TEMPLATE:-}                     # Jinja file; empty: the tokenizer's own template
GRADER=${GRADER:-}                                   # the judge's grader (loogle | squad); empty: reward_function.py's default
PROJECT_NAME=${PROJECT_NAME:-past-grpo}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-passage${passage_id}_grpo}

check_passage_id
((ROLLOUT_N > 1)) || usage_error "GRPO needs ROLLOUT_N > 1 (a group per prompt), got $ROLLOUT_N"
check_judge_for_nodes
check_ray_for_nodes
check_judge "GRPO of passage $passage_id"

# vLLM sizes its context (and on a CPU its buffers) by what a rollout needs, not by the model's
# own limit (a KV cache for Qwen2.5's 32k positions crowds the actor out of the GPU).
max_len=$((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH))
device_overrides=(actor_rollout_ref.rollout.max_model_len=$max_len "${CPU_GRPO_OVERRIDES[@]}")
if [[ "$DEVICE" == cpu ]]; then
  # vLLM wants max_num_batched_tokens >= max_num_seqs (256).
  device_overrides+=(actor_rollout_ref.rollout.max_num_batched_tokens=$((max_len > 256 ? max_len : 256)))
fi
judge_kwargs=(+reward.custom_reward_function.reward_kwargs.judge_url="$JUDGE_URL")
[[ -n "$JUDGE_TOKEN_FILE" ]] && judge_kwargs+=(+reward.custom_reward_function.reward_kwargs.judge_token_file="$JUDGE_TOKEN_FILE")
[[ -n "$GRADER" ]] && judge_kwargs+=(+reward.custom_reward_function.reward_kwargs.grader="$GRADER")
# LOGGER plus verl's file logger, e.g. ['console','file']. The logger runs in a Ray worker, which
# gets its path through Ray's runtime_env (an exported variable misses workers on a Ray cluster).
logger="${LOGGER%]},'file']"
template_overrides=()
if [[ -n "$CHAT_TEMPLATE" ]]; then
  [[ -f "$CHAT_TEMPLATE" ]] || usage_error "CHAT_TEMPLATE=$CHAT_TEMPLATE: no such file (a Jinja chat template)"
  template="$(cat "$CHAT_TEMPLATE")"
  template="${template//\\/\\\\}"   # a quoted Hydra value: backslashes and quotes escaped
  template_overrides=(actor_rollout_ref.model.custom_chat_template="'${template//\'/\\\'}'")
fi

if [[ "$DRY_RUN" != 1 ]]; then
  for f in "$GRPO_TRAIN_FILES" "$GRPO_VAL_FILES"; do
    [[ -f "$f" ]] || { echo "missing $f: build the passage's data first (scripts/gen_data/)" >&2; exit 1; }
  done
  [[ -e "$START_MODEL/config.json" ]] || { echo "missing model $START_MODEL: run scripts/train/sft.sh first" >&2; exit 1; }
fi
resume_mode="$(resume_mode_for "$GRPO_DIR")"
[[ "$resume_mode" == auto ]] && prune_stale_checkpoints "$GRPO_DIR"
# verl saves its last checkpoint only on reaching total_training_steps: with a step count, let
# the epochs repeat until it is reached.
epochs="$GRPO_EPOCHS"
[[ "$GRPO_STEPS" != null ]] && epochs=$((GRPO_STEPS))

# KL_LOSS_COEF=0: no KL loss, and so no reference model to load and run.
use_kl_loss=True
[[ "$KL_LOSS_COEF" =~ ^0*\.?0*$ ]] && use_kl_loss=False

# compose_overrides: the overrides of this run, from the batch sizes currently set.
compose_overrides() {
  overrides=(
    algorithm.adv_estimator=grpo
    algorithm.use_kl_in_reward=False
    data.train_files="$GRPO_TRAIN_FILES"
    data.val_files="$GRPO_VAL_FILES"
    data.prompt_key=prompt
    data.train_batch_size="$batch"
    data.max_prompt_length="$MAX_PROMPT_LENGTH"
    data.max_response_length="$MAX_RESPONSE_LENGTH"
    data.filter_overlong_prompts=True
    data.truncation=error
    actor_rollout_ref.model.path="$START_MODEL"
    "${template_overrides[@]}"
    actor_rollout_ref.actor.optim.lr="$GRPO_LR"
    actor_rollout_ref.actor.ppo_mini_batch_size="$mini"
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu="$micro"
    actor_rollout_ref.actor.use_kl_loss="$use_kl_loss"
    actor_rollout_ref.actor.kl_loss_coef="$KL_LOSS_COEF"
    actor_rollout_ref.actor.kl_loss_type=low_var_kl
    actor_rollout_ref.actor.entropy_coeff="$ENTROPY_COEFF"
    actor_rollout_ref.actor.checkpoint.save_contents="$SAVE_CONTENTS"
    actor_rollout_ref.rollout.name=vllm
    actor_rollout_ref.rollout.n="$ROLLOUT_N"
    actor_rollout_ref.rollout.temperature="$ROLLOUT_TEMPERATURE"
    actor_rollout_ref.rollout.tensor_model_parallel_size="$ROLLOUT_TP"
    actor_rollout_ref.rollout.gpu_memory_utilization="$ROLLOUT_GPU_MEMORY_UTILIZATION"
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu="$micro"
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu="$micro"
    reward.custom_reward_function.path="$ROOT/reward_function.py"
    reward.custom_reward_function.name=compute_score
    "${judge_kwargs[@]}"
    trainer.project_name="$PROJECT_NAME" trainer.experiment_name="$EXPERIMENT_NAME" trainer.logger="$logger"
    +ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH="$GRPO_DIR/metrics.jsonl"
    trainer.total_epochs="$epochs" trainer.total_training_steps="$GRPO_STEPS"
    trainer.test_freq="$GRPO_TEST_FREQ" trainer.val_before_train="$GRPO_VAL_BEFORE_TRAIN"
    # checkpoints: verl also saves at the last step; it resumes (auto) only with RESUME=1
    trainer.default_local_dir="$GRPO_DIR" trainer.save_freq="$GRPO_SAVE_FREQ"
    trainer.max_actor_ckpt_to_keep="$GRPO_CKPT_TO_KEEP" trainer.resume_mode="$resume_mode"
    trainer.nnodes="$NNODES" trainer.n_gpus_per_node="$N_GPUS_PER_NODE"
    "${ATTN_ACTOR[@]}" "${device_overrides[@]}" "$@"
  )
}

batch="$GRPO_BATCH_SIZE" mini="$GRPO_MINI_BATCH_SIZE" micro="$GRPO_MICRO_BATCH_SIZE"
if [[ -f "$GRPO_TRAIN_FILES" && -f "$GRPO_VAL_FILES" && -e "$START_MODEL/config.json" ]]; then
  compose_overrides "$@"
  fit="$("$PYTHON" "$ROOT/scripts/preflight.py" grpo --stage "GRPO of passage $passage_id" --batch "$batch" \
    --mini "$mini" --micro "$micro" --rollout_n "$ROLLOUT_N" --ranks $((NNODES * N_GPUS_PER_NODE)) \
    -- "${overrides[@]}")" || exit 1
  read -r batch mini micro <<< "${fit%%$'\n'*}"
  [[ "$fit" == *$'\n'* ]] && run_log "$GRPO_DIR" "${fit#*$'\n'}"
else
  echo "DRY_RUN: data or start model not there yet: batch sizes not fitted" >&2
fi
compose_overrides "$@"
if [[ "$DEVICE" == gpu ]]; then
  "$PYTHON" "$ROOT/scripts/preflight.py" gpu --stage "GRPO of passage $passage_id" --model "$MODEL" \
    ${GPU_MEMORY_MIB:+--gpu_memory_mib "$GPU_MEMORY_MIB"} -- "${overrides[@]}" >&2 || exit 1
fi
check_ray_nodes "GRPO of passage $passage_id" "$GRPO_DIR" "$(dirname "$START_MODEL")" "$(dirname "$GRPO_TRAIN_FILES")"
# verl's file logger truncates its file (a RESUME=1 run would lose the earlier steps; an empty one,
# from a run stopped before its first step, is just overwritten), and does
# not make its directory.
if [[ -s "$GRPO_DIR/metrics.jsonl" ]]; then
  run_cmd mv "$GRPO_DIR/metrics.jsonl" "$GRPO_DIR/metrics.$(date +%s).jsonl"
fi
[[ "$DRY_RUN" == 1 ]] || mkdir -p "$GRPO_DIR"
run_verl "grpo passage $passage_id" verl.trainer.main_ppo "$PYTHON" -- "${overrides[@]}"
record_final "$GRPO_DIR" actor/huggingface
prune_checkpoints "$GRPO_DIR"
