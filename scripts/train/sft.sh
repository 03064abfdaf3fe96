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
#   NNODES=2 N_GPUS_PER_NODE=8 NODE_RANK=<0|1> MASTER_ADDR=<node0 address> bash scripts/train/sft.sh
# (MASTER_ADDR and N_GPUS_PER_NODE are required there, the same on every node).
# Node 0 records each stage's final model; the other nodes wait for stage 1's (STAGE_WAIT_S).
#
# Batch sizes fit the data: verl drops the last partial batch of every epoch, so a set with fewer
# rows than SFT_BATCH_SIZE would train zero steps. The largest batch the rows allow is used
# instead (at least one row per data-parallel rank; the micro batch shrinks with it), said in one
# line and in run.log; fewer rows than ranks stops before verl starts. A run dir that already
# holds checkpoints is refused; RESUME=1 resumes it. Settings below come from the environment.
# Other data than chat turns: SFT_DATASET_CLASS names a dataset class verl builds from the parquet
# instead of its MultiTurnSFTDataset (the SQuAD setting's raw text:
# seal_squad.sft_dataset.RawTextSFTDataset). SFT_LORA_RANK > 0 trains a verl LoRA (all linear
# layers, alpha SFT_LORA_ALPHA) instead of the full model; each stage's final model is then the
# merge: verl's merger writes the adapter from the FSDP shards, merge_lora.py adds it to the
# stage's start model (global_step_N/huggingface_merged, in that model's dtype).
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
SFT_STAGE2_EPOCHS=${SFT_STAGE2_EPOCHS:-$SFT_EPOCHS}   # stage 2 (QA) only; default: SFT_EPOCHS
SFT_STAGE2_LR=${SFT_STAGE2_LR:-$SFT_LR}               # stage 2 (QA) only; default: SFT_LR
SFT_BATCH_SIZE=${SFT_BATCH_SIZE:-32}         # global, across all GPUs
SFT_MICRO_BATCH_SIZE=${SFT_MICRO_BATCH_SIZE:-2}   # per GPU (verl packs by tokens: data.use_dynamic_bsz)
SFT_MAX_LENGTH=${SFT_MAX_LENGTH:-4096}
SFT_VAL_FILES=${SFT_VAL_FILES:-null}         # default: no validation set
SFT_DATASET_CLASS=${SFT_DATASET_CLASS:-}     # module.Class of a verl SFT dataset; empty: verl's chat-turn dataset
SFT_LORA_RANK=${SFT_LORA_RANK:-0}            # 0: full fine-tune
SFT_LORA_ALPHA=${SFT_LORA_ALPHA:-$((2 * SFT_LORA_RANK))}
PROJECT_NAME=${PROJECT_NAME:-past-sft}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-passage$passage_id}   # + _stage<N>
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-}                # NNODES > 1: node 0's address, the same on every node
MASTER_PORT=${MASTER_PORT:-29500}
STAGE_WAIT_S=${STAGE_WAIT_S:-3600}           # nodes other than 0: how long to wait for stage 1's final model

check_passage_id
for stage in $STAGES; do
  [[ "$stage" == 1 || "$stage" == 2 ]] || usage_error "STAGES must list 1 and/or 2, got '$STAGES'"
done
[[ "$SFT_LORA_RANK" =~ ^[0-9]+$ ]] || usage_error "SFT_LORA_RANK must be a number (0: full fine-tune), got '$SFT_LORA_RANK'"
dataset_overrides=()
if [[ -n "$SFT_DATASET_CLASS" ]]; then
  [[ "$SFT_DATASET_CLASS" =~ ^[A-Za-z_][A-Za-z0-9_.]*\.[A-Za-z_][A-Za-z0-9_]*$ ]] \
    || usage_error "SFT_DATASET_CLASS must be module.Class (e.g. seal_squad.sft_dataset.RawTextSFTDataset), got '$SFT_DATASET_CLASS'"
  dataset_overrides=(data.custom_cls.path="pkg://${SFT_DATASET_CLASS%.*}" data.custom_cls.name="${SFT_DATASET_CLASS##*.}")
