#!/usr/bin/env bash
# Stage-1 (summary / recall / continue) and stage-2 (generated QA) SFT data for LooGLE passages.
#
#   bash scripts/gen_data/gen_sft_data.sh <CUDA_VISIBLE_DEVICES> <passages>    e.g.  0,1 0-4
#
# Writes data/passage{N}/stage1_sft.parquet and stage2_sft.parquet (+ manifests); a rerun skips
# finished passages. Settings below can be overridden from the environment
# (MODEL=... BACKEND=hf CHUNK_TOKENS=128 bash ...); extra arguments go to both entry points.
set -euo pipefail

INPUT=${INPUT:-data/loogle/shortdep_qa.jsonl}   # LooGLE jsonl (input, title, qa_pairs)
DATA_DIR=${DATA_DIR:-data}
MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}        # the generator (summaries, QA pairs)
TOKENIZER=${TOKENIZER:-}                        # chunking tokenizer; empty = MODEL's
BACKEND=${BACKEND:-vllm}                        # vllm | hf | openai
BASE_URL=${BASE_URL:-}                          # openai backend: OpenAI-compatible URL
TP=${TP:-1}                                     # vllm: tensor parallel size
CHUNK_TOKENS=${CHUNK_TOKENS:-512}
OVERLAP_TOKENS=${OVERLAP_TOKENS:-64}
MAX_CHUNKS=${MAX_CHUNKS:-0}                     # 0 = every chunk of the passage
SUMMARY_MAX_NEW_TOKENS=${SUMMARY_MAX_NEW_TOKENS:-512}
QA_MAX_NEW_TOKENS=${QA_MAX_NEW_TOKENS:-1024}
QUESTIONS_PER_CHUNK=${QUESTIONS_PER_CHUNK:-5}
PROPOSER=${PROPOSER:-json}                      # json | two_step
TEMPERATURE=${TEMPERATURE:-0.0}
SEED=${SEED:-0}

usage() {
  echo "usage: $0 <CUDA_VISIBLE_DEVICES> <passages: N, N-M or a comma list such as 0,2,5-7> [extra entry-point args]" >&2
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

common=(--input "$INPUT" --passages "$PASSAGES" --output_dir "$DATA_DIR" --model "$MODEL" --backend "$BACKEND"
        --chunk_tokens "$CHUNK_TOKENS" --overlap_tokens "$OVERLAP_TOKENS" --max_chunks "$MAX_CHUNKS"
        --temperature "$TEMPERATURE" --seed "$SEED" --tensor_parallel_size "$TP")
if [[ -n $TOKENIZER ]]; then common+=(--tokenizer "$TOKENIZER"); fi
if [[ -n $BASE_URL ]]; then common+=(--base_url "$BASE_URL"); fi

run "$PY" -m prepare_data.generate_mixed_data "${common[@]}" --max_new_tokens "$SUMMARY_MAX_NEW_TOKENS" "$@"
run "$PY" -m prepare_data.generate_qa "${common[@]}" --format sft --proposer "$PROPOSER" \
  --questions_per_chunk "$QUESTIONS_PER_CHUNK" --max_new_tokens "$QA_MAX_NEW_TOKENS" "$@"
