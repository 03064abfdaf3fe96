#!/usr/bin/env bash
# GRPO with a one-GPU schedule: small batches, more epochs, one rollout GPU shared with the
# actor. Same reward, KL loss and outputs as grpo.sh (whose settings all pass through), but
# the result goes to checkpoints/passage{N}/grpo_single (final HF model: .../grpo_single/final).
#
#   bash scripts/train/grpo_single.sh
#   passage_id=2 DRY_RUN=1 bash scripts/train/grpo_single.sh
set -euo pipefail
export N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-1} NNODES=${NNODES:-1}   # before common.sh's default (all GPUs)
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

passage_id=${passage_id:-0}
export passage_id
export GRPO_BATCH_SIZE=${GRPO_BATCH_SIZE:-8} GRPO_MINI_BATCH_SIZE=${GRPO_MINI_BATCH_SIZE:-8}
export GRPO_MICRO_BATCH_SIZE=${GRPO_MICRO_BATCH_SIZE:-2} ROLLOUT_N=${ROLLOUT_N:-8}
export GRPO_EPOCHS=${GRPO_EPOCHS:-15} GRPO_SAVE_FREQ=${GRPO_SAVE_FREQ:-50}
export ROLLOUT_GPU_MEMORY_UTILIZATION=${ROLLOUT_GPU_MEMORY_UTILIZATION:-0.4}
export GRPO_DIR=${GRPO_DIR:-${CKPT_ROOT:-$ROOT/checkpoints}/passage$passage_id/grpo_single}
export EXPERIMENT_NAME=${EXPERIMENT_NAME:-passage${passage_id}_grpo_single}
exec bash "$ROOT/scripts/train/grpo.sh" "$@"
