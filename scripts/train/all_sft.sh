#!/usr/bin/env bash
# Two-stage SFT (scripts/train/sft.sh) for every passage of a range, one after the other; each
# passage starts from the base model (MODEL).
#
#   PASSAGES=0-4 bash scripts/train/all_sft.sh
#   PASSAGES=0,3,7 N_GPUS_PER_NODE=8 bash scripts/train/all_sft.sh optim.weight_decay=0.05
#   DRY_RUN=1 PASSAGES=0-1 bash scripts/train/all_sft.sh
# Every sft.sh setting (MODEL, STAGES, SFT_LR, ...) passes through the environment; trailing
# args are Hydra overrides for every run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

PASSAGES=${PASSAGES:-0-4}

ids="$(expand_passages "$PASSAGES")"
for id in $ids; do
  echo "=== SFT passage $id ===" >&2
  passage_id="$id" bash "$ROOT/scripts/train/sft.sh" "$@"
done
