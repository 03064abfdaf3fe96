#!/usr/bin/env bash
# The README's first command: PaST's main job on a CPU with embedded defaults.
# Sets up the environment and builds the tiny local model; the full per-passage pipeline
# (scripts/run_train_pipeline.sh) is added to this script as its stages land.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
t0=$SECONDS
stage() { echo; echo "== [$((SECONDS - t0)) s] $*"; }

stage "1/2 environment (scripts/setup.sh)"
bash scripts/setup.sh
PY="${PAST_VENV:-$ROOT/.venv}/bin/python"

TINY_MODEL="${TINY_MODEL:-checkpoints/tiny-qwen2}"
stage "2/2 tiny Qwen2-style model -> $TINY_MODEL"
if [[ -f "$TINY_MODEL/config.json" ]]; then
  echo "already built"
else
  "$PY" scripts/make_tiny_model.py "$TINY_MODEL"
fi

stage "done"
echo "environment: ${PAST_VENV:-$ROOT/.venv}   tiny model: $TINY_MODEL"
