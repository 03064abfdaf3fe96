#!/usr/bin/env bash
# PaST on SQuAD knowledge incorporation (paper §5.1.1, on SEAL's protocol), end to end:
#   1 data          the base model as a local dir; the evaluation passages (SQuAD dev, SEAL's 200:
#                   squad_data.py) and their implications (make_implications.py)
#   2 source        K rounds (source_round.sh, in round order), round k on its own SOURCE_N SQuAD
#                   train passages: implications, knowledge SFT -> sft_k, the knowledge gate, GRPO
#                   from sft_k + ALPHA * v_{k-1} with the squad grader's reward, v_k = rl_k - sft_k
#   3 evaluation    every row of the table on TTT server pairs (eval_rows.sh):
#                     base, passage only, implications                   (the plain base model)
#                     implications + ALPHA * v_K (post: PaST's row), skill only
#                     the lambda sweep: the same for every SWEEP_ALPHAS
#                     pre: implications + ALPHA * v_K with the LoRA trained against base + ALPHA * v_K
#                     K=1: implications + ALPHA * v_1, skill only (when K > 1)
#   4 table         SEAL's published rows beside ours (markdown, CSV) and accuracy vs lambda
#                   (results_table.py): SQUAD_RESULTS/table.{md,csv}, SQUAD_RESULTS/lambda.png
#
#   JUDGE_BACKEND=openai JUDGE_MODEL=gpt-4.1 bash SEAL/general-knowledge/run_squad_pipeline.sh   # Qwen2.5-7B, hub data
#   RL_JUDGE_URL=http://127.0.0.1:8124 JUDGE_BACKEND=openai JUDGE_MODEL=gpt-4.1 bash ...   # an open judge for RL
#   DRY_RUN=1 bash SEAL/general-knowledge/run_squad_pipeline.sh     # every command + the composed verl configs
#   bash SEAL/general-knowledge/quickstart.sh                       # the same on a CPU, a tiny model, in minutes
#
# Judges: JUDGE_URL grades the evaluation (GPT-4.1 in SEAL's table); if none answers there,
# JUDGE_BACKEND starts one (scripts/train/start_judge_server.sh, JUDGE_ARGS its extra arguments;
# JUDGE_MODEL defaults to gpt-4.1 for the openai backend), stopped at the end. Another judge may be
# chosen (a cheaper grader, an open model): the pipeline warns, and the table marks its rows "not
# comparable" with SEAL's. RL_JUDGE_URL (default JUDGE_URL) rewards GRPO and grades the gate; it must
# already answer when it differs. The lexical (word-overlap) judge runs only when named.
# GPUs (one node): implications and the gate on the first GPU (vLLM), SFT and GRPO on all GPUs but
# JUDGE_GPUS, the evaluation on EVAL_GPU_PAIRS "vLLM GPU:TTT GPU" pairs, one server pair each
# (default every two GPUs form a pair), the rows' groups spread over the pairs. On a CPU everything
# runs one after the other. NNODES > 1: GRPO spans the nodes as scripts/train/grpo.sh does (a Ray
# cluster named by RAY_ADDRESS, N_GPUS_PER_NODE); everything else runs on this node.
# Every stage skips work whose complete outputs exist, so a rerun after a failure or Ctrl-C
# continues where it stopped (interrupted SFT/GRPO runs resume from their last checkpoint,
# interrupted evaluations after their last passage). Everything this script starts (judge, Ray,
# vLLM and TTT servers) is stopped when it exits. It takes no arguments; settings come from the
# environment ("suggested": the paper does not publish it, the default is this project's choice):
#   MODEL (Qwen/Qwen2.5-7B), K (2 rounds, suggested), SOURCE_N (50 passages per round, suggested:
#   SEAL's), SOURCE_INPUT (rajpurkar/squad), SOURCE_SPLIT (train), SOURCE_SEED (42), SOURCE_START (0),
#   ALPHA (1.0, suggested; each round's start and PaST's row), SWEEP_ALPHAS ("0.5 1.5", suggested),
#   the evaluation passages (scripts/common.sh squad_settings: SQUAD_INPUT, SQUAD_SPLIT validation,
#   SQUAD_SEED 42, SQUAD_START 0, SQUAD_N 200), GEN_COMPLETIONS (1; SEAL generated 5 and evaluated
#   the first), K_COMPLETIONS (1), EVAL_TIMES (1), MAX_SEQ_LENGTH (2048), EVAL_ARGS (extra
#   query_server.py arguments), TTT_ARGS (extra TTT_server.py arguments), EVAL_GPU_PAIRS, RL_JUDGE_URL,
#   RL_JUDGE_TOKEN_FILE, RL_JUDGE_BACKEND, GATE_MARGIN, GATE_OVERRIDE, SERVED_DTYPE (empty: base + lambda * v
#   served in the base's dtype; float32: written and served in float32, see start_servers.sh), the prompts (SEAL's by default:
#   PROMPT_FILE, a file with the implications prompt; ANSWER_TEMPLATE, a file with the answer prompt that
#   the GRPO data, the gate and the evaluation all use) and every setting of
#   source_round.sh (SFT and GRPO), start_servers.sh and eval_condition.sh by the same names.
#   Outputs: DATA_ROOT/squad (passages, implications), CKPT_ROOT/squad_rounds (ROUNDS_DIR),
#   CKPT_ROOT/seal_served (base + lambda * v models), RESULTS_DIR/squad (SQUAD_RESULTS).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/common.sh"

