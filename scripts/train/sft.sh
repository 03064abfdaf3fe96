#!/usr/bin/env bash
# Knowledge SFT of one LooGLE passage with verl's sft_trainer, in two stages:
#   stage 1: base model      -> data/passage{N}/stage1_sft.parquet (summary / recall / continue)
#   stage 2: stage-1 result  -> data/passage{N}/stage2_sft.parquet (generated QA)
# Each stage's final HF model is recorded as checkpoints/passage{N}/stage{1,2}/final, a symlink
# to global_step_<last>/huggingface (HF weights saved via hf_model in checkpoint.save_contents).
#
#   bash scripts/train/sft.sh                                  # passage 0, both stages
#   passage_id=3 STAGES=2 bash scripts/train/sft.sh            # stage 2 only (needs stage1/final)
#   N_GPUS_PER_NODE=8 bash scripts/train/sft.sh optim.lr=5e-6  # trailing args: Hydra overrides, both stages
#   DRY_RUN=1 bash scripts/train/sft.sh                        # print commands + composed configs
# Multi-node (torchrun rendezvous): run on every node with the same MASTER_ADDR/MASTER_PORT:
#   NNODES=2 NODE_RANK=<0|1> MASTER_ADDR=<node0 host> N_GPUS_PER_NODE=8 bash scripts/train/sft.sh
# A run dir that already holds checkpoints is refused; RESUME=1 resumes it instead.
# Every setting below can be overridden from the environment. No GPU (or PAST_DEVICE=cpu): runs
# on the CPU through cpu_compat (see scripts/train/common.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

passage_id=${passage_id:-0}
BASE_MODEL=${BASE_MODEL:-Qwen/Qwen2.5-7B-Instruct}
STAGES=${STAGES:-"1 2"}
DATA_ROOT=${DATA_ROOT:-$ROOT/data}
CKPT_ROOT=${CKPT_ROOT:-$ROOT/checkpoints}
DATA_DIR=${DATA_DIR:-$DATA_ROOT/passage$passage_id}
CKPT_DIR=${CKPT_DIR:-$CKPT_ROOT/passage$passage_id}
STAGE1_EPOCHS=${STAGE1_EPOCHS:-3}
STAGE2_EPOCHS=${STAGE2_EPOCHS:-3}
TOTAL_STEPS=${TOTAL_STEPS:-null}           # exactly this many steps per stage (null: the epochs decide)
LR=${LR:-1e-5}
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-32}   # global, across all GPUs
MICRO_BATCH_SIZE=${MICRO_BATCH_SIZE:-2}    # per GPU
MAX_LENGTH=${MAX_LENGTH:-4096}
VAL_FILES=${VAL_FILES:-null}               # default: no validation set
PROJECT_NAME=${PROJECT_NAME:-past-sft}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ "${1:-}" == -h || "${1:-}" == --help ]] && usage
[[ "$passage_id" =~ ^[0-9]+$ ]] || { echo "passage_id must be a number, got '$passage_id'" >&2; usage; }
for stage in $STAGES; do
  [[ "$stage" == 1 || "$stage" == 2 ]] || { echo "STAGES must list 1 and/or 2, got '$STAGES'" >&2; usage; }
done

if [[ "$DEVICE" == cpu ]]; then
  N_GPUS_PER_NODE=1   # one training process on the CPU
fi
if [[ "$NNODES" -gt 1 ]]; then
  LAUNCHER=("$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --nproc_per_node="$N_GPUS_PER_NODE"
    --node_rank="$NODE_RANK" --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT"
    --rdzv_id="past-sft-passage$passage_id")
else
  LAUNCHER=("$PYTHON" -m torch.distributed.run --standalone --nnodes=1 --nproc_per_node="$N_GPUS_PER_NODE")
fi

for stage in $STAGES; do
  data_file="$DATA_DIR/stage${stage}_sft.parquet"
  run_dir="$CKPT_DIR/stage$stage"
  if [[ "$stage" == 1 ]]; then
    model="$BASE_MODEL"; epochs="$STAGE1_EPOCHS"
  else
    model="$CKPT_DIR/stage1/final"; epochs="$STAGE2_EPOCHS"
  fi
  if [[ "$DRY_RUN" != 1 ]]; then
    [[ -f "$data_file" ]] || { echo "missing $data_file: build it first (scripts/gen_data/)" >&2; exit 1; }
    if [[ "$stage" == 2 && ! -e "$model/config.json" ]]; then
      echo "missing $model: run stage 1 first (STAGES=1)" >&2
      exit 1
    fi
  fi
  resume_mode="$(resume_mode_for "$run_dir")"
  # verl saves its last checkpoint only on reaching total_training_steps: with a step count,
  # let the epochs repeat until it is reached.
  [[ "$TOTAL_STEPS" != null ]] && epochs=$((TOTAL_STEPS))

  run_verl "sft passage $passage_id stage $stage" verl.trainer.sft_trainer "${LAUNCHER[@]}" -- \
    data.train_files="$data_file" \
    data.val_files="$VAL_FILES" \
    data.messages_key=messages \
    data.train_batch_size="$TRAIN_BATCH_SIZE" \
    data.micro_batch_size_per_gpu="$MICRO_BATCH_SIZE" \
    data.max_length="$MAX_LENGTH" \
    data.truncation=right \
    model.path="$model" \
    model.lora_rank=0 \
    optim.lr="$LR" \
    'checkpoint.save_contents=[model,optimizer,extra,hf_model]' \
    trainer.default_local_dir="$run_dir" \
    trainer.project_name="$PROJECT_NAME" \
    trainer.experiment_name="passage${passage_id}_stage$stage" \
    trainer.logger="$LOGGER" \
    trainer.total_epochs="$epochs" \
    trainer.total_training_steps="$TOTAL_STEPS" \
    trainer.save_freq=-1 \
    trainer.resume_mode="$resume_mode" \
    trainer.nnodes="$NNODES" \
    trainer.n_gpus_per_node="$N_GPUS_PER_NODE" \
    "${ATTN_SFT[@]}" "${CPU_SFT_OVERRIDES[@]}" "$@"
  if [[ "$NODE_RANK" == 0 ]]; then
    record_final "$run_dir" huggingface
  fi
done
