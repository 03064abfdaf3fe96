#!/usr/bin/env bash
# Evaluate several conditions of the SQuAD table on one server pair: start the pair
# (start_servers.sh, with the skill vector if SKILL_VECTOR is set), evaluate each condition
# (eval_condition.sh, run JSONs in SQUAD_RESULTS/<condition><RUN_SUFFIX>.json), stop the pair, also
# when a condition fails or the driver is stopped, and wait until its processes have exited (their
# GPUs are free when it returns). Conditions already evaluated are skipped; when all are, no server
# starts.
#
#   CONDITIONS="base passage implications" bash SEAL/general-knowledge/eval_rows.sh
#   SKILL_VECTOR=round2/skill_vector.safetensors ALPHA=0.5 SKILL_NAME="v(K=2)" BASE_MODEL=/models/Qwen2.5-7B \
#     CONDITIONS="implications_skill skill_only" RUN_SUFFIX=_K2_a0.5_post bash SEAL/general-knowledge/eval_rows.sh
#   DRY_RUN=1 CONDITIONS=base bash SEAL/general-knowledge/eval_rows.sh     # print the commands only
# Settings (environment): CONDITIONS (base passage implications), RUN_SUFFIX (empty), TTT_ARGS
# (extra TTT_server.py arguments, e.g. --mask_pads), every setting of start_servers.sh (BASE_MODEL,
# SKILL_VECTOR, ALPHA, SKILL_ORDER, SKILL_NAME, SERVED_MODEL, VLLM_GPUS, TTT_GPU, VLLM_PORT, ZMQ_PORT,
# ...) and of eval_condition.sh (PASSAGES, IMPLICATIONS, SQUAD_RESULTS, K_COMPLETIONS, ...); trailing
# args go to query_server.py for every condition.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/common.sh"
squad_settings
CONDITIONS=${CONDITIONS:-base passage implications}
RUN_SUFFIX=${RUN_SUFFIX:-}
TTT_ARGS=${TTT_ARGS:-}
GK="$ROOT/SEAL/general-knowledge"

todo=()
for condition in $CONDITIONS; do
  [[ -f "$SQUAD_RESULTS/$condition$RUN_SUFFIX.json" ]] || todo+=("$condition")
done
if ((${#todo[@]} == 0)); then
  echo "every condition of '$CONDITIONS' is evaluated (SQUAD_RESULTS/*$RUN_SUFFIX.json); no servers started" >&2
  exit 0
fi

# Every process of the pair (vLLM's server and engine, the TTT server) carries PAST_SERVER_PAIR:
# stopping waits until all have exited, so that the next wave can start on the same GPUs.
export PAST_SERVER_PAIR="$$.$RANDOM"
stop_pair() {
  local rc=$?
  trap - EXIT INT TERM
  STOP=1 bash "$GK/start_servers.sh" >&2 || true
  wait_marked_exit "PAST_SERVER_PAIR=$PAST_SERVER_PAIR" 60
  exit "$rc"
}
# shellcheck disable=SC2086  # TTT_ARGS is a list of words
bash "$GK/start_servers.sh" $TTT_ARGS
[[ "$DRY_RUN" == 1 ]] || { trap stop_pair EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; }
for condition in "${todo[@]}"; do
  CONDITION="$condition" RUN_NAME="$condition$RUN_SUFFIX" bash "$GK/eval_condition.sh" "$@"
done
