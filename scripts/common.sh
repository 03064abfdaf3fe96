# The one bash library of PaST's drivers (sourced, never run). Every driver starts with
#   source "<path to>/scripts/common.sh"
# which answers -h/--help with the driver's header comment (and exits), then sets
#   ROOT      the checkout the driver belongs to; PYTHONPATH=$ROOT is exported, so every process it
#             starts (torchrun ranks, Ray and vLLM workers) imports this checkout's code
#   PYTHON    $PYTHON, else $PAST_VENV/bin/python, else $ROOT/.venv/bin/python, else python3
#   DEVICE    gpu | cpu: PAST_DEVICE if set, else gpu when `nvidia-smi -L` lists a GPU or
#             torch.cuda.is_available() in $PYTHON; printed with the code root at the start
#   JUDGE_PORT (8123), JUDGE_URL (http://127.0.0.1:$JUDGE_PORT; JUDGE_SERVER_URL also read)
#   DRY_RUN   1: print each command, validate verl overrides with `--cfg job`, run nothing
# and defines the helpers below (run_cmd, run_verl, expand_passages, ...). With
# PAST_COMMON_PARTS=setup (setup.sh, and quickstart.sh before set-up) it stops after --help,
# ROOT, usage_error and detect_device.

case "${1:-}" in
  -h | --help)
    # The header comment of the driver that sourced this file: every comment line after the
    # shebang, up to the first line that is not a comment.
    awk 'NR == 1 && /^#!/ { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[1]}"
    exit 0
    ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# usage_error MESSAGE: a bad setting or argument; exit 2 before anything started.
usage_error() {
  echo "$(basename "$0"): $*  (see: bash ${0#"$ROOT"/} --help)" >&2
  exit 2
}

# --- device ------------------------------------------------------------------------------------

# detect_device [PYTHON]: set DEVICE (gpu|cpu), DEVICE_REASON, GPU_COUNT and GPU_MEMORY_MIB (the
# smallest GPU's memory by nvidia-smi; empty when it does not tell). One rule for every driver
# and for setup.sh: PAST_DEVICE forces it; else a GPU listed by nvidia-smi, else
# torch.cuda.is_available() in the given Python (a GPU node may lack nvidia-smi on PATH).
detect_device() {
  local py="${1:-$PYTHON}" count
  GPU_COUNT=0
  GPU_MEMORY_MIB="$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | sort -n | head -n 1 || true)"
  [[ "$GPU_MEMORY_MIB" =~ ^[0-9]+$ ]] || GPU_MEMORY_MIB=""
  if [[ -n "${PAST_DEVICE:-}" ]]; then
    DEVICE="$PAST_DEVICE" DEVICE_REASON="PAST_DEVICE=$PAST_DEVICE"
    [[ "$DEVICE" == gpu ]] && GPU_COUNT="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"
  elif count="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')" && ((count > 0)); then
    DEVICE=gpu DEVICE_REASON="nvidia-smi lists $count GPU(s)" GPU_COUNT="$count"
  elif count="$("$py" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null)" \
    && [[ "$count" =~ ^[0-9]+$ ]] && ((count > 0)); then
    DEVICE=gpu DEVICE_REASON="torch.cuda.is_available() in $py (nvidia-smi lists none)" GPU_COUNT="$count"
  else
    DEVICE=cpu DEVICE_REASON="no NVIDIA GPU: nvidia-smi lists none, torch.cuda.is_available() is False in $py"
  fi
  case "$DEVICE" in cpu | gpu) ;; *) echo "PAST_DEVICE must be cpu or gpu, got '$DEVICE'" >&2; exit 2 ;; esac
}

# setup.sh and quickstart.sh (before set-up) need no more: the project's Python may not exist yet.
[[ "${PAST_COMMON_PARTS:-all}" == setup ]] && return 0

if [[ -z "${PYTHON:-}" ]]; then
  PYTHON="${PAST_VENV:-$ROOT/.venv}/bin/python"
  [[ -x "$PYTHON" ]] || PYTHON=python3
fi
export PYTHON
# This checkout first on every Python path, ahead of the venv's editable install (which points at
# whichever checkout last ran setup.sh); PYTHONSAFEPATH keeps the working directory off it.
[[ ":${PYTHONPATH:-}:" == ":$ROOT:"* ]] || export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONSAFEPATH=1
DRY_RUN="${DRY_RUN:-0}"

# Detected once per run: a driver's children reuse the result (and print the same line).
if [[ -n "${PAST_DETECTED:-}" && -z "${PAST_DEVICE:-}" ]]; then
  IFS='|' read -r DEVICE GPU_COUNT GPU_MEMORY_MIB DEVICE_REASON <<< "$PAST_DETECTED"
else
  detect_device
  [[ -n "${PAST_DEVICE:-}" ]] || export PAST_DETECTED="$DEVICE|$GPU_COUNT|$GPU_MEMORY_MIB|$DEVICE_REASON"
fi
# The package root Python really imports (PYTHONPATH above): a driver that would run another
# checkout's code stops here.
CODE_ROOT="$(cd / && "$PYTHON" -c 'import os, cpu_compat; print(os.path.dirname(os.path.dirname(os.path.abspath(cpu_compat.__file__))))' 2>/dev/null || true)"
if [[ "$CODE_ROOT" != "$ROOT" ]]; then
  echo "$PYTHON imports PaST from '${CODE_ROOT:-nowhere}', not from this checkout $ROOT: set PYTHON/PAST_VENV to a" \
    "Python with the project's packages (bash scripts/setup.sh)" >&2
  exit 2
