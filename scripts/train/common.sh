# Shared by the training drivers in scripts/train/ (sourced, not run). It decides the device,
# the extra verl overrides a CPU-only machine needs, the logger, and implements DRY_RUN=1.
#
# Environment read here:
#   PAST_DEVICE=cpu|gpu   force the device (default: gpu if `nvidia-smi -L` lists a GPU, else cpu)
#   DRY_RUN=1             print each command; validate verl overrides with Hydra `--cfg job` instead of training
#   WANDB_API_KEY         when set, log to wandb as well as the console
#   PYTHON                interpreter (default: the repo's .venv, else python3)
#   RAY_NUM_CPUS          CPU only: CPUs Ray may schedule (default 10; the 2-core test box needs no more)
#   VLLM_CPU_KVCACHE_SPACE CPU only: GiB of KV cache for vLLM (default 1)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
# verl's Ray workers and vLLM's processes import cpu_compat and reward_function.py from here.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
DRY_RUN="${DRY_RUN:-0}"

if [[ -n "${PAST_DEVICE:-}" ]]; then
  DEVICE="$PAST_DEVICE"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  DEVICE=gpu
else
  DEVICE=cpu
fi
case "$DEVICE" in cpu|gpu) ;; *) echo "PAST_DEVICE must be cpu or gpu, got '$DEVICE'" >&2; exit 2 ;; esac

if [[ -n "${WANDB_API_KEY:-}" ]]; then
  LOGGER="['console','wandb']"
else
  LOGGER="['console']"
fi

# verl defaults to flash_attention_2; without flash-attn (and always on CPU) use PyTorch's sdpa.
if [[ "$DEVICE" == gpu ]] && "$PYTHON" -c "import flash_attn" >/dev/null 2>&1; then
  ATTN_SFT=()
  ATTN_ACTOR=()
else
  ATTN_SFT=(+model.override_config.attn_implementation=sdpa)
  ATTN_ACTOR=(+actor_rollout_ref.model.override_config.attn_implementation=sdpa)
fi

# CPU-only machine (facts: shared/notes/verl-0.9.1.md). cpu_compat.verl_platform registers verl
# platform "cpu"; cpu_compat.vllm_plugin (a vLLM entry point) keeps vLLM-CPU's weights reloadable.
CPU_SFT_OVERRIDES=()
CPU_GRPO_OVERRIDES=()
if [[ "$DEVICE" == cpu ]]; then
  export VERL_USE_EXTERNAL_MODULES=cpu_compat.verl_platform
  export VERL_PLATFORM=cpu
  export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
  export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
  # Ray's memory monitor kills workers when the whole node is nearly full, whoever fills it;
  # on a small shared CPU box that ends tiny runs that would fit.
  export RAY_memory_monitor_refresh_ms="${RAY_memory_monitor_refresh_ms:-0}"
  CPU_SFT_OVERRIDES=(
    trainer.device=cpu
    engine.strategy=fsdp2
    data.num_workers=0
  )
  CPU_GRPO_OVERRIDES=(
    trainer.device=cpu
    actor_rollout_ref.actor.strategy=fsdp2
    actor_rollout_ref.ref.strategy=fsdp2
    actor_rollout_ref.rollout.enforce_eager=True
    actor_rollout_ref.rollout.free_cache_engine=False
    +actor_rollout_ref.rollout.enable_sleep_mode=False
    actor_rollout_ref.rollout.agent.num_workers=1
    data.dataloader_num_workers=0
    # One declared GPU, so that verl's resource pool can place its workers; a private local
    # Ray instance with bounded CPUs, never someone else's cluster on a shared machine.
    +ray_kwargs.ray_init.num_gpus=1
    ray_kwargs.ray_init.num_cpus="${RAY_NUM_CPUS:-10}"
    +ray_kwargs.ray_init.address=local
    transfer_queue.backend.SimpleStorage.num_data_storage_units=1
  )
fi

# Print a command as a copy-pastable line.
show_cmd() {
  printf '%q ' "$@" | sed 's/ $//'
  echo
}

# run_cmd CMD...: run a plain command, or only print it under DRY_RUN=1.
run_cmd() {
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "DRY_RUN: $(show_cmd "$@")"
  else
    echo "+ $(show_cmd "$@")" >&2
    "$@"
  fi
}

# run_verl LABEL MODULE LAUNCHER... -- OVERRIDES...: launch a verl trainer module with Hydra
# overrides. Under DRY_RUN=1, print the command and the config Hydra composes from it
# (`python -m MODULE --cfg job`), which fails on a misspelled existing key.
run_verl() {
  local label="$1" module="$2"
  shift 2
  local launcher=()
  while [[ "$1" != "--" ]]; do launcher+=("$1"); shift; done
  shift
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "DRY_RUN [$label]: $(show_cmd "${launcher[@]}" -m "$module" "$@")"
    echo "--- composed config [$label] ---"
    "$PYTHON" -m "$module" --cfg job "$@" 2>/dev/null || {
      echo "$label: verl rejected the overrides; rerun to see why:" >&2
      echo "  $(show_cmd "$PYTHON" -m "$module" --cfg job "$@")" >&2
      exit 1
    }
    echo "--- end composed config [$label] ---"
  else
    echo "+ $(show_cmd "${launcher[@]}" -m "$module" "$@")" >&2
    "${launcher[@]}" -m "$module" "$@"
  fi
}

# resume_mode_for RUN_DIR: the trainer.resume_mode to pass to verl. A run dir that already holds
# checkpoints is refused unless RESUME=1, since verl's default (auto) would silently resume from
# them, and end at once when that run was complete.
resume_mode_for() {
  local run_dir="$1"
  if compgen -G "$run_dir/global_step_*" >/dev/null || [[ -e "$run_dir/latest_checkpointed_iteration.txt" ]]; then
    if [[ "${RESUME:-0}" == 1 ]]; then
      echo auto
      return
    fi
    echo "$run_dir already holds checkpoints of an earlier run. Set RESUME=1 to resume it," \
      "or remove it (rm -rf $run_dir) to train from scratch." >&2
    return 1
  fi
  echo disable
}

# record_final RUN_DIR HF_SUBDIR: point RUN_DIR/final at the HF model of the last checkpoint
# (a relative symlink, replaced atomically), so later stages never guess step numbers.
record_final() {
  local run_dir="$1" hf_subdir="$2" step
  [[ "$DRY_RUN" == 1 ]] && { echo "DRY_RUN: link $run_dir/final -> global_step_<last>/$hf_subdir"; return; }
  if [[ ! -f "$run_dir/latest_checkpointed_iteration.txt" ]]; then
    echo "verl wrote no checkpoint to $run_dir (it saves at the last step only when it reaches" \
      "trainer.total_training_steps; for GRPO also trainer.save_freq must be > 0)" >&2
    return 1
  fi
  step="$(cat "$run_dir/latest_checkpointed_iteration.txt")"
  local hf_dir="global_step_$step/$hf_subdir"
  if ! compgen -G "$run_dir/$hf_dir/*.safetensors" >/dev/null; then
    echo "no HF weights in $run_dir/$hf_dir: was hf_model dropped from checkpoint.save_contents?" >&2
    return 1
  fi
  ln -sfn "$hf_dir" "$run_dir/.final.tmp"
  mv -T "$run_dir/.final.tmp" "$run_dir/final"
  echo "final HF model: $run_dir/final -> $hf_dir" >&2
}

# expand_passages SPEC (shared with the other drivers)
source "$ROOT/scripts/passages.sh"
