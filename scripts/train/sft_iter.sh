#!/usr/bin/env bash
# Sequential (continual-learning) SFT: the passages in order, each two-stage SFT (sft.sh)
# starting from the previous passage's final stage-2 model; the first starts from MODEL.
# Checkpoints: $SFT_ITER_DIR/passage{N}/stage{1,2}/final (default checkpoints/sft_iter).
#
#   PASSAGES=0-4 bash scripts/train/sft_iter.sh
#   DRY_RUN=1 PASSAGES=0,1 bash scripts/train/sft_iter.sh
# Every sft.sh setting passes through the environment; trailing args are Hydra overrides.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

PASSAGES=${PASSAGES:-0-4}                  # in this order
MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}
SFT_ITER_DIR=${SFT_ITER_DIR:-${CKPT_ROOT:-$ROOT/checkpoints}/sft_iter}

ids="$(expand_passages "$PASSAGES")"
model="$MODEL"
for id in $ids; do
  echo "=== sequential SFT: passage $id from $model ===" >&2
  passage_id="$id" MODEL="$model" CKPT_DIR="$SFT_ITER_DIR/passage$id" STAGES="1 2" \
    bash "$ROOT/scripts/train/sft.sh" "$@"
  model="$SFT_ITER_DIR/passage$id/stage2/final"
done
