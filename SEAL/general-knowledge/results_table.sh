#!/usr/bin/env bash
# The SQuAD table: SEAL's published rows and the paper's PaST number beside our run JSONs
# (every SQUAD_RESULTS/*.json), as markdown (printed and written to SQUAD_RESULTS/table.md) and CSV.
#
#   bash SEAL/general-knowledge/results_table.sh
#   bash SEAL/general-knowledge/results_table.sh --no_published     # args go to results_table.py
# Settings (environment): SQUAD_RESULTS (eval_results/squad; scripts/common.sh, squad_settings).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/common.sh"
squad_settings
run_cmd "$PYTHON" "$ROOT/SEAL/general-knowledge/results_table.py" "$SQUAD_RESULTS" \
  --output "$SQUAD_RESULTS/table.md" --csv "$SQUAD_RESULTS/table.csv" "$@"
