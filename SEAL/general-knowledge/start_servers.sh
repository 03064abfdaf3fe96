#!/usr/bin/env bash
# Start the SQuAD evaluation's servers in the background: a vLLM server with runtime LoRA loading
# (on VLLM_GPUS) and the TTT server (on TTT_GPU), which trains one LoRA per request, has vLLM
# answer with it and grades through the judge server (started too if none answers at JUDGE_URL).
#
#   bash SEAL/general-knowledge/start_servers.sh                                  # plain base model
#   SKILL_VECTOR=skill.safetensors ALPHA=1.0 BASE_MODEL=/models/Qwen2.5-7B VLLM_GPUS=2 TTT_GPU=3 \
#     VLLM_PORT=8002 ZMQ_PORT=5556 bash SEAL/general-knowledge/start_servers.sh     # base + lambda * skill, a second pair
#   STOP=1 ZMQ_PORT=5556 bash SEAL/general-knowledge/start_servers.sh            # stop the pair on these ports
#   bash SEAL/general-knowledge/start_servers.sh --mask_pads                      # args go to TTT_server.py
# With SKILL_VECTOR, inherit_weight.py first writes BASE_MODEL + ALPHA * SKILL_VECTOR once to
# SERVED_MODEL (kept for later runs; remove it to rebuild); vLLM serves that, and the TTT server
# trains against BASE_MODEL (SKILL_ORDER=post, the paper's formula) or against SERVED_MODEL (pre).
# Settings (environment): BASE_MODEL (Qwen/Qwen2.5-7B; a local dir with SKILL_VECTOR), SKILL_VECTOR,
# ALPHA 1.0, SKILL_ORDER post, SKILL_NAME (v: the vector's name in the results table), SERVED_MODEL (CKPT_ROOT/seal_served/<vector>_alpha<ALPHA>),
# VLLM_GPUS 0, TTT_GPU 1, VLLM_PORT 8001, ZMQ_PORT 5555, MAX_SEQ_LENGTH 2048 (training sequences),
# VLLM_MAX_MODEL_LEN (MAX_SEQ_LENGTH), MAX_LORA_RANK 32, SERVED_DTYPE (empty: the base's dtype; float32:
# W + lambda * v written from a float32 copy of BASE_MODEL and served in float32, when query_server.py
# reports that little of the vector survives in bf16; SERVED_MODEL then ends in _float32),
# EVAL_MAX_TOKENS 64, ANSWER_TEMPLATE (a file with the answer prompt, {question} in it; empty: SEAL's),
# TTT_DTYPE (bfloat16 on a GPU, float32 on a CPU), START_JUDGE 1 (with JUDGE_BACKEND; JUDGE_MODEL
# gpt-4.1 for openai, SEAL's grader), JUDGE_URL, JUDGE_TOKEN_FILE, TTT_TOKEN_FILE (a token every TTT
# request must carry; query_server.py reads the same env), STARTUP_TIMEOUT 900 s, LOG_DIR (outputs/;
# logs and pid files in LOG_DIR/seal). Everything binds loopback: run query_server.py on this node (a
# --zmq_host other than loopback is refused without TTT_TOKEN_FILE).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/common.sh"
squad_answer_settings
squad_judge_settings
squad_serving_settings
BASE_MODEL=${BASE_MODEL:-Qwen/Qwen2.5-7B}
SKILL_VECTOR=${SKILL_VECTOR:-}
ALPHA=${ALPHA:-1.0}
SKILL_ORDER=${SKILL_ORDER:-post}
SKILL_NAME=${SKILL_NAME:-v}
CKPT_ROOT=${CKPT_ROOT:-$ROOT/checkpoints}
SERVED_MODEL=${SERVED_MODEL:-$([[ -n "$SKILL_VECTOR" ]] && echo "$CKPT_ROOT/seal_served/$(basename "${SKILL_VECTOR%.*}")_alpha$ALPHA${SERVED_DTYPE:+_$SERVED_DTYPE}" || echo "$BASE_MODEL")}
VLLM_GPUS=${VLLM_GPUS:-0}
TTT_GPU=${TTT_GPU:-1}
VLLM_PORT=${VLLM_PORT:-8001}
ZMQ_PORT=${ZMQ_PORT:-5555}
MAX_SEQ_LENGTH=${MAX_SEQ_LENGTH:-2048}
VLLM_MAX_MODEL_LEN=${VLLM_MAX_MODEL_LEN:-$MAX_SEQ_LENGTH}   # answer prompt + EVAL_MAX_TOKENS must fit
MAX_LORA_RANK=${MAX_LORA_RANK:-32}
EVAL_MAX_TOKENS=${EVAL_MAX_TOKENS:-64}
TTT_DTYPE=${TTT_DTYPE:-$([[ "$DEVICE" == gpu ]] && echo bfloat16 || echo float32)}
START_JUDGE=${START_JUDGE:-1}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-900}
SERVER_LOGS="$LOG_DIR/seal"
vllm_url="http://127.0.0.1:$VLLM_PORT"
vllm_pid_file="$SERVER_LOGS/vllm_$VLLM_PORT.pid"
ttt_pid_file="$SERVER_LOGS/ttt_server_$ZMQ_PORT.pid"
ready_file="$SERVER_LOGS/ttt_server_$ZMQ_PORT.ready.json"

