#!/usr/bin/env bash
# Start the judge server (reward_server.py) in the background, wait for /health, print its URL.
#
#   JUDGE_BACKEND=openai bash scripts/train/start_judge_server.sh      # OpenAI (OPENAI_API_KEY)
#   JUDGE_BACKEND=vllm JUDGE_BASE_URL=http://gpu7:8000/v1 JUDGE_MODEL=Qwen/Qwen2.5-7B-Instruct bash ...
#   JUDGE_BACKEND=vllm JUDGE_GPUS=7 JUDGE_MODEL=Qwen/Qwen2.5-7B-Instruct bash ...   # + a local vllm serve on GPU 7
#   JUDGE_BACKEND=lexical bash scripts/train/start_judge_server.sh     # offline word overlap (tests, CPU demo)
#   JUDGE_BACKEND=exact_match bash scripts/train/start_judge_server.sh # offline exact match (one-word answers)
#   export JUDGE_URL=$(JUDGE_BACKEND=openai bash scripts/train/start_judge_server.sh)
# Trailing args go to reward_server.py (python reward_server.py --help).
#
# It binds JUDGE_URL's host and port (default http://127.0.0.1:8123; with NNODES > 1 the head's
# address MASTER_ADDR, which every node reaches; JUDGE_HOST=0.0.0.0 binds all interfaces while
# workers still use JUDGE_URL). Off loopback it always requires a bearer token, read from
# JUDGE_TOKEN_FILE (default outputs/judge_token; written, mode 600, when missing); the token is
# never printed or passed on a command line. With JUDGE_GPUS, `vllm serve JUDGE_MODEL` runs on
# exactly those GPUs (tensor parallel over them), and every driver given the same JUDGE_GPUS
# leaves them out of its CUDA_VISIBLE_DEVICES.
# The URL is the only line on stdout; progress goes to stderr, logs to $LOG_DIR (default outputs/).
# A judge already answering on that port is reused if its backend is JUDGE_BACKEND. Stop it:
# kill "$(cat outputs/judge_server_<port>.pid)" (and outputs/judge_vllm_<port>.pid).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

JUDGE_BACKEND=${JUDGE_BACKEND:-}               # openai | vllm | lexical | exact_match (no default: choose one)
JUDGE_MODEL=${JUDGE_MODEL:-}                   # --judge_model (vllm: the served model)
JUDGE_BASE_URL=${JUDGE_BASE_URL:-}             # vllm backend: an OpenAI-compatible URL already serving JUDGE_MODEL
JUDGE_GPUS=${JUDGE_GPUS:-}                     # vllm backend without JUDGE_BASE_URL: GPUs for a local `vllm serve`
JUDGE_VLLM_PORT=${JUDGE_VLLM_PORT:-8000}
JUDGE_GPU_MEMORY_UTILIZATION=${JUDGE_GPU_MEMORY_UTILIZATION:-0.9}
JUDGE_HOST=${JUDGE_HOST:-$(url_host "$JUDGE_URL")}
JUDGE_STARTUP_TIMEOUT=${JUDGE_STARTUP_TIMEOUT:-60}   # seconds (a local vllm serve gets 15 minutes)

check_judge_for_nodes
port="$(url_port "$JUDGE_URL")"
log_file="$LOG_DIR/judge_server_$port.log"
pid_file="$LOG_DIR/judge_server_$port.pid"

# wait_for URL PID LOG TIMEOUT_S: until URL answers; fail if PID exits first.
wait_for() {
  local url="$1" pid="$2" log="$3" i
  for ((i = 0; i < $4 * 4; i++)); do
    curl -sf -m 2 "$url" >/dev/null && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$(basename "$log" .log) exited during start-up; last lines of $log:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    sleep 0.25
  done
  echo "$url did not answer within $4 s; see $log" >&2
  kill "$pid" 2>/dev/null || true
  return 1
}

if [[ "$DRY_RUN" != 1 ]] && health="$(curl -sf -m 2 "$JUDGE_URL/health")"; then
  running="$(sed -n 's/.*"backend": *"\([a-z]*\)".*/\1/p' <<< "$health")"
  if [[ -n "$JUDGE_BACKEND" && "$running" != "$JUDGE_BACKEND" ]]; then
    echo "a judge with backend '$running' already answers at $JUDGE_URL, not JUDGE_BACKEND=$JUDGE_BACKEND:" \
      "stop it (kill \$(cat $pid_file)) or use another JUDGE_PORT" >&2
    exit 1
  fi
  echo "judge server ($running) already running at $JUDGE_URL" >&2
  echo "$JUDGE_URL"
  exit 0