fi
lora_overrides=(model.lora_rank="$SFT_LORA_RANK")
save_contents="$SAVE_CONTENTS" final_subdir=huggingface
if ((SFT_LORA_RANK > 0)); then
  # verl's hf_model export writes the LoRA-wrapped weights under peft's names: merge instead.
  lora_overrides+=(model.lora_alpha="$SFT_LORA_ALPHA" model.target_modules=all-linear)
  save_contents='[model,optimizer,extra]' final_subdir=huggingface_merged
fi

# merge_lora_checkpoint RUN_DIR START_MODEL: the last checkpoint's LoRA added to the stage's start
# model as one HF model. The adapter comes from verl's merger; the base is START_MODEL itself when
# it is a local dir (LoRA leaves it untouched, and the merger writes bfloat16, which would round
# every other weight), else the merger's copy of it.
merge_lora_checkpoint() {
  local step dir base
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "DRY_RUN: $1's last checkpoint -> verl's merger (lora_adapter/) -> merge_lora.py onto $2 -> huggingface_merged"
    return
  fi
  step="$(last_checkpoint "$1")" || return 1
  dir="$1/global_step_$step"
  [[ -e "$dir/huggingface_lora/config.json" ]] || bash "$ROOT/scripts/merge_fsdp_to_hf.sh" "$dir" "$dir/huggingface_lora"
  base="$dir/huggingface_lora"
  [[ -e "$2/config.json" ]] && base="$2"
  [[ -e "$dir/huggingface_merged/config.json" ]] || run_cmd "$PYTHON" "$ROOT/merge_lora.py" --base_model "$base" \
    --lora_adapter "$dir/huggingface_lora/lora_adapter" --output_dir "$dir/huggingface_merged"
}
if ((NNODES > 1)); then
  check_gpus_for_nodes
  [[ -n "$MASTER_ADDR" ]] || usage_error "NNODES=$NNODES: set MASTER_ADDR to node 0's address (the same on every node;" \
    "torchrun's rendezvous runs there)"
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
  epochs="$SFT_EPOCHS" lr="$SFT_LR"
  [[ "$stage" == 2 ]] && epochs="$SFT_STAGE2_EPOCHS" lr="$SFT_STAGE2_LR"
  [[ "$SFT_STEPS" != null ]] && epochs=$((SFT_STEPS))

  run_verl "sft passage $passage_id stage $stage" verl.trainer.sft_trainer "${LAUNCHER[@]}" -- \
    data.train_files="$data_file" \
    data.val_files="$SFT_VAL_FILES" \
    data.messages_key=messages \
    "${dataset_overrides[@]}" \
    data.train_batch_size="$batch" \
    data.micro_batch_size_per_gpu="$micro" \
    data.max_length="$SFT_MAX_LENGTH" \
    data.truncation=right \
    model.path="$model" \
    "${lora_overrides[@]}" \
    optim.lr="$lr" \
    checkpoint.save_contents="$save_contents" \
    trainer.default_local_dir="$run_dir" \
    trainer.project_name="$PROJECT_NAME" \
    trainer.experiment_name="${EXPERIMENT_NAME}_stage$stage" \
    trainer.logger="$LOGGER" \
    trainer.total_epochs="$epochs" \
    trainer.total_training_steps="$SFT_STEPS" \
    trainer.save_freq=-1 \
    trainer.resume_mode="$resume_mode" \
    trainer.nnodes="$NNODES" \
    trainer.n_gpus_per_node="$N_GPUS_PER_NODE" \
    "${ATTN_SFT[@]}" "${CPU_SFT_OVERRIDES[@]}" "$@"
  if [[ "$NODE_RANK" == 0 ]]; then
    if ((SFT_LORA_RANK > 0)); then
      merge_lora_checkpoint "$run_dir" "$model"
      HF_EXPORT_DTYPE=fp32 record_final "$run_dir" "$final_subdir"   # merged already
    else
      record_final "$run_dir" "$final_subdir"
    fi
    prune_checkpoints "$run_dir"
  fi
done
