#!/usr/bin/env bash
# GRPO prompts for RL source passages: QA pairs the generator proposes from each chunk, in
# verl's RLHFDataset schema (the question in extra_info for the judge reward).
#
#   bash scripts/gen_data/gen_rl_data.sh <CUDA_VISIBLE_DEVICES> <passages>    e.g.  0 5-9
#
# Writes data/passage{N}/grpo.parquet (+ manifest_grpo.json); a rerun skips finished passages.
# Settings below can be overridden from the environment; extra arguments go to generate_qa.
set -euo pipefail

INPUT=${INPUT:-data/loogle/shortdep_qa.jsonl}   # LooGLE jsonl (input, title, qa_pairs)
DATA_DIR=${DATA_DIR:-data}
MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}        # the generator (QA pairs)
TOKENIZER=${TOKENIZER:-}                        # chunking tokenizer; empty = MODEL's
BACKEND=${BACKEND:-vllm}                        # vllm | hf | openai
BASE_URL=${BASE_URL:-}                          # openai backend: OpenAI-compatible URL
TP=${TP:-1}                                     # vllm: tensor parallel size
CHUNK_TOKENS=${CHUNK_TOKENS:-512}
OVERLAP_TOKENS=${OVERLAP_TOKENS:-64}
MAX_CHUNKS=${MAX_CHUNKS:-0}                     # 0 = every chunk of the passage
QA_MAX_NEW_TOKENS=${QA_MAX_NEW_TOKENS:-1024}
QUESTIONS_PER_CHUNK=${QUESTIONS_PER_CHUNK:-5}
PROPOSER=${PROPOSER:-json}                      # json | two_step
TEMPERATURE=${TEMPERATURE:-0.0}
SEED=${SEED:-0}

usage() {
  echo "usage: $0 <CUDA_VISIBLE_DEVICES> <passages: N, N-M or a comma list such as 0,2,5-7> [extra generate_qa args]" >&2
  exit 2
}
[[ $# -ge 2 ]] || usage
[[ $2 =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] || usage
export CUDA_VISIBLE_DEVICES=$1
PASSAGES=$2
shift 2

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY=${PYTHON:-${PAST_VENV:-$ROOT/.venv}/bin/python}
[[ -x $PY ]] || PY=python
run() { echo "+ $*"; [[ ${DRY_RUN:-0} == 1 ]] || "$@"; }

args=(--input "$INPUT" --passages "$PASSAGES" --output_dir "$DATA_DIR" --model "$MODEL" --backend "$BACKEND"
      --chunk_tokens "$CHUNK_TOKENS" --overlap_tokens "$OVERLAP_TOKENS" --max_chunks "$MAX_CHUNKS"
      --temperature "$TEMPERATURE" --seed "$SEED" --tensor_parallel_size "$TP"
      --format grpo --proposer "$PROPOSER" --questions_per_chunk "$QUESTIONS_PER_CHUNK" --max_new_tokens "$QA_MAX_NEW_TOKENS")
if [[ -n $TOKENIZER ]]; then args+=(--tokenizer "$TOKENIZER"); fi
if [[ -n $BASE_URL ]]; then args+=(--base_url "$BASE_URL"); fi

run "$PY" -m prepare_data.generate_qa "${args[@]}" "$@"
