#!/usr/bin/env bash
# Implications ("self-edits") for the SQuAD evaluation passages: select the passages once
# (squad_data.py: SEAL's seed-42 shuffle, positions SQUAD_START.. SQUAD_START+SQUAD_N-1), then
# K raw completions per passage from GENERATOR (make_implications.py; resumable).
#
#   bash SEAL/general-knowledge/make_implications.sh                          # Qwen2.5-7B, vLLM, SEAL's 200 passages
#   GENERATOR=checkpoints/tiny-qwen2 SQUAD_INPUT=squad_val.json SQUAD_N=2 K=1 GEN_MAX_NEW_TOKENS=64 bash ...   # CPU
#   bash SEAL/general-knowledge/make_implications.sh --prompt_file seal_prompt.txt   # args go to make_implications.py
#   DRY_RUN=1 bash SEAL/general-knowledge/make_implications.sh                # print the commands only
# Settings (environment): the data (scripts/common.sh, squad_settings): SQUAD_INPUT
# (rajpurkar/squad, or a local grouped JSON / raw SQuAD file), SQUAD_SPLIT (validation),
# SQUAD_SEED 42, SQUAD_START 0, SQUAD_N 200, SQUAD_DATA (data/squad), PASSAGES, GENERATOR
# (Qwen/Qwen2.5-7B), IMPLICATIONS (the output); generation: GEN_BACKEND (vllm on a GPU, else hf;
# openai with GEN_BASE_URL, e.g. a running vllm serve), GEN_TP 1, K 5, GEN_TEMPERATURE 1.0,
# GEN_TOP_P 0.95, GEN_MAX_NEW_TOKENS 8192, GEN_SEED 0, PROMPT (implications; see prompts.py).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/common.sh"
squad_settings
GEN_BACKEND=${GEN_BACKEND:-$([[ "$DEVICE" == gpu ]] && echo vllm || echo hf)}
GEN_BASE_URL=${GEN_BASE_URL:-}
GEN_TP=${GEN_TP:-1}
K=${K:-5}
GEN_TEMPERATURE=${GEN_TEMPERATURE:-1.0}
GEN_TOP_P=${GEN_TOP_P:-0.95}
GEN_MAX_NEW_TOKENS=${GEN_MAX_NEW_TOKENS:-8192}
GEN_SEED=${GEN_SEED:-0}
PROMPT=${PROMPT:-implications}

if [[ ! -f "$PASSAGES" ]]; then
  run_cmd "$PYTHON" "$ROOT/SEAL/general-knowledge/squad_data.py" --input "$SQUAD_INPUT" --split "$SQUAD_SPLIT" \
    --seed "$SQUAD_SEED" --start "$SQUAD_START" --n "$SQUAD_N" --output "$PASSAGES"
fi
if [[ -f "$IMPLICATIONS" && " $* " != *" --overwrite "* ]]; then
  echo "$IMPLICATIONS exists (pass --overwrite to redo it)" >&2
  exit 0
fi
gen_args=(--input "$PASSAGES" --output "$IMPLICATIONS" --model "$GENERATOR" --backend "$GEN_BACKEND" --k "$K"
  --temperature "$GEN_TEMPERATURE" --top_p "$GEN_TOP_P" --max_new_tokens "$GEN_MAX_NEW_TOKENS" --seed "$GEN_SEED"
  --prompt "$PROMPT" --tensor_parallel_size "$GEN_TP")
[[ -z "$GEN_BASE_URL" ]] || gen_args+=(--base_url "$GEN_BASE_URL")
run_cmd "$PYTHON" "$ROOT/SEAL/general-knowledge/make_implications.py" "${gen_args[@]}" "$@"
