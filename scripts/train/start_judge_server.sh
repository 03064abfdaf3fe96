#!/usr/bin/env bash
# Start the judge server (reward_server.py) in the background, wait for /health, print its URL.
#
#   bash scripts/train/start_judge_server.sh                          # lexical judge on 127.0.0.1:8123
#   bash scripts/train/start_judge_server.sh --backend openai         # extra args go to reward_server.py
#   export JUDGE_SERVER_URL=$(bash scripts/train/start_judge_server.sh)
#
# The URL is the only line on stdout; progress goes to stderr, the server's log to $log_file.
# If a judge already answers on that port, it is reused. Stop it: kill "$(cat $pid_file)".
set -euo pipefail

host=${JUDGE_HOST:-127.0.0.1}
port=${JUDGE_PORT:-8123}
startup_timeout_s=${JUDGE_STARTUP_TIMEOUT:-60}

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
python=${PYTHON:-$([ -x "$repo_dir/.venv/bin/python" ] && echo "$repo_dir/.venv/bin/python" || echo python)}
log_dir=${JUDGE_LOG_DIR:-$repo_dir/outputs}
log_file=$log_dir/judge_server_$port.log
pid_file=$log_dir/judge_server_$port.pid
url=http://$host:$port

if curl -sf -m 2 "$url/health" > /dev/null; then
    echo "judge server already running at $url" >&2
    echo "$url"
    exit 0
fi

mkdir -p "$log_dir"
nohup "$python" "$repo_dir/reward_server.py" --host "$host" --port "$port" "$@" > "$log_file" 2>&1 &
server_pid=$!
echo "$server_pid" > "$pid_file"
echo "starting judge server (pid $server_pid, log $log_file)" >&2

for _ in $(seq 1 $((startup_timeout_s * 4))); do
    if curl -sf -m 2 "$url/health" > /dev/null; then
        echo "judge server ready at $url; stop it with: kill $server_pid" >&2
        echo "$url"
        exit 0
    fi
    if ! kill -0 "$server_pid" 2> /dev/null; then
        echo "judge server exited during start-up; last lines of $log_file:" >&2
        tail -n 20 "$log_file" >&2
        exit 1
    fi
    sleep 0.25
done
echo "judge server did not answer $url/health within ${startup_timeout_s}s; see $log_file" >&2
kill "$server_pid" 2> /dev/null || true
exit 1
