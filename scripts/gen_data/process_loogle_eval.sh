#!/usr/bin/env bash
# Evaluation sets: each passage's LooGLE test QA as closed-book prompts (verl RLHFDataset schema).
#
#   bash scripts/gen_data/process_loogle_eval.sh [<passages>]      e.g.  0-4   (default: all)
#
# Writes data/passage{N}/eval.parquet (+ manifest_eval.json). INPUT= (empty) reads LooGLE
# shortdep_qa from the Hugging Face hub instead of a local jsonl.
set -euo pipefail

INPUT=${INPUT-data/loogle/shortdep_qa.jsonl}    # LooGLE jsonl; set INPUT= to use the hub
DATA_DIR=${DATA_DIR:-data}

usage() {
  echo "usage: $0 [<passages: N, N-M or a comma list such as 0,2,5-7>]" >&2
  exit 2
}
[[ $# -le 1 ]] || usage
[[ $# -eq 0 || $1 =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] || usage

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY=${PYTHON:-${PAST_VENV:-$ROOT/.venv}/bin/python}
[[ -x $PY ]] || PY=python
run() { echo "+ $*"; [[ ${DRY_RUN:-0} == 1 ]] || "$@"; }

args=(--output_dir "$DATA_DIR")
if [[ -n $INPUT ]]; then args+=(--input "$INPUT"); fi
if [[ $# -eq 1 ]]; then args+=(--passages "$1"); fi
run "$PY" -m prepare_data.loogle_to_parquet "${args[@]}"
