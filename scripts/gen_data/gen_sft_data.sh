#!/usr/bin/env bash
# Stage-1 (summary / recall / continue) and stage-2 (generated QA) SFT data for LooGLE passages.
#
#   bash scripts/gen_data/gen_sft_data.sh <CUDA_VISIBLE_DEVICES> <passages>    e.g.  0,1 0-4
#   GENERATOR=checkpoints/tiny GEN_BACKEND=hf CHUNK_TOKENS=128 bash scripts/gen_data/gen_sft_data.sh "" 0
#
# Writes data/passage{N}/stage1_sft.parquet and stage2_sft.parquet (+ manifests); a rerun skips
# finished passages. Settings from the environment (shared with gen_rl_data.sh; defaults in
# scripts/common.sh, gen_data_settings): LOOGLE, DATA_ROOT, GENERATOR (Qwen/Qwen2.5-7B-Instruct),
# TOKENIZER, GEN_BACKEND (vllm on a GPU with vLLM installed, else hf; or openai with GEN_BASE_URL), GEN_TP,
# CHUNK_TOKENS 512, OVERLAP_TOKENS 64, MAX_CHUNKS (0 = all), QUESTIONS_PER_CHUNK 5, PROPOSER
# (json | two_step | cloze), QA_MAX_NEW_TOKENS 1024, GEN_TEMPERATURE 0, GEN_SEED 0; and
# SUMMARY_MAX_NEW_TOKENS 512, STAGE1_TASKS (summary,recall,continue). Extra arguments go to both entry points; DRY_RUN=1 prints them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
gen_data_settings "$@"
SUMMARY_MAX_NEW_TOKENS=${SUMMARY_MAX_NEW_TOKENS:-512}
STAGE1_TASKS=${STAGE1_TASKS:-summary,recall,continue}   # stage-1 task types (recall,continue: no model writes any)

run_cmd "$PYTHON" -m prepare_data.generate_mixed_data "${gen_args[@]}" --passages "$passages" \
  --max_new_tokens "$SUMMARY_MAX_NEW_TOKENS" --tasks "$STAGE1_TASKS" "${extra_args[@]}"
run_cmd "$PYTHON" -m prepare_data.generate_qa "${gen_args[@]}" --passages "$passages" --format sft "${qa_args[@]}" "${extra_args[@]}"
