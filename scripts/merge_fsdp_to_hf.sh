#!/usr/bin/env bash
# Turn a verl FSDP checkpoint saved without HF weights into a loadable HF model dir, with verl's
# own merger, then check that transformers loads the result.
#
#   bash scripts/merge_fsdp_to_hf.sh CHECKPOINT_DIR TARGET_DIR
#     CHECKPOINT_DIR  a dir holding model_world_size_*_rank_*.pt and huggingface/ (config,
#                     tokenizer): checkpoints/passage0/grpo/global_step_40/actor for GRPO,
#                     checkpoints/passage0/stage2/global_step_12 for SFT
#     TARGET_DIR      new HF model dir (must not exist; written under a temporary name first)
#   DRY_RUN=1 bash scripts/merge_fsdp_to_hf.sh ...   # print the commands only
# Runs on CPU or GPU alike.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

(($# == 2)) || usage_error "needs CHECKPOINT_DIR and TARGET_DIR"
checkpoint_dir="${1%/}"
target_dir="${2%/}"

if ! compgen -G "$checkpoint_dir/model_world_size_*_rank_*.pt" >/dev/null; then
  echo "$checkpoint_dir holds no FSDP model shards (model_world_size_*_rank_*.pt). For GRPO pass" \
    "global_step_N/actor, for SFT global_step_N." >&2
  exit 1
fi
[[ -e "$checkpoint_dir/huggingface/config.json" ]] || {
  echo "$checkpoint_dir/huggingface/config.json is missing: verl saves it with every checkpoint" >&2; exit 1; }
[[ -e "$target_dir" ]] && { echo "$target_dir exists; choose a new TARGET_DIR or remove it" >&2; exit 1; }

partial="$target_dir.partial"
rm -rf "$partial"
run_cmd "$PYTHON" -m verl.model_merger merge --backend fsdp --local_dir "$checkpoint_dir" --target_dir "$partial"
run_cmd "$PYTHON" -c "import sys; from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained(sys.argv[1])" "$partial"
run_cmd mv -T "$partial" "$target_dir"
echo "merged HF model: $target_dir" >&2
