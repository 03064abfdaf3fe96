#!/usr/bin/env bash
# Mix the per-passage shards of one dataset into one shuffled parquet, to train one model on
# several passages at once (e.g. sft.sh with DATA_DIR pointing at the result).
#   data/passage{N}/$NAME.parquet for N in PASSAGES  ->  $MERGED_DIR/$NAME.parquet
#
#   PASSAGES=0-4 NAME=stage1_sft bash scripts/train/merge_data.sh   # -> data/merged_0-4/stage1_sft.parquet
#   PASSAGES=0,2 NAME=grpo MERGED_DIR=data/src02 bash scripts/train/merge_data.sh
#   DRY_RUN=1 ...                                                   # print the command only
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

PASSAGES=${PASSAGES:-0-4}
NAME=${NAME:-stage1_sft}            # stage1_sft | stage2_sft | grpo | eval
DATA_ROOT=${DATA_ROOT:-$ROOT/data}
MERGED_DIR=${MERGED_DIR:-$DATA_ROOT/merged_${PASSAGES//,/_}}
MIX_SEED=${MIX_SEED:-0}

expand_passages "$PASSAGES" >/dev/null || exit 2
[[ "$DRY_RUN" == 1 ]] || mkdir -p "$MERGED_DIR"
# prepare_data.mix_data checks each shard is complete and has the same schema, keeps the passage
# ids, shuffles with a fixed seed, and writes under a temporary name.
run_cmd "$PYTHON" -m prepare_data.mix_data --data_dir "$DATA_ROOT" --passages "$PASSAGES" \
  --file "$NAME.parquet" --output "$MERGED_DIR/$NAME.parquet" --shuffle --seed "$MIX_SEED"
