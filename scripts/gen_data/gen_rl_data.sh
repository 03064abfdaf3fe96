#!/usr/bin/env bash
# GRPO prompts for RL source passages: QA pairs proposed from each chunk, in verl's RLHFDataset
# schema (the question in extra_info for the judge reward).
#
#   bash scripts/gen_data/gen_rl_data.sh <CUDA_VISIBLE_DEVICES> <passages>    e.g.  0 5-9
#
# Writes data/passage{N}/grpo.parquet (+ manifest_grpo.json); a rerun skips finished passages.
# Settings from the environment, shared with gen_sft_data.sh (see its --help; defaults in
# scripts/common.sh, gen_data_settings): LOOGLE, DATA_ROOT, GENERATOR, TOKENIZER, GEN_BACKEND,
# GEN_BASE_URL, GEN_TP, CHUNK_TOKENS, OVERLAP_TOKENS, MAX_CHUNKS, QUESTIONS_PER_CHUNK, PROPOSER,
# QA_MAX_NEW_TOKENS, GEN_TEMPERATURE, GEN_SEED. Extra arguments go to prepare_data.generate_qa;
# DRY_RUN=1 prints the command.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
gen_data_settings "$@"

run_cmd "$PYTHON" -m prepare_data.generate_qa "${gen_args[@]}" --passages "$passages" --format grpo "${qa_args[@]}" "${extra_args[@]}"