# --- what to run
MODEL=${MODEL:-Qwen/Qwen2.5-7B}
K=${K:-2}
SOURCE_N=${SOURCE_N:-50}
ALPHA=${ALPHA:-1.0}
SWEEP_ALPHAS=${SWEEP_ALPHAS:-0.5 1.5}
GEN_COMPLETIONS=${GEN_COMPLETIONS:-1}
K_COMPLETIONS=${K_COMPLETIONS:-1}
EVAL_ARGS=${EVAL_ARGS:-}
# --- judges
JUDGE_BACKEND=${JUDGE_BACKEND:-}
squad_judge_settings
squad_serving_settings
RL_JUDGE_URL=${RL_JUDGE_URL:-$JUDGE_URL}
RL_JUDGE_TOKEN_FILE=${RL_JUDGE_TOKEN_FILE:-$JUDGE_TOKEN_FILE}
RL_JUDGE_BACKEND=${RL_JUDGE_BACKEND:-$JUDGE_BACKEND}
# --- where things go
DATA_ROOT=${DATA_ROOT:-$ROOT/data}
CKPT_ROOT=${CKPT_ROOT:-$ROOT/checkpoints}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/eval_results}
ROUNDS_DIR=${ROUNDS_DIR:-$CKPT_ROOT/squad_rounds}
# The base model on disk (inherit_weight.py and the served base + lambda * v models read it): MODEL
# itself, or a download of it (stage 1). It writes its own implications.
if [[ -d "$MODEL" ]]; then base="$MODEL"; else base="$CKPT_ROOT/base/$(basename "$MODEL")"; fi
GENERATOR="$base"
squad_settings
squad_generation_settings
squad_answer_settings
export DATA_ROOT CKPT_ROOT RESULTS_DIR LOG_DIR ROUNDS_DIR ALPHA GEN_COMPLETIONS K_COMPLETIONS JUDGE_URL
export GENERATOR PASSAGES IMPLICATIONS SQUAD_RESULTS   # the evaluation drivers read these