if [[ "${STOP:-0}" == 1 ]]; then
  for pid_file in "$ttt_pid_file" "$vllm_pid_file"; do
    if [[ -f "$pid_file" ]]; then
      run_cmd kill "$(cat "$pid_file")" || true
      [[ "$DRY_RUN" == 1 ]] || rm -f "$pid_file"
    fi
  done
  exit 0
fi
[[ "$SKILL_ORDER" == post || "$SKILL_ORDER" == pre ]] || usage_error "SKILL_ORDER must be post or pre, got '$SKILL_ORDER'"
if [[ -n "$SKILL_VECTOR" ]]; then
  [[ -f "$SKILL_VECTOR" ]] || usage_error "SKILL_VECTOR=$SKILL_VECTOR: no such file"
  [[ -d "$BASE_MODEL" ]] || usage_error "with SKILL_VECTOR, BASE_MODEL must be a local model dir (inherit_weight.py" \
    "reads it), got '$BASE_MODEL': download it first (huggingface-cli download Qwen/Qwen2.5-7B --local-dir DIR)"
  if [[ ! -f "$SERVED_MODEL/config.json" ]]; then
    served_base "$BASE_MODEL" "$CKPT_ROOT/seal_served"
    run_cmd "$PYTHON" "$ROOT/inherit_weight.py" --skill_vector "$SKILL_VECTOR" --alpha "$ALPHA" \
      --target_models "$SERVED_BASE" --output_dirs "$SERVED_MODEL"
  else
    echo "serving the existing $SERVED_MODEL (base + $ALPHA * skill; remove it to rebuild)" >&2
  fi
fi
if [[ "$START_JUDGE" == 1 && "$DRY_RUN" != 1 ]]; then
  bash "$ROOT/scripts/train/start_judge_server.sh" >/dev/null
fi

vllm_cmd=(env VLLM_ALLOW_RUNTIME_LORA_UPDATING=True CUDA_VISIBLE_DEVICES="$VLLM_GPUS"
  "$PYTHON" -m vllm.entrypoints.openai.api_server --model "$SERVED_MODEL" --host 127.0.0.1 --port "$VLLM_PORT"
  --max-model-len "$VLLM_MAX_MODEL_LEN" --enable-lora --max-lora-rank "$MAX_LORA_RANK")
if [[ "$DEVICE" == gpu ]]; then
  vllm_cmd+=(--tensor-parallel-size "$(tr ',' '\n' <<< "$VLLM_GPUS" | grep -c .)")
  [[ -z "$SERVED_DTYPE" ]] || vllm_cmd+=(--dtype "$SERVED_DTYPE")
else
  vllm_cmd+=(--dtype "${SERVED_DTYPE:-$TTT_DTYPE}" --enforce-eager)   # by default the trainer's dtype
