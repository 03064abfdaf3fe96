#!/usr/bin/env bash
# Mix the per-passage shards of one dataset into one shuffled parquet, to train one model on
# several passages at once (e.g. sft.sh with DATA_DIR pointing at the result).
#   data/passage{N}/$NAME.parquet for N in PASSAGES  ->  $OUT_DIR/$NAME.parquet
#
#   PASSAGES=0-4 NAME=stage1_sft bash scripts/train/merge_data.sh   # -> data/merged_0-4/stage1_sft.parquet
#   PASSAGES=0,2 NAME=grpo OUT_DIR=data/src02 bash scripts/train/merge_data.sh
#   DRY_RUN=1 ...                                                   # print the command only
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PASSAGES=${PASSAGES:-0-4}
NAME=${NAME:-stage1_sft}            # stage1_sft | stage2_sft | grpo | eval
DATA_ROOT=${DATA_ROOT:-$ROOT/data}
OUT_DIR=${OUT_DIR:-$DATA_ROOT/merged_${PASSAGES//,/_}}
SEED=${SEED:-0}

[[ "${1:-}" == -h || "${1:-}" == --help ]] && { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
inputs=()
for id in $(expand_passages "$PASSAGES"); do
  f="$DATA_ROOT/passage$id/$NAME.parquet"
  [[ "$DRY_RUN" == 1 || -f "$f" ]] || { echo "missing $f: build passage $id's data first" >&2; exit 1; }
  inputs+=("$f")
done
[[ "$DRY_RUN" == 1 ]] || mkdir -p "$OUT_DIR"
output="$OUT_DIR/$NAME.parquet"
# Concatenate, shuffle with a fixed seed, write under a temporary name, rename when complete.
run_cmd "$PYTHON" -c 'import os, sys, pandas as pd
out, seed, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).sample(frac=1.0, random_state=seed)
df.reset_index(drop=True).to_parquet(out + ".partial")
os.replace(out + ".partial", out)
print(f"{len(df)} rows from {len(files)} passages -> {out}")' "$output" "$SEED" "${inputs[@]}"
