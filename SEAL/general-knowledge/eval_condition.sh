#!/usr/bin/env bash
# Evaluate one condition of the SQuAD table through a running TTT server (start_servers.sh):
# query_server.py over the passages, a run JSON in SEAL's format in SQUAD_RESULTS/<RUN_NAME>.json.
#
#   CONDITION=base bash SEAL/general-knowledge/eval_condition.sh           # no adaptation
#   CONDITION=passage bash SEAL/general-knowledge/eval_condition.sh        # TTT on the passage alone
#   CONDITION=implications bash SEAL/general-knowledge/eval_condition.sh   # TTT on the base model's implications
#   CONDITION=implications_skill ZMQ_PORT=5556 RUN_NAME=implications_skill_a1.0 bash ...   # servers with SKILL_VECTOR
#   bash SEAL/general-knowledge/eval_condition.sh --eval_times 3           # args go to query_server.py
# CONDITION: base | passage | implications | skill_only | implications_skill; the last two need
# servers started with SKILL_VECTOR (query_server.py checks what the server serves). A finished
# run is not redone (remove it, or pass --overwrite); an interrupted one resumes.
# Settings (environment): CONDITION (implications), the data (scripts/common.sh, squad_settings:
# PASSAGES, IMPLICATIONS, GENERATOR, SQUAD_RESULTS), RUN_NAME (CONDITION), N_ARTICLES (0 = all),
# K_COMPLETIONS 1, EVAL_TIMES 1, TTT_SEED 0, ZMQ_PORT 5555, SHUTDOWN 0 (1: stop the TTT server after).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/common.sh"
squad_settings
CONDITION=${CONDITION:-implications}
RUN_NAME=${RUN_NAME:-$CONDITION}
N_ARTICLES=${N_ARTICLES:-0}
K_COMPLETIONS=${K_COMPLETIONS:-1}
EVAL_TIMES=${EVAL_TIMES:-1}
TTT_SEED=${TTT_SEED:-0}
ZMQ_PORT=${ZMQ_PORT:-5555}
SHUTDOWN=${SHUTDOWN:-0}
case "$CONDITION" in
  base | passage | skill_only) dataset="$PASSAGES" ;;
  implications | implications_skill) dataset="$IMPLICATIONS" ;;
  *) usage_error "CONDITION must be base, passage, implications, skill_only or implications_skill, got '$CONDITION'" ;;
esac
output="$SQUAD_RESULTS/$RUN_NAME.json"
if [[ -f "$output" && " $* " != *" --overwrite "* ]]; then
  echo "$output exists (pass --overwrite to redo it)" >&2
  exit 0
fi
[[ "$DRY_RUN" == 1 || -f "$dataset" ]] || usage_error "$dataset not found: make it with make_implications.sh" \
  "(it selects the passages, then writes their implications)"
cmd=("$PYTHON" "$ROOT/SEAL/general-knowledge/query_server.py" --condition "$CONDITION" --dataset "$dataset"
  --output "$output" --exp_name "$RUN_NAME" --n_articles "$N_ARTICLES" --k_completions "$K_COMPLETIONS"
  --eval_times "$EVAL_TIMES" --seed "$TTT_SEED" --zmq_port "$ZMQ_PORT")
[[ "$SHUTDOWN" != 1 ]] || cmd+=(--shutdown)
run_cmd "${cmd[@]}" "$@"