fi
ttt_cmd=(env CUDA_VISIBLE_DEVICES="$TTT_GPU" "$PYTHON" "$ROOT/SEAL/general-knowledge/TTT_server.py"
  --vllm_url "$vllm_url" --base_model "$BASE_MODEL" --zmq_port "$ZMQ_PORT" --judge_url "$JUDGE_URL"
  --max_seq_length "$MAX_SEQ_LENGTH" --eval_max_tokens "$EVAL_MAX_TOKENS" --dtype "$TTT_DTYPE"
  --adapter_dir "$SERVER_LOGS/adapters_$ZMQ_PORT" --ready_file "$ready_file"
  ${ANSWER_TEMPLATE:+--answer_template "$ANSWER_TEMPLATE"})
[[ -z "$SKILL_VECTOR" ]] || ttt_cmd+=(--served_model "$SERVED_MODEL" --skill_vector "$SKILL_VECTOR" --alpha "$ALPHA"
  --skill_order "$SKILL_ORDER" --skill_name "$SKILL_NAME")
[[ -z "$JUDGE_TOKEN_FILE" ]] || ttt_cmd+=(--judge_token_file "$JUDGE_TOKEN_FILE")
[[ -z "${TTT_TOKEN_FILE:-}" ]] || ttt_cmd+=(--auth_token_file "$TTT_TOKEN_FILE")
if [[ "$DRY_RUN" == 1 ]]; then
  run_cmd "${vllm_cmd[@]}"
  run_cmd "${ttt_cmd[@]}" "$@"
  exit 0
fi

for pid_file in "$vllm_pid_file" "$ttt_pid_file"; do
  if [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    echo "a server started from $pid_file is still running (pid $(cat "$pid_file")): use it, or stop it first:" \
      "STOP=1 VLLM_PORT=$VLLM_PORT ZMQ_PORT=$ZMQ_PORT bash $0" >&2
    exit 1
  fi
done

# start NAME PID_FILE LOG CMD...: CMD in the background, its pid in PID_FILE.
start() {
  local name="$1" pid_file="$2" log="$3"
  shift 3
  echo "+ $(show_cmd "$@")" >&2
  nohup "$@" >"$log" 2>&1 &
  echo $! >"$pid_file"
  echo "starting $name (pid $!, log $log)" >&2
}

# stop_started: what this run started, when a start fails.
stop_started() {
  local pid_file
  for pid_file in "$ttt_pid_file" "$vllm_pid_file"; do
    [[ -f "$pid_file" ]] && { kill "$(cat "$pid_file")" 2>/dev/null || true; rm -f "$pid_file"; }
  done
  exit 1
}

# wait_until NAME PID_FILE LOG TEST...: poll TEST every second until it succeeds; fail if the process exits.
wait_until() {
  local name="$1" pid_file="$2" log="$3" i
  shift 3
  for ((i = 0; i < STARTUP_TIMEOUT; i++)); do
    "$@" && return 0
    if ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
      echo "$name exited during start-up; last lines of $log:" >&2
      tail -n 30 "$log" >&2
      return 1
    fi
    sleep 1
  done
  echo "$name did not become ready within $STARTUP_TIMEOUT s; see $log" >&2
  return 1
}

mkdir -p "$SERVER_LOGS"
rm -f "$ready_file"
start "vLLM ($SERVED_MODEL)" "$vllm_pid_file" "$SERVER_LOGS/vllm_$VLLM_PORT.log" "${vllm_cmd[@]}"
wait_until vLLM "$vllm_pid_file" "$SERVER_LOGS/vllm_$VLLM_PORT.log" curl -sf -m 2 "$vllm_url/health" -o /dev/null || stop_started
start "TTT server" "$ttt_pid_file" "$SERVER_LOGS/ttt_server_$ZMQ_PORT.log" "${ttt_cmd[@]}" "$@"
wait_until "TTT server" "$ttt_pid_file" "$SERVER_LOGS/ttt_server_$ZMQ_PORT.log" test -f "$ready_file" || stop_started
echo "vLLM at $vllm_url serves $SERVED_MODEL; TTT server at tcp://127.0.0.1:$ZMQ_PORT" \
  "(trainer: $([[ -n "$SKILL_VECTOR" && "$SKILL_ORDER" == pre ]] && echo "$SERVED_MODEL" || echo "$BASE_MODEL"))." \
  "Stop both: STOP=1 VLLM_PORT=$VLLM_PORT ZMQ_PORT=$ZMQ_PORT bash $0" >&2
