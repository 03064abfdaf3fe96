#!/usr/bin/env bash
# Implications ("self-edits") for the SQuAD evaluation passages: select the passages once
# (squad_data.py: SEAL's seed-42 shuffle, positions SQUAD_START.. SQUAD_START+SQUAD_N-1), then
# K raw completions per passage from GENERATOR (make_implications.py; resumable).
#
#   bash SEAL/general-knowledge/make_implications.sh                          # Qwen2.5-7B, vLLM, SEAL's 200 passages
#   GENERATOR=checkpoints/tiny-qwen2 SQUAD_INPUT=squad_val.json SQUAD_N=2 GEN_COMPLETIONS=1 GEN_MAX_NEW_TOKENS=64 bash ...   # CPU
#   PROMPT_FILE=my_prompt.txt bash SEAL/general-knowledge/make_implications.sh     # another implications prompt
#   DRY_RUN=1 bash SEAL/general-knowledge/make_implications.sh                # print the commands only
# Settings (environment): the data (scripts/common.sh, squad_settings): SQUAD_INPUT
# (rajpurkar/squad, or a local grouped JSON / raw SQuAD file), SQUAD_SPLIT (validation),
# SQUAD_SEED 42, SQUAD_START 0, SQUAD_N 200, SQUAD_DATA (data/squad), PASSAGES, GENERATOR
# (Qwen/Qwen2.5-7B), IMPLICATIONS (the output); generation: GEN_BACKEND (vllm on a GPU with vLLM, else hf;
# openai with GEN_BASE_URL, e.g. a running vllm serve), GEN_TP 1, GEN_COMPLETIONS 5, GEN_TEMPERATURE 1.0,
# GEN_TOP_P 0.95, GEN_MAX_NEW_TOKENS 8192, GEN_SEED 0, PROMPT (implications: SEAL's prompts, see prompts.py),
# PROMPT_FILE (a text file with the prompt instead, {title} and {context} in it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/common.sh"
squad_settings
squad_generation_settings

if [[ ! -f "$PASSAGES" ]]; then
  run_cmd "$PYTHON" "$ROOT/SEAL/general-knowledge/squad_data.py" --input "$SQUAD_INPUT" --split "$SQUAD_SPLIT" \
    --seed "$SQUAD_SEED" --start "$SQUAD_START" --n "$SQUAD_N" --output "$PASSAGES"
fi
if [[ -f "$IMPLICATIONS" && " $* " != *" --overwrite "* ]]; then
  echo "$IMPLICATIONS exists (pass --overwrite to redo it)" >&2
  exit 0
fi
run_cmd "$PYTHON" "$ROOT/SEAL/general-knowledge/make_implications.py" --input "$PASSAGES" --output "$IMPLICATIONS" \
  "${implications_args[@]}" "$@"
