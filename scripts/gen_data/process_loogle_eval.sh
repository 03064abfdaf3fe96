#!/usr/bin/env bash
# Evaluation sets: each passage's LooGLE test QA as closed-book prompts (verl RLHFDataset schema).
#
#   bash scripts/gen_data/process_loogle_eval.sh [<passages>]      e.g.  0-4   (default: all)
#
# Writes data/passage{N}/eval.parquet (+ manifest_eval.json) under DATA_ROOT (default data/),
# from LOOGLE (default data/loogle/shortdep_qa.jsonl; LOOGLE= (empty) reads LooGLE shortdep_qa
# from the Hugging Face hub). DRY_RUN=1 prints the command.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

LOOGLE=${LOOGLE-$ROOT/data/loogle/shortdep_qa.jsonl}
DATA_ROOT=${DATA_ROOT:-$ROOT/data}

usage() { echo "usage: $0 [<passages: N, N-M or a comma list such as 0,2,5-7>] (bash $0 --help)" >&2; exit 2; }
(($# <= 1)) || usage
(($# == 0)) || expand_passages "$1" >/dev/null 2>&1 || usage

args=(--output_dir "$DATA_ROOT")
[[ -z "$LOOGLE" ]] || args+=(--input "$LOOGLE")
(($# == 0)) || args+=(--passages "$1")
run_cmd "$PYTHON" -m prepare_data.loogle_to_parquet "${args[@]}"