fi

args=(--host "$JUDGE_HOST" --port "$port")
[[ -n "$JUDGE_BACKEND" ]] && args+=(--backend "$JUDGE_BACKEND")
[[ -n "$JUDGE_MODEL" ]] && args+=(--judge_model "$JUDGE_MODEL")
if ! is_loopback "$JUDGE_HOST" || [[ -n "$JUDGE_TOKEN_FILE" ]]; then
  JUDGE_TOKEN_FILE="${JUDGE_TOKEN_FILE:-$LOG_DIR/judge_token}"
  if [[ ! -s "$JUDGE_TOKEN_FILE" ]]; then
    run_cmd mkdir -p "$(dirname "$JUDGE_TOKEN_FILE")"
    [[ "$DRY_RUN" == 1 ]] || (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$JUDGE_TOKEN_FILE")
    echo "wrote a new judge token to $JUDGE_TOKEN_FILE (mode 600): give reward workers that path (JUDGE_TOKEN_FILE)" >&2
  fi
  args+=(--auth_token_file "$JUDGE_TOKEN_FILE")
fi
[[ "$DRY_RUN" == 1 ]] || mkdir -p "$LOG_DIR"

if [[ "$JUDGE_BACKEND" == vllm && -z "$JUDGE_BASE_URL" ]]; then
  [[ -n "$JUDGE_GPUS" && -n "$JUDGE_MODEL" ]] || usage_error "JUDGE_BACKEND=vllm needs JUDGE_BASE_URL (a server" \
    "already running) or JUDGE_GPUS and JUDGE_MODEL (a local vllm serve on exactly those GPUs)"
  JUDGE_BASE_URL="http://127.0.0.1:$JUDGE_VLLM_PORT/v1"
  vllm_log="$LOG_DIR/judge_vllm_$JUDGE_VLLM_PORT.log"
  tp="$(tr ',' '\n' <<< "$JUDGE_GPUS" | grep -c .)"
  vllm_cmd=(env CUDA_VISIBLE_DEVICES="$JUDGE_GPUS" "$PYTHON" -m vllm.entrypoints.openai.api_server --model "$JUDGE_MODEL"
    --host 127.0.0.1 --port "$JUDGE_VLLM_PORT" --tensor-parallel-size "$tp"
    --gpu-memory-utilization "$JUDGE_GPU_MEMORY_UTILIZATION")
  if [[ "$DRY_RUN" == 1 ]]; then
    run_cmd "${vllm_cmd[@]}"
  elif ! curl -sf -m 2 "$JUDGE_BASE_URL/models" >/dev/null; then
    echo "+ $(show_cmd "${vllm_cmd[@]}")" >&2
    nohup "${vllm_cmd[@]}" >"$vllm_log" 2>&1 &
    echo $! >"$LOG_DIR/judge_vllm_$JUDGE_VLLM_PORT.pid"
    echo "starting vllm serve $JUDGE_MODEL on GPU(s) $JUDGE_GPUS (pid $!, log $vllm_log)" >&2
    wait_for "$JUDGE_BASE_URL/models" "$!" "$vllm_log" 900 || exit 1
  fi
fi
[[ -n "$JUDGE_BASE_URL" ]] && args+=(--base_url "$JUDGE_BASE_URL")

if [[ "$DRY_RUN" == 1 ]]; then
  run_cmd "$PYTHON" "$ROOT/reward_server.py" "${args[@]}" "$@"
  echo "$JUDGE_URL"
  exit 0
fi
nohup "$PYTHON" "$ROOT/reward_server.py" "${args[@]}" "$@" >"$log_file" 2>&1 &
server_pid=$!
echo "$server_pid" >"$pid_file"
echo "starting judge server (pid $server_pid, log $log_file)" >&2
wait_for "$JUDGE_URL/health" "$server_pid" "$log_file" "$JUDGE_STARTUP_TIMEOUT" || exit 1
echo "judge server ready at $JUDGE_URL; stop it with: kill $server_pid" >&2
echo "$JUDGE_URL"
