#!/usr/bin/env bash
# Knowledge SFT of one LooGLE passage with verl's sft_trainer, in two stages:
#   stage 1: MODEL (the base model) -> data/passage{N}/stage1_sft.parquet (summary / recall / continue)
#   stage 2: stage-1 result         -> data/passage{N}/stage2_sft.parquet (generated QA)
# Each stage's final HF model is recorded as checkpoints/passage{N}/stage{1,2}/final, a symlink
# to global_step_<last>/huggingface; then the stage's FSDP shards and optimizer state are deleted
# (KEEP_RESUMABLE=1 keeps them). Decisions beyond the settings go to <run dir>/run.log.
#
#   bash scripts/train/sft.sh                                       # passage 0, both stages
#   passage_id=3 STAGES=2 bash scripts/train/sft.sh                 # stage 2 only (needs stage1/final)
#   N_GPUS_PER_NODE=8 bash scripts/train/sft.sh optim.weight_decay=0.05   # trailing args: Hydra overrides
#   DRY_RUN=1 bash scripts/train/sft.sh                             # print commands + composed configs
# Several nodes (torchrun rendezvous; CKPT_DIR on a filesystem every node sees): on every node
#   NNODES=2 NODE_RANK=<0|1> MASTER_ADDR=<node0 address> bash scripts/train/sft.sh
# Node 0 records each stage's final model; the other nodes wait for stage 1's (STAGE_WAIT_S).
#
# Batch sizes fit the data: verl drops the last partial batch of every epoch, so a set with fewer
# rows than SFT_BATCH_SIZE would train zero steps. The largest batch the rows allow is used
# instead (at least one row per data-parallel rank; the micro batch shrinks with it), said in one
# line and in run.log; fewer rows than ranks stops before verl starts. A run dir that already
# holds checkpoints is refused; RESUME=1 resumes it. Settings below come from the environment.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

passage_id=${passage_id:-0}
MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}     # stage 1 starts here (a local HF dir or a hub id)
STAGES=${STAGES:-"1 2"}
DATA_ROOT=${DATA_ROOT:-$ROOT/data}
CKPT_ROOT=${CKPT_ROOT:-$ROOT/checkpoints}
DATA_DIR=${DATA_DIR:-$DATA_ROOT/passage$passage_id}
CKPT_DIR=${CKPT_DIR:-$CKPT_ROOT/passage$passage_id}
SFT_EPOCHS=${SFT_EPOCHS:-3}                  # per stage
SFT_STEPS=${SFT_STEPS:-null}                 # exactly this many steps per stage (null: the epochs decide)
SFT_LR=${SFT_LR:-1e-5}
SFT_BATCH_SIZE=${SFT_BATCH_SIZE:-32}         # global, across all GPUs
SFT_MICRO_BATCH_SIZE=${SFT_MICRO_BATCH_SIZE:-2}   # per GPU (verl packs by tokens: data.use_dynamic_bsz)
SFT_MAX_LENGTH=${SFT_MAX_LENGTH:-4096}
SFT_VAL_FILES=${SFT_VAL_FILES:-null}         # default: no validation set
PROJECT_NAME=${PROJECT_NAME:-past-sft}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
STAGE_WAIT_S=${STAGE_WAIT_S:-3600}           # nodes other than 0: how long to wait for stage 1's final model

check_passage_id
for stage in $STAGES; do
  [[ "$stage" == 1 || "$stage" == 2 ]] || usage_error "STAGES must list 1 and/or 2, got '$STAGES'"
done
if ((NNODES > 1)); then
  LAUNCHER=("$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --nproc_per_node="$N_GPUS_PER_NODE"
    --node_rank="$NODE_RANK" --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT"
    --rdzv_id="past-sft-passage$passage_id")
else
  LAUNCHER=("$PYTHON" -m torch.distributed.run --standalone --nnodes=1 --nproc_per_node="$N_GPUS_PER_NODE")
fi

