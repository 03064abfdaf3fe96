#!/usr/bin/env bash
# Sequential (continual-learning) SFT: the passages in order, each two-stage SFT (sft.sh)
# starting from the previous passage's final stage-2 model; the first starts from BASE_MODEL.
# Checkpoints: $OUT_DIR/passage{N}/stage{1,2}/final (default OUT_DIR=checkpoints/sft_iter).
#
#   PASSAGES=0-4 bash scripts/train/sft_iter.sh
#   DRY_RUN=1 PASSAGES=0,1 bash scripts/train/sft_iter.sh
# Every sft.sh setting passes through the environment; trailing args are Hydra overrides.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PASSAGES=${PASSAGES:-0-4}
BASE_MODEL=${BASE_MODEL:-Qwen/Qwen2.5-7B-Instruct}
OUT_DIR=${OUT_DIR:-$ROOT/checkpoints/sft_iter}

[[ "${1:-}" == -h || "${1:-}" == --help ]] && { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
ids="$(expand_passages "$PASSAGES")"
model="$BASE_MODEL"
for id in $ids; do
  echo "=== sequential SFT: passage $id from $model ===" >&2
  passage_id="$id" BASE_MODEL="$model" CKPT_DIR="$OUT_DIR/passage$id" STAGES="1 2" \
    bash "$ROOT/scripts/train/sft.sh" "$@"
  model="$OUT_DIR/passage$id/stage2/final"
done