fi

# GPUs: a local vLLM judge's GPUs (JUDGE_GPUS, e.g. "7"; scripts/train/start_judge_server.sh) are
# never given to training or evaluation: CUDA_VISIBLE_DEVICES lists the others, and
# N_GPUS_PER_NODE defaults to how many GPUs that leaves (CPU: one process). TRAINING_GPU_IDS is
# that comma list of this node's GPU ids (empty on a CPU, or when no tool tells the GPUs).
TRAINING_GPU_IDS=""
if [[ "$DEVICE" == gpu ]]; then
  TRAINING_GPU_IDS="${CUDA_VISIBLE_DEVICES:-$(seq -s, 0 $((GPU_COUNT - 1)))}"   # GPU_COUNT 0: none known
  if [[ -n "${JUDGE_GPUS:-}" ]]; then
    [[ -n "$TRAINING_GPU_IDS" ]] || { echo "JUDGE_GPUS=$JUDGE_GPUS: cannot tell this node's GPUs; set CUDA_VISIBLE_DEVICES" >&2; exit 2; }
    kept=()
    for gpu in ${TRAINING_GPU_IDS//,/ }; do [[ ",$JUDGE_GPUS," == *",$gpu,"* ]] || kept+=("$gpu"); done
    ((${#kept[@]} > 0)) || { echo "JUDGE_GPUS=$JUDGE_GPUS leaves none of GPUs $TRAINING_GPU_IDS for training" >&2; exit 2; }
    TRAINING_GPU_IDS="$(IFS=,; echo "${kept[*]}")"
    export CUDA_VISIBLE_DEVICES="$TRAINING_GPU_IDS"
    unset kept gpu
  fi
  TRAINING_GPUS="$(tr ',' '\n' <<< "$TRAINING_GPU_IDS" | grep -c . || true)"
else
  TRAINING_GPUS=1
fi
N_GPUS_PER_NODE_GIVEN="${N_GPUS_PER_NODE:-}"
N_GPUS_PER_NODE="${N_GPUS_PER_NODE:-$((TRAINING_GPUS > 0 ? TRAINING_GPUS : 8))}"
[[ "$DEVICE" == cpu ]] && N_GPUS_PER_NODE=1   # one training process on a CPU
echo "[$(basename "$0")] device: $DEVICE ($DEVICE_REASON)${CUDA_VISIBLE_DEVICES+, CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES};" \
  "code: $CODE_ROOT; python: $PYTHON" >&2
NNODES="${NNODES:-1}"
[[ "$N_GPUS_PER_NODE" =~ ^[1-9][0-9]*$ && "$NNODES" =~ ^[1-9][0-9]*$ ]] \
  || { echo "N_GPUS_PER_NODE and NNODES must be positive numbers, got '$N_GPUS_PER_NODE' and '$NNODES'" >&2; exit 2; }
if [[ "$DEVICE" == gpu ]] && ((TRAINING_GPUS > 0 && N_GPUS_PER_NODE > TRAINING_GPUS)); then
  echo "N_GPUS_PER_NODE=$N_GPUS_PER_NODE but only $TRAINING_GPUS GPU(s) are free for training here" \
    "${JUDGE_GPUS:+(JUDGE_GPUS=$JUDGE_GPUS are kept for the judge)}" >&2
  exit 2
fi

# --- judge server --------------------------------------------------------------------------------

# url_host URL / url_port URL: the host and port of an http URL; is_loopback HOST.
url_host() { local h="${1#*://}"; h="${h%%/*}"; echo "${h%:*}"; }
url_port() { local h="${1#*://}"; h="${h%%/*}"; [[ "$h" == *:* ]] && echo "${h##*:}" || echo 80; }
is_loopback() { [[ "$1" == localhost || "$1" == 127.* || "$1" == ::1 || "$1" == "[::1]" ]]; }

# JUDGE_URL is the address the reward workers use. Unset, it is loopback on one node, and with
# NNODES > 1 the head's address (MASTER_ADDR, else this host's first address): every node's
# workers must reach it. A judge off loopback always needs a token, read from JUDGE_TOKEN_FILE
# (default outputs/judge_token, beside the checkpoints on the shared filesystem); only its path
# is ever passed on or printed.
JUDGE_PORT="${JUDGE_PORT:-8123}"
LOG_DIR="${LOG_DIR:-$ROOT/outputs}"
JUDGE_URL="${JUDGE_URL:-${JUDGE_SERVER_URL:-}}"
if [[ -z "$JUDGE_URL" ]]; then
  if ((NNODES > 1)); then
    JUDGE_URL="http://${MASTER_ADDR:-$(hostname -I 2>/dev/null | awk '{print $1}')}:$JUDGE_PORT"
  else
    JUDGE_URL="http://127.0.0.1:$JUDGE_PORT"
  fi
fi
JUDGE_URL="${JUDGE_URL%/}"
if is_loopback "$(url_host "$JUDGE_URL")"; then
  JUDGE_TOKEN_FILE="${JUDGE_TOKEN_FILE:-}"
else
  JUDGE_TOKEN_FILE="${JUDGE_TOKEN_FILE:-$LOG_DIR/judge_token}"
fi

# check_judge_for_nodes: with NNODES > 1 a loopback JUDGE_URL cannot be reached by the workers
# on the other nodes (verl places reward workers on every node): refuse before anything starts.
check_judge_for_nodes() {
  if ((NNODES > 1)) && is_loopback "$(url_host "$JUDGE_URL")"; then
    echo "NNODES=$NNODES: JUDGE_URL=$JUDGE_URL is loopback, which reward workers on the other nodes cannot" \
      "reach. Leave JUDGE_URL unset (the judge then binds http://<MASTER_ADDR>:$JUDGE_PORT) or set" \
      "JUDGE_URL=http://<an address of the judge every node reaches>:<port>." >&2
    exit 2
  fi
}

# check_gpus_for_nodes: with NNODES > 1 on GPUs, every node must agree on N_GPUS_PER_NODE (the batch
# fitting and verl count NNODES x N_GPUS_PER_NODE ranks), and JUDGE_GPUS would make this node's
# default differ from the others': it must be given. A usage error before anything starts.
check_gpus_for_nodes() {
  if ((NNODES > 1)) && [[ "$DEVICE" == gpu && -z "$N_GPUS_PER_NODE_GIVEN" ]]; then
    usage_error "NNODES=$NNODES: set N_GPUS_PER_NODE, the same on every node (this node would default to its" \
      "$TRAINING_GPUS free GPU(s)${JUDGE_GPUS:+, JUDGE_GPUS=$JUDGE_GPUS kept for the judge})"
  fi
}

# check_ray_for_nodes: with NNODES > 1, GRPO runs on a Ray cluster spanning the nodes, started
# before (`ray start --head` here, `ray start --address=<head>:6379` on the others) and named by
# RAY_ADDRESS; without it verl would start a private one-node Ray and wait for the other nodes'
# GPUs forever. A usage error before anything starts.
check_ray_for_nodes() {
  check_gpus_for_nodes
  if ((NNODES > 1)) && [[ -z "${RAY_ADDRESS:-}" ]]; then
    usage_error "NNODES=$NNODES needs the Ray cluster that spans the nodes: start it first (ray start --head on this" \
      "node, ray start --address=<this node>:6379 on the others; a node with JUDGE_GPUS: CUDA_VISIBLE_DEVICES=<its" \
      "training GPUs> ray start ... --num-gpus=<their count>) and set RAY_ADDRESS (auto, or <head>:6379)"
  fi
}

# check_ray_nodes LABEL DIR...: with NNODES > 1, before training, scripts/preflight.py nodes checks
# the Ray cluster at RAY_ADDRESS: NNODES nodes, each offering N_GPUS_PER_NODE GPUs to Ray (this
# node no more, when JUDGE_GPUS keeps some for the judge), and DIRs one filesystem that a Ray task
# on every node sees. Not under DRY_RUN.
check_ray_nodes() {
  ((NNODES > 1)) && [[ "$DRY_RUN" != 1 ]] || return 0
  check_ray_for_nodes
  "$PYTHON" "$ROOT/scripts/preflight.py" nodes --stage "$1" --address "$RAY_ADDRESS" --nnodes "$NNODES" \
    --gpus_per_node "$N_GPUS_PER_NODE" --judge_gpus "${JUDGE_GPUS:-}" --training_gpu_ids "$TRAINING_GPU_IDS" \
    --dirs "${@:2}" >&2 || exit 1
}

# check_judge LABEL: a judge answers at JUDGE_URL, runs an LLM backend (or the backend that
# JUDGE_BACKEND names, lexical included) and accepts JUDGE_TOKEN_FILE's token. Not under DRY_RUN.
check_judge() {
  [[ "$DRY_RUN" == 1 ]] && return 0
  "$PYTHON" "$ROOT/scripts/preflight.py" judge --stage "$1" --url "$JUDGE_URL" \
    ${JUDGE_BACKEND:+--backend "$JUDGE_BACKEND"} ${JUDGE_TOKEN_FILE:+--token_file "$JUDGE_TOKEN_FILE"} || exit 1
}

# --- running commands ----------------------------------------------------------------------------

# show_cmd CMD...: a command as one copy-pastable line.
show_cmd() {
  printf '%q ' "$@" | sed 's/ $//'
  echo
}

# run_cmd CMD...: run a command (echoed to stderr first), or only print it under DRY_RUN=1.
run_cmd() {
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "DRY_RUN: $(show_cmd "$@")"
  else
    echo "+ $(show_cmd "$@")" >&2
    "$@"
  fi
}

# --- pipelines: whatever a run starts is stopped when it ends ------------------------------------

# track_run: from here on, everything this driver starts is stopped when it exits (finished,
# failed, Ctrl-C or killed): the stages started with run / run_bg (each in its own process group),
# every process that inherited this run's environment marker (Ray's daemons and workers, vLLM's
# engines and servers started in the background leave those groups) and a judge that
# ensure_judge started.
track_run() {
  stage_pids=() started_judge_pid=""
  export PAST_PIPELINE_RUN="$$.$RANDOM"
  trap stop_run EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# processes_marked NAME=VALUE: set run_pids to the processes whose environment holds NAME=VALUE
# (not this shell; it runs in this shell, so that no helper process of the search finds itself).
processes_marked() {
  local environ pid
  run_pids=()
  for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}; pid=${pid%/environ}
    [[ "$pid" != "$$" ]] || continue
    grep -qzx "$1" "$environ" 2>/dev/null && run_pids+=("$pid")
  done
  return 0
}
processes_of_this_run() { processes_marked "PAST_PIPELINE_RUN=$PAST_PIPELINE_RUN"; }

# wait_marked_exit NAME=VALUE TIMEOUT_S: after they were told to stop, wait until no process holds
# NAME=VALUE (a server and every child it started: vLLM's engine keeps the GPU until it exits);
# what is left after TIMEOUT_S is killed.
wait_marked_exit() {
  local waited
  for ((waited = 0; waited < $2; waited++)); do
    processes_marked "$1"
    ((${#run_pids[@]} > 0)) || return 0
    sleep 1
  done
  processes_marked "$1"
  ((${#run_pids[@]} == 0)) || { echo "killing what did not stop within $2 s: ${run_pids[*]}" >&2; kill -KILL "${run_pids[@]}" 2>/dev/null || true; }
  return 0
}

stop_run() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${stage_pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || continue
    echo "stopping the running stage (process group $pid)" >&2
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  processes_of_this_run
  if [[ ${#run_pids[@]} -gt 0 ]]; then
    echo "stopping processes this run started: ${run_pids[*]}" >&2
    kill -TERM "${run_pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 10); do processes_of_this_run; [[ ${#run_pids[@]} -gt 0 ]] || break; sleep 1; done
    [[ ${#run_pids[@]} -eq 0 ]] || kill -KILL "${run_pids[@]}" 2>/dev/null || true
  fi
  if [[ -n "$started_judge_pid" ]]; then
    echo "stopping the judge server this run started (pid $started_judge_pid)" >&2
    kill "$started_judge_pid" 2>/dev/null || true
  fi
  exit "$rc"
}

# run CMD...: run a stage's command in its own process group, so that stop_run can stop all of
# it (verl's Ray workers, vLLM's engine processes) and a signal reaches this script at once.
# Under DRY_RUN=1 the drivers print instead of running.
run() {
  run_bg "$@"
  wait_bg
}

# run_bg CMD...: start a stage's command in the background (its own process group); wait_bg waits
# for every one started so, and fails if any failed.
run_bg() {
  echo "+ $(show_cmd "$@")" >&2
  setsid "$@" &
  stage_pids+=($!)
}
wait_bg() {
  local pid rc=0
  for pid in "${stage_pids[@]}"; do wait "$pid" || rc=$?; done
  stage_pids=()
  return "$rc"
}

# run_python CMD...: as run, for a command that is not a driver (printed only under DRY_RUN=1).
run_python() {
  if [[ "$DRY_RUN" == 1 ]]; then echo "DRY_RUN: $(show_cmd "$@")"; else run "$@"; fi
}

# ensure_judge LABEL: a judge must answer at JUDGE_URL; if none does, JUDGE_BACKEND (openai | exact_match |
# vllm | lexical) starts one (scripts/train/start_judge_server.sh with JUDGE_ARGS as its extra
# arguments), which stop_run stops. Without either it stops the driver: the lexical
# (word-overlap) judge runs only when named. Sets JUDGE_DESCRIPTION (its backend and model).
ensure_judge() {
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "DRY_RUN: the judge at $JUDGE_URL${JUDGE_TOKEN_FILE:+ (token file $JUDGE_TOKEN_FILE)} is checked before any stage"
  elif ! curl -sf -m 3 "$JUDGE_URL/health" >/dev/null; then
    [[ -n "${JUDGE_BACKEND:-}" ]] || { "$PYTHON" "$ROOT/scripts/preflight.py" judge --url "$JUDGE_URL" --stage "$1"; exit 1; }
    # shellcheck disable=SC2086  # JUDGE_ARGS is a list of words
    bash "$ROOT/scripts/train/start_judge_server.sh" ${JUDGE_ARGS:-} >/dev/null
    started_judge_pid=$(cat "$LOG_DIR/judge_server_$(url_port "$JUDGE_URL").pid")
  fi
  JUDGE_DESCRIPTION="$(check_judge "$1")" || exit 1
}

# --- passages ------------------------------------------------------------------------------------

# expand_passages SPEC: "0-4", "0,2,5-7" or "0 2 5" -> "0 1 2 3 4" (one id per word); a bad
# spec is a usage error.
expand_passages() {
  local part ids=()
  for part in ${1//,/ }; do
    if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]] && ((BASH_REMATCH[1] <= BASH_REMATCH[2])); then
      ids+=($(seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"))
    elif [[ "$part" =~ ^[0-9]+$ ]]; then
      ids+=("$part")
    else
      echo "bad passage list '$1': use N, N-M or a comma list such as 0,2,5-7" >&2
      return 2
    fi
  done
  ((${#ids[@]} > 0)) || { echo "empty passage list" >&2; return 2; }
  echo "${ids[*]}"
}

# check_passage_id: passage_id (from the environment, default 0) must be a number.
check_passage_id() {
  [[ "${passage_id:-}" =~ ^[0-9]+$ ]] || usage_error "passage_id must be a number, got '${passage_id:-}'"
}

# --- verl training (sft.sh, grpo.sh and what calls them) ----------------------------------------

if [[ -n "${WANDB_API_KEY:-}" ]]; then LOGGER="['console','wandb']"; else LOGGER="['console']"; fi

# verl defaults to flash_attention_2; without flash-attn (and always on CPU) use PyTorch's sdpa.
if [[ "$DEVICE" == gpu ]] && "$PYTHON" -c "import flash_attn" >/dev/null 2>&1; then
  ATTN_SFT=() ATTN_ACTOR=()
else
  ATTN_SFT=(+model.override_config.attn_implementation=sdpa)
  ATTN_ACTOR=(+actor_rollout_ref.model.override_config.attn_implementation=sdpa)
fi

# A CPU-only machine: cpu_compat.verl_platform registers verl platform "cpu" (verl's own
# VERL_USE_EXTERNAL_MODULES / VERL_PLATFORM hooks); cpu_compat.vllm_plugin (a vLLM entry point)
# keeps vLLM-CPU's weights reloadable for verl's weight sync.
CPU_SFT_OVERRIDES=() CPU_GRPO_OVERRIDES=()
if [[ "$DEVICE" == cpu ]]; then
  export VERL_USE_EXTERNAL_MODULES=cpu_compat.verl_platform VERL_PLATFORM=cpu
  export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
  export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
  # Ray's memory monitor kills workers when the whole node is nearly full, whoever fills it;
  # on a small shared CPU box that ends tiny runs that would fit.
  export RAY_memory_monitor_refresh_ms="${RAY_memory_monitor_refresh_ms:-0}"
  CPU_SFT_OVERRIDES=(trainer.device=cpu engine.strategy=fsdp2 data.num_workers=0)
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
    # Ray instance with bounded CPUs (RAY_NUM_CPUS), never someone else's cluster.
    +ray_kwargs.ray_init.num_gpus=1
    ray_kwargs.ray_init.num_cpus="${RAY_NUM_CPUS:-10}"
    +ray_kwargs.ray_init.address=local
    transfer_queue.backend.SimpleStorage.num_data_storage_units=1
  )
fi

# HF_EXPORT_DTYPE=fp32 (default): verl saves each checkpoint's HF model in its fp32 master
# weights, so a skill vector rl - base holds every update training made. bf16: the HF model is
# made after the run from the FSDP shards by verl's merger, which writes bfloat16 (half the disk;
# updates below bf16's resolution are lost from skill vectors).
HF_EXPORT_DTYPE="${HF_EXPORT_DTYPE:-fp32}"
case "$HF_EXPORT_DTYPE" in
  fp32) SAVE_CONTENTS='[model,optimizer,extra,hf_model]' ;;
  bf16) SAVE_CONTENTS='[model,optimizer,extra]' ;;
  *) echo "HF_EXPORT_DTYPE must be fp32 or bf16, got '$HF_EXPORT_DTYPE'" >&2; exit 2 ;;
esac

# run_verl LABEL MODULE LAUNCHER... -- OVERRIDES...: launch a verl trainer module with Hydra
# overrides. Under DRY_RUN=1, print the command and the config Hydra composes from it
# (`python -m MODULE --cfg job`), which fails on a misspelled existing key.
run_verl() {
  local label="$1" module="$2" launcher=()
  shift 2
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

# run_log RUN_DIR LINE...: print a line and keep it in RUN_DIR/run.log (device, code, fitted
# batch sizes, pruning: what a run decided beyond its settings).
run_log() {
  local run_dir="$1"
  shift
  echo "$*" >&2
  [[ "$DRY_RUN" == 1 ]] && return 0
  mkdir -p "$run_dir"
  echo "$(date '+%F %T') $*" >> "$run_dir/run.log"
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

# latest_step RUN_DIR: the step of verl's last checkpoint in RUN_DIR (empty if none).
latest_step() { cat "$1/latest_checkpointed_iteration.txt" 2>/dev/null || true; }

# last_checkpoint RUN_DIR: the step of verl's last checkpoint in RUN_DIR; when there is none, says
# why on stderr and fails.
last_checkpoint() {
  local step
  step="$(latest_step "$1")"
  if [[ -z "$step" ]]; then
    echo "verl wrote no checkpoint to $1 (it saves at the last step only when it reaches" \
      "trainer.total_training_steps; for GRPO also trainer.save_freq must be > 0)" >&2
    return 1
  fi
  echo "$step"
}

# record_final RUN_DIR HF_SUBDIR: point RUN_DIR/final at the HF model of the last checkpoint
# (a relative symlink, replaced atomically), so later stages never guess step numbers. With
# HF_EXPORT_DTYPE=bf16 that model is made here from the FSDP shards (verl's merger).
record_final() {
  local run_dir="$1" hf_subdir="$2" step hf_dir
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "DRY_RUN: link $run_dir/final -> the last checkpoint's $hf_subdir (HF_EXPORT_DTYPE=$HF_EXPORT_DTYPE)"
    return
  fi
  step="$(last_checkpoint "$run_dir")" || return 1
  hf_dir="global_step_$step/$hf_subdir"
  if [[ "$HF_EXPORT_DTYPE" == bf16 ]]; then
    [[ -e "$run_dir/${hf_dir}_bf16/config.json" ]] \
      || bash "$ROOT/scripts/merge_fsdp_to_hf.sh" "$run_dir/$(dirname "$hf_dir")" "$run_dir/${hf_dir}_bf16"
    hf_dir="${hf_dir}_bf16"
  fi
  if ! compgen -G "$run_dir/$hf_dir/*.safetensors" >/dev/null; then
    echo "no HF weights in $run_dir/$hf_dir: was hf_model dropped from checkpoint.save_contents?" >&2
    return 1
  fi
  ln -sfn "$hf_dir" "$run_dir/.final.tmp"
  mv -T "$run_dir/.final.tmp" "$run_dir/final"
  run_log "$run_dir" "final HF model: $run_dir/final -> $hf_dir"
}

# prune_checkpoints RUN_DIR: once RUN_DIR/final is recorded, delete what only resuming needs
# (FSDP shards, optimizer state, earlier checkpoints), keeping the final HF model, run.log and
# GRPO's metrics*.jsonl, unless KEEP_RESUMABLE=1. A 7B checkpoint is ~30 GB of HF weights but ~120 GB with shards and Adam state.
prune_checkpoints() {
  local run_dir="$1" final before
  [[ "$DRY_RUN" == 1 ]] && { echo "DRY_RUN: prune $run_dir to its final HF model (KEEP_RESUMABLE=${KEEP_RESUMABLE:-0})"; return; }
  [[ "${KEEP_RESUMABLE:-0}" == 1 ]] && { run_log "$run_dir" "KEEP_RESUMABLE=1: FSDP shards and optimizer state kept"; return; }
  final="$(readlink "$run_dir/final")" || { echo "prune_checkpoints: $run_dir/final is not recorded" >&2; return 1; }
  before="$(du -sh "$run_dir" | cut -f1)"
  find "$run_dir" -mindepth 1 \( -path "$run_dir/$final" -o -path "$run_dir/final" -o -name run.log \
    -o -name latest_checkpointed_iteration.txt -o -name 'metrics*.jsonl' \) -prune -o -type f -print0 | xargs -0r rm -f
  find "$run_dir" -mindepth 1 -depth -type d -empty -delete
  run_log "$run_dir" "pruned $run_dir to its final HF model ($before -> $(du -sh "$run_dir" | cut -f1));" \
    "KEEP_RESUMABLE=1 keeps shards and optimizer state"
}

# prune_stale_checkpoints RUN_DIR: before resuming, keep only the checkpoint verl resumes from.
# verl's own limit (trainer.max_actor_ckpt_to_keep) counts only the checkpoints saved by the
# same process, so older ones a killed run left would otherwise stay forever.
prune_stale_checkpoints() {
  local run_dir="$1" step dir
  step="$(latest_step "$run_dir")"
  [[ -n "$step" && "$DRY_RUN" != 1 ]] || return 0
  for dir in "$run_dir"/global_step_*; do
    [[ -d "$dir" && "$dir" != "$run_dir/global_step_$step" ]] || continue
    rm -rf "$dir"
    run_log "$run_dir" "removed $dir (resuming from global_step_$step)"
  done
}

# --- iterative skill refinement ------------------------------------------------------------------

# skill_round ROUND_DIR BASE PREVIOUS_SKILL [VAR=VALUE ...] [-- HYDRA_OVERRIDES...]: one round of
# iterative skill refinement (grpo_round10.sh's rounds; any setting whose rounds have a base
# model and GRPO data can call it):
#   start = BASE + ALPHA * PREVIOUS_SKILL   ROUND_DIR/start (inherit_weight.py; BASE itself in round 1)
#   rl    = GRPO from start                 ROUND_DIR/grpo/final (grpo.sh with the VAR=VALUE settings)
#   skill = rl - BASE                       ROUND_DIR/skill_vector.safetensors (calc_delta_and_save.py)
# Parts already complete are kept, so a rerun continues an interrupted round.
skill_round() {
  local round_dir="$1" base="$2" previous_skill="$3" start settings=()
  shift 3
  while (($#)) && [[ "$1" != "--" ]]; do settings+=("$1"); shift; done
  (($#)) && shift
  start="$base"
  if [[ -n "$previous_skill" ]]; then
    start="$round_dir/start"
    [[ -e "$start/config.json" ]] || run_cmd "$PYTHON" "$ROOT/inherit_weight.py" --skill_vector "$previous_skill" \
      --alpha "$ALPHA" --target_models "$base" --output_dirs "$start"
  fi
  if [[ ! -e "$round_dir/grpo/final/config.json" ]]; then
    env "${settings[@]}" START_MODEL="$start" GRPO_DIR="$round_dir/grpo" RESUME="${RESUME:-0}" \
      bash "$ROOT/scripts/train/grpo.sh" "$@"
  fi
  [[ -f "$round_dir/skill_vector.safetensors" ]] || run_cmd "$PYTHON" "$ROOT/calc_delta_and_save.py" \
    --grpo_model "$round_dir/grpo/final" --base_model "$base" --output "$round_dir/skill_vector.safetensors"
}

# --- settings shared by several drivers ----------------------------------------------------------

# default_generation_backend: what offline generation (data, implications, the knowledge gate) runs
# on when no backend is named: vllm on a GPU whose Python has vLLM (the rule of eval_loogle's
# default_backend), else hf (transformers), said on stderr when a GPU goes without vLLM.
default_generation_backend() {
  if [[ "$DEVICE" != gpu ]]; then
    echo hf
  elif "$PYTHON" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("vllm") is None)' 2>/dev/null; then
    echo vllm
  else
    echo "$(basename "$0"): vLLM is not installed in $PYTHON: generating with transformers (hf); install vllm" \
      "for faster generation, or name a backend (GEN_BACKEND, GATE_BACKEND)" >&2
    echo hf
  fi
}

# gen_data_settings ARGS...: the arguments `<CUDA_VISIBLE_DEVICES> <passages> [extra args]` of
# gen_sft_data.sh and gen_rl_data.sh, checked (the devices exported; `passages`, `extra_args`), their
# settings (each can be set from the environment) and gen_args, the arguments both give their
# prepare_data entry points.
gen_data_settings() {
  if (($# < 2)) || ! expand_passages "$2" >/dev/null 2>&1; then
    echo "usage: $0 <CUDA_VISIBLE_DEVICES> <passages: N, N-M or a comma list such as 0,2,5-7> [extra entry-point args]" \
      "(bash $0 --help)" >&2
    exit 2
  fi
  export CUDA_VISIBLE_DEVICES="$1"
  passages="$2"
  extra_args=("${@:3}")
  LOOGLE=${LOOGLE:-$ROOT/data/loogle/shortdep_qa.jsonl}   # LooGLE jsonl (input, title, qa_pairs)
  DATA_ROOT=${DATA_ROOT:-$ROOT/data}                     # writes DATA_ROOT/passage{N}/
  GENERATOR=${GENERATOR:-Qwen/Qwen2.5-7B-Instruct}       # writes summaries and QA pairs
  TOKENIZER=${TOKENIZER:-}                               # chunking tokenizer; empty: GENERATOR's
  GEN_BACKEND=${GEN_BACKEND:-$(default_generation_backend)}   # vllm | hf | openai
  GEN_BASE_URL=${GEN_BASE_URL:-}                         # openai backend: OpenAI-compatible URL
  GEN_TP=${GEN_TP:-1}                                    # vllm backend: tensor parallel size
  CHUNK_TOKENS=${CHUNK_TOKENS:-512}
  OVERLAP_TOKENS=${OVERLAP_TOKENS:-64}
  MAX_CHUNKS=${MAX_CHUNKS:-0}                            # 0: every chunk of the passage
  QUESTIONS_PER_CHUNK=${QUESTIONS_PER_CHUNK:-5}
  PROPOSER=${PROPOSER:-json}                             # json | two_step | cloze | world (the last two model-free)
  QA_MAX_NEW_TOKENS=${QA_MAX_NEW_TOKENS:-1024}
  GEN_TEMPERATURE=${GEN_TEMPERATURE:-0.0}
  GEN_SEED=${GEN_SEED:-0}
  gen_args=(--input "$LOOGLE" --output_dir "$DATA_ROOT" --model "$GENERATOR" --backend "$GEN_BACKEND"
    --chunk_tokens "$CHUNK_TOKENS" --overlap_tokens "$OVERLAP_TOKENS" --max_chunks "$MAX_CHUNKS"
    --temperature "$GEN_TEMPERATURE" --seed "$GEN_SEED" --tensor_parallel_size "$GEN_TP")
  [[ -z "$TOKENIZER" ]] || gen_args+=(--tokenizer "$TOKENIZER")
  [[ -z "$GEN_BASE_URL" ]] || gen_args+=(--base_url "$GEN_BASE_URL")
  qa_args=(--proposer "$PROPOSER" --questions_per_chunk "$QUESTIONS_PER_CHUNK" --max_new_tokens "$QA_MAX_NEW_TOKENS")
}

# eval_settings: the settings of the evaluation drivers (eval_sft.sh, eval_with_context.sh,
# eval_gsm8k.sh); eval_args are the eval_loogle.eval_with_remote arguments they share.
# EVAL_MAX_NEW_TOKENS unset: generate_answers' default, which follows LooGLE (300 tokens for
# short-dependency QA, 500 for long-dependency, read from the eval set).
eval_settings() {
  passage_id=${passage_id:-0}
  MODEL_TAG=${MODEL_TAG:-}                   # the results table's column; empty: from MODEL_PATH
  N_RUNS=${N_RUNS:-3}
  EVAL_BACKEND=${EVAL_BACKEND:-}             # empty: vllm with a GPU, else hf
  EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-}
  DATA_ROOT=${DATA_ROOT:-$ROOT/data}
  RESULTS_DIR=${RESULTS_DIR:-$ROOT/eval_results}
  START_JUDGE=${START_JUDGE:-1}              # 1: start a judge (JUDGE_BACKEND) if none answers at JUDGE_URL
  eval_args=(--model_path "$MODEL_PATH" --n_runs "$N_RUNS" --results_dir "$RESULTS_DIR")
  [[ -z "$MODEL_TAG" ]] || eval_args+=(--model_tag "$MODEL_TAG")
  [[ -z "$EVAL_BACKEND" ]] || eval_args+=(--backend "$EVAL_BACKEND")
  [[ -z "$EVAL_MAX_NEW_TOKENS" ]] || eval_args+=(--max_new_tokens "$EVAL_MAX_NEW_TOKENS")
}

# eval_passage CMD...: evaluate passage $passage_id with eval_with_remote: its eval set must hold
# questions, and a judge must answer (started if START_JUDGE=1). DRY_RUN prints the command.
eval_passage() {
  local eval_set="$DATA_ROOT/passage$passage_id/eval.parquet"
  if [[ "$DRY_RUN" != 1 ]]; then
    "$PYTHON" "$ROOT/scripts/preflight.py" eval --data "$eval_set" --stage "evaluation of passage $passage_id" >/dev/null \
      || exit 1
    if [[ "$START_JUDGE" == 1 ]]; then
      bash "$ROOT/scripts/train/start_judge_server.sh" >/dev/null
    fi
  fi
  run_cmd "$PYTHON" -m eval_loogle.eval_with_remote --passage_idx "$passage_id" --data_dir "$DATA_ROOT" \
    --judge_url "$JUDGE_URL" "${eval_args[@]}" "$@"
}

# squad_settings: where the SQuAD setting's drivers (SEAL/general-knowledge/*.sh) read and write.
# The default passages are SEAL's evaluation set: positions 0-199 of the seed-42 shuffle of SQuAD
# v1.1 dev (974 questions); GENERATOR writes their implications.
squad_settings() {
  SQUAD_INPUT=${SQUAD_INPUT:-rajpurkar/squad}   # grouped JSON, raw SQuAD rows, or a hub id
  SQUAD_SPLIT=${SQUAD_SPLIT:-validation}        # hub split (validation = dev; train for source passages)
  SQUAD_SEED=${SQUAD_SEED:-42}
  SQUAD_START=${SQUAD_START:-0}
  SQUAD_N=${SQUAD_N:-200}
  SQUAD_DATA=${SQUAD_DATA:-${DATA_ROOT:-$ROOT/data}/squad}
  PASSAGES=${PASSAGES:-$SQUAD_DATA/${SQUAD_SPLIT}_seed${SQUAD_SEED}_from${SQUAD_START}_n${SQUAD_N}.json}
  GENERATOR=${GENERATOR:-Qwen/Qwen2.5-7B}       # the base model writes its own implications
  IMPLICATIONS=${IMPLICATIONS:-${PASSAGES%.json}.implications_$(basename "$GENERATOR").json}
  SQUAD_RESULTS=${SQUAD_RESULTS:-${RESULTS_DIR:-$ROOT/eval_results}/squad}   # run JSONs and the table
}

# squad_generation_settings: how GENERATOR writes implications (SEAL's settings by default) and
# implications_args, the make_implications.py arguments besides --input and --output.
squad_generation_settings() {
  GEN_BACKEND=${GEN_BACKEND:-$(default_generation_backend)}   # vllm | hf | openai
  GEN_BASE_URL=${GEN_BASE_URL:-}               # openai backend: the server's URL, e.g. a running vllm serve
  GEN_TP=${GEN_TP:-1}
  GEN_COMPLETIONS=${GEN_COMPLETIONS:-5}        # completions per passage
  GEN_TEMPERATURE=${GEN_TEMPERATURE:-1.0}
  GEN_TOP_P=${GEN_TOP_P:-0.95}
  GEN_MAX_NEW_TOKENS=${GEN_MAX_NEW_TOKENS:-8192}
  GEN_SEED=${GEN_SEED:-0}
  PROMPT=${PROMPT:-implications}                # prompts.IMPLICATIONS_TEMPLATES (SEAL's prompts)
  PROMPT_FILE=${PROMPT_FILE:-}                  # a text file with the prompt instead, {title} and {context} in it
  implications_args=(--model "$GENERATOR" --backend "$GEN_BACKEND" --k "$GEN_COMPLETIONS"
    --temperature "$GEN_TEMPERATURE" --top_p "$GEN_TOP_P" --max_new_tokens "$GEN_MAX_NEW_TOKENS" --seed "$GEN_SEED"
    --prompt "$PROMPT" --tensor_parallel_size "$GEN_TP")
  [[ -z "$GEN_BASE_URL" ]] || implications_args+=(--base_url "$GEN_BASE_URL")
  if [[ -n "$PROMPT_FILE" ]]; then
    PROMPT_FILE="$(prompt_file PROMPT_FILE "$PROMPT_FILE")"
    implications_args+=(--prompt_file "$PROMPT_FILE")
  fi
}

# squad_answer_settings: ANSWER_TEMPLATE, the one answer prompt of every stage that asks the SQuAD
# questions (the TTT server, hence the evaluation; the GRPO data; the knowledge gate): a text file
# with {question} in it, or empty for SEAL's (prompts.SQUAD_ANSWER_TEMPLATE).
squad_answer_settings() {
  ANSWER_TEMPLATE=${ANSWER_TEMPLATE:-}
  [[ -z "$ANSWER_TEMPLATE" ]] || ANSWER_TEMPLATE="$(prompt_file ANSWER_TEMPLATE "$ANSWER_TEMPLATE")"
  export ANSWER_TEMPLATE
}

# squad_judge_settings: an OpenAI judge that a SQuAD driver starts grades with SEAL's GPT-4.1 unless
# JUDGE_MODEL says otherwise (results_table.py marks rows of any other judge "not comparable").
squad_judge_settings() {
  [[ "${JUDGE_BACKEND:-}" != openai ]] || export JUDGE_MODEL=${JUDGE_MODEL:-gpt-4.1}
}

# squad_serving_settings: SERVED_DTYPE, empty (W + lambda * v in the base's dtype, bf16 for Qwen2.5)
# or float32 (written from a float32 copy of the base and served in float32): in bf16 the small
# elements of lambda * v round away; query_server.py logs the share that survives.
squad_serving_settings() {
  SERVED_DTYPE=${SERVED_DTYPE:-}
  [[ -z "$SERVED_DTYPE" || "$SERVED_DTYPE" == float32 ]] \
    || usage_error "SERVED_DTYPE must be float32 or empty (the base model's dtype), got '$SERVED_DTYPE'"
  export SERVED_DTYPE
}

# served_base BASE DIR: sets SERVED_BASE, the model inherit_weight.py adds a skill vector to for
# serving (it writes in its target's dtype): BASE, or with SERVED_DTYPE=float32 a float32 copy of it
# in DIR, written once.
served_base() {
  SERVED_BASE="$1"
  if [[ "$SERVED_DTYPE" == float32 ]]; then
    SERVED_BASE="$2/$(basename "$1")_float32"
    [[ -f "$SERVED_BASE/config.json" ]] || run_cmd "$PYTHON" "$ROOT/SEAL/general-knowledge/skill_precision.py" \
      float32_copy --model "$1" --output "$SERVED_BASE"
  fi
}

# prompt_file NAME PATH: PATH as an absolute path (the stages run in other folders), or a usage
# error naming the setting when there is no such file. The Python side checks its placeholders.
prompt_file() {
  [[ -f "$2" ]] || usage_error "$1=$2: no such file (a text file with the prompt template; unset $1 for SEAL's prompt)"
  echo "$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
}