# wait_for_final MODEL_DIR: on nodes other than 0, stage 2 starts only once node 0 has recorded
# stage 1's final model (on the shared filesystem).
wait_for_final() {
  local model="$1" waited=0
  [[ "$DRY_RUN" == 1 || "$NODE_RANK" == 0 || -e "$model/config.json" ]] && return 0
  echo "node $NODE_RANK: waiting up to ${STAGE_WAIT_S}s for node 0 to record $model" >&2
  until [[ -e "$model/config.json" ]]; do
    if ((waited >= STAGE_WAIT_S)); then
      echo "node $NODE_RANK: $model did not appear within ${STAGE_WAIT_S}s (STAGE_WAIT_S). Node 0 writes it" \
        "after stage 1; CKPT_DIR=$CKPT_DIR must be on a filesystem every node sees. See node 0's log." >&2
      exit 1
    fi
    sleep 5
    waited=$((waited + 5))
  done
}

for stage in $STAGES; do
  data_file="$DATA_DIR/stage${stage}_sft.parquet"
  run_dir="$CKPT_DIR/stage$stage"
  if [[ "$stage" == 1 ]]; then
    model="$MODEL"
  else
    model="$CKPT_DIR/stage1/final"
    wait_for_final "$model"
    [[ "$DRY_RUN" == 1 || -e "$model/config.json" ]] || { echo "missing $model: run stage 1 first (STAGES=1)" >&2; exit 1; }
  fi
  resume_mode="$(resume_mode_for "$run_dir")"
  [[ "$resume_mode" == auto ]] && prune_stale_checkpoints "$run_dir"

  batch="$SFT_BATCH_SIZE" micro="$SFT_MICRO_BATCH_SIZE"
  if [[ -f "$data_file" ]]; then
    fit="$("$PYTHON" "$ROOT/scripts/preflight.py" sft --data "$data_file" --stage "SFT stage $stage of passage $passage_id" \
      --batch "$batch" --micro "$micro" --ranks $((NNODES * N_GPUS_PER_NODE)))" || exit 1
    read -r batch micro <<< "${fit%%$'\n'*}"
    [[ "$fit" == *$'\n'* ]] && run_log "$run_dir" "${fit#*$'\n'}"
  elif [[ "$DRY_RUN" == 1 ]]; then
    echo "DRY_RUN: $data_file does not exist yet: batch sizes not fitted to it" >&2
  else
    echo "missing $data_file: build it first (scripts/gen_data/gen_sft_data.sh)" >&2
    exit 1
  fi
  # verl saves its last checkpoint only on reaching total_training_steps: with a step count,
  # let the epochs repeat until it is reached.
  epochs="$SFT_EPOCHS"
  [[ "$SFT_STEPS" != null ]] && epochs=$((SFT_STEPS))

  run_verl "sft passage $passage_id stage $stage" verl.trainer.sft_trainer "${LAUNCHER[@]}" -- \
    data.train_files="$data_file" \
    data.val_files="$SFT_VAL_FILES" \
    data.messages_key=messages \
    data.train_batch_size="$batch" \
    data.micro_batch_size_per_gpu="$micro" \
    data.max_length="$SFT_MAX_LENGTH" \
    data.truncation=right \
    model.path="$model" \
    model.lora_rank=0 \
    optim.lr="$SFT_LR" \
    checkpoint.save_contents="$SAVE_CONTENTS" \
    trainer.default_local_dir="$run_dir" \
    trainer.project_name="$PROJECT_NAME" \
    trainer.experiment_name="passage${passage_id}_stage$stage" \
    trainer.logger="$LOGGER" \
    trainer.total_epochs="$epochs" \
    trainer.total_training_steps="$SFT_STEPS" \
    trainer.save_freq=-1 \
    trainer.resume_mode="$resume_mode" \
    trainer.nnodes="$NNODES" \
    trainer.n_gpus_per_node="$N_GPUS_PER_NODE" \
    "${ATTN_SFT[@]}" "${CPU_SFT_OVERRIDES[@]}" "$@"
  if [[ "$NODE_RANK" == 0 ]]; then
    record_final "$run_dir" huggingface
    prune_checkpoints "$run_dir"
  fi
done
