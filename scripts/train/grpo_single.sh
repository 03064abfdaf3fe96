#!/usr/bin/env bash
# GRPO with a one-GPU schedule: small batches, more epochs, one rollout GPU shared with the
# actor. Same reward, KL loss and outputs as grpo.sh (whose settings all pass through), but
# the result goes to checkpoints/passage{N}/grpo_single (final HF model: .../grpo_single/final).
#
#   bash scripts/train/grpo_single.sh
#   passage_id=2 DRY_RUN=1 bash scripts/train/grpo_single.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

passage_id=${passage_id:-0}
export passage_id
export N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-1}
export NNODES=${NNODES:-1}
export TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-8}
export PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-8}
export MICRO_BATCH_SIZE=${MICRO_BATCH_SIZE:-2}
export ROLLOUT_N=${ROLLOUT_N:-8}
export TOTAL_EPOCHS=${TOTAL_EPOCHS:-15}
export SAVE_FREQ=${SAVE_FREQ:-50}
export GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.4}
export OUTPUT_DIR=${OUTPUT_DIR:-$(cd "$here/../.." && pwd)/checkpoints/passage$passage_id/grpo_single}
export EXPERIMENT_NAME=${EXPERIMENT_NAME:-passage${passage_id}_grpo_single}

[[ "${1:-}" == -h || "${1:-}" == --help ]] && { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
exec bash "$here/grpo.sh" "$@"