(($# == 0)) || usage_error "takes no arguments (settings come from the environment)"
[[ "$K" =~ ^[1-9][0-9]*$ ]] || usage_error "K must be a positive number of rounds, got '$K'"
for a in $ALPHA $SWEEP_ALPHAS; do
  [[ "$a" =~ ^[0-9]*\.?[0-9]+$ ]] || usage_error "ALPHA and SWEEP_ALPHAS must be numbers, got '$a'"
done
if [[ -z "${EVAL_GPU_PAIRS:-}" ]]; then
  if [[ "$DEVICE" == gpu ]]; then
    read -r -a gpus <<< "${TRAINING_GPU_IDS//,/ }"
    EVAL_GPU_PAIRS=""
    for ((i = 0; i + 1 < ${#gpus[@]}; i += 2)); do EVAL_GPU_PAIRS+="${gpus[i]}:${gpus[i + 1]} "; done
    [[ -n "$EVAL_GPU_PAIRS" ]] || usage_error "the evaluation needs two GPUs (vLLM, TTT trainer); set EVAL_GPU_PAIRS"
  else
    EVAL_GPU_PAIRS="cpu:cpu"
  fi
fi
read -r -a pairs <<< "$EVAL_GPU_PAIRS"
for pair in "${pairs[@]}"; do [[ "$pair" == *:* ]] || usage_error "EVAL_GPU_PAIRS lists VLLM_GPU:TTT_GPU pairs, got '$pair'"; done
check_judge_for_nodes
check_ray_for_nodes

t0=$SECONDS
stage() { echo; echo "== [$(date +%H:%M:%S), +$((SECONDS - t0)) s] $*"; }
track_run   # everything started from here on is stopped on exit (scripts/common.sh)
ensure_judge "SQuAD pipeline"
if [[ "$RL_JUDGE_URL" != "$JUDGE_URL" ]]; then
  JUDGE_URL="$RL_JUDGE_URL" JUDGE_TOKEN_FILE="$RL_JUDGE_TOKEN_FILE" JUDGE_BACKEND="$RL_JUDGE_BACKEND" check_judge "GRPO rewards" >/dev/null
fi
if [[ -n "${JUDGE_DESCRIPTION:-}" && ! "$JUDGE_DESCRIPTION" =~ ^openai\ gpt-4\.1(-[0-9]{4}-[0-9]{2}-[0-9]{2})?$ ]]; then
  echo "WARNING: the evaluation is graded by '$JUDGE_DESCRIPTION', not SEAL's GPT-4.1 (JUDGE_BACKEND=openai" \
    "JUDGE_MODEL=gpt-4.1): the table marks every row of this run 'not comparable' with SEAL's published rows" >&2
fi
echo "judge: $JUDGE_URL (backend ${JUDGE_DESCRIPTION:-not checked under DRY_RUN}); RL judge: $RL_JUDGE_URL;" \
  "model: $MODEL; K=$K rounds x $SOURCE_N source passages; ALPHA=$ALPHA, sweep: $SWEEP_ALPHAS; evaluation pairs: $EVAL_GPU_PAIRS"

stage "1/4 data: the base model, the evaluation passages and their implications"
[[ -e "$base/config.json" ]] || run_python "$PYTHON" -c \
  'import sys; from huggingface_hub import snapshot_download; snapshot_download(sys.argv[1], local_dir=sys.argv[2])' \
  "$MODEL" "$base"
[[ -f "$PASSAGES" ]] || run_python "$PYTHON" "$ROOT/SEAL/general-knowledge/squad_data.py" --input "$SQUAD_INPUT" \
  --split "$SQUAD_SPLIT" --seed "$SQUAD_SEED" --start "$SQUAD_START" --n "$SQUAD_N" --output "$PASSAGES"
[[ -f "$IMPLICATIONS" ]] || run_python "$PYTHON" "$ROOT/SEAL/general-knowledge/make_implications.py" --input "$PASSAGES" \
  --output "$IMPLICATIONS" "${implications_args[@]}"

stage "2/4 source: $K round(s) of knowledge SFT, gate, GRPO -> ${ROUNDS_DIR#"$ROOT"/}"
for ((k = 1; k <= K; k++)); do
  if [[ -f "$ROUNDS_DIR/round$k/skill_vector.safetensors" ]]; then
    echo "round $k: done ($ROUNDS_DIR/round$k/skill_vector.safetensors)"
    continue
  fi
  run env ROUND="$k" MODEL="$base" EXCLUDE="$PASSAGES" SOURCE_N="$SOURCE_N" RESUME=1 JUDGE_URL="$RL_JUDGE_URL" \
    JUDGE_TOKEN_FILE="$RL_JUDGE_TOKEN_FILE" JUDGE_BACKEND="$RL_JUDGE_BACKEND" \
    bash "$ROOT/SEAL/general-knowledge/source_round.sh"
done

stage "3/4 evaluation: every row on pairs $EVAL_GPU_PAIRS -> ${SQUAD_RESULTS#"$ROOT"/}"
# One group per server pair: "vector alpha order name conditions..." (run JSON <condition>_K<k>_a<alpha>_<order>).
vector() { echo "$ROUNDS_DIR/round$1/skill_vector.safetensors"; }
groups=("- - - - base passage implications" "$(vector "$K") $ALPHA post v(K=$K) implications_skill skill_only")
for a in $SWEEP_ALPHAS; do
  [[ "$a" == "$ALPHA" ]] || groups+=("$(vector "$K") $a post v(K=$K) implications_skill skill_only")
done
groups+=("$(vector "$K") $ALPHA pre v(K=$K) implications_skill")
((K == 1)) || groups+=("$(vector 1) $ALPHA post v(K=1) implications_skill skill_only")
served() { echo "$CKPT_ROOT/seal_served/$(basename "$(dirname "$1")")_alpha$2${SERVED_DTYPE:+_$SERVED_DTYPE}"; }   # base + alpha * vector

# The served models first, one at a time (groups of one model run side by side).
served_base "$base" "$CKPT_ROOT/seal_served"
declare -A written=()
for group in "${groups[@]:1}"; do
  read -r vec alpha _ <<< "$group"
  out="$(served "$vec" "$alpha")"
  [[ -e "$out/config.json" || -n "${written[$out]:-}" ]] || run_python "$PYTHON" "$ROOT/inherit_weight.py" \
    --skill_vector "$vec" --alpha "$alpha" --target_models "$SERVED_BASE" --output_dirs "$out"
  written[$out]=1
done

# eval_group INDEX PAIR GROUP: the group's conditions on the server pair PAIR (ports by INDEX).
eval_group() {
  local index="$1" pair="$2" vec alpha order name conditions settings
  read -r vec alpha order name conditions <<< "$3"
  settings=(VLLM_GPUS="${pair%%:*}" TTT_GPU="${pair##*:}" VLLM_PORT=$((${VLLM_PORT:-8001} + index))
    ZMQ_PORT=$((${ZMQ_PORT:-5555} + index)) BASE_MODEL="$base" START_JUDGE=0 CONDITIONS="$conditions")
  if [[ "$vec" != - ]]; then
    local k="${vec%/skill_vector.safetensors}"
    settings+=(SKILL_VECTOR="$vec" ALPHA="$alpha" SKILL_ORDER="$order" SKILL_NAME="$name"
      SERVED_MODEL="$(served "$vec" "$alpha")" RUN_SUFFIX="_K${k##*/round}_a${alpha}_$order")
  fi
  local cmd=(env "${settings[@]}" bash "$ROOT/SEAL/general-knowledge/eval_rows.sh")
  # shellcheck disable=SC2086  # EVAL_ARGS is a list of words
  if [[ "$DRY_RUN" == 1 ]]; then echo "DRY_RUN: $(show_cmd "${cmd[@]}" $EVAL_ARGS)"; else run_bg "${cmd[@]}" $EVAL_ARGS; fi
}
# In waves of ${#pairs[@]} groups: each pair serves one group, then all are awaited.
for ((g = 0; g < ${#groups[@]}; g += ${#pairs[@]})); do
  for ((p = 0; p < ${#pairs[@]} && g + p < ${#groups[@]}; p++)); do
    eval_group "$p" "${pairs[p]}" "${groups[g + p]}"
  done
  wait_bg
done

stage "4/4 table -> ${SQUAD_RESULTS#"$ROOT"/}/table.md, table.csv, lambda.png"
run_python "$PYTHON" "$ROOT/SEAL/general-knowledge/results_table.py" "$SQUAD_RESULTS" --output "$SQUAD_RESULTS/table.md" \
  --csv "$SQUAD_RESULTS/table.csv" --plot "$SQUAD_RESULTS/lambda.png"
echo
echo "artifacts: passages $PASSAGES, implications $IMPLICATIONS | rounds $ROUNDS_DIR/round{k}/ (stage1/final = sft_k," \
  "gate.json, grpo/final = rl_k, skill_vector.safetensors = v_k) | served models $CKPT_ROOT/seal_served |" \
  "run JSONs and table $SQUAD_RESULTS"
echo "pipeline finished in $((SECONDS - t0)) s"
