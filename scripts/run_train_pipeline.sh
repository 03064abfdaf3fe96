#!/usr/bin/env bash
# PaST end to end for a set of source and target LooGLE passages:
#   1 data      eval sets, stage-1/stage-2 SFT data for every passage, RL prompts for the sources
#   2 SFT       stage 1 then stage 2 for every passage (scripts/train/sft.sh)
#   3 GRPO      on the source passages' prompts, from the first source's stage-2 model (grpo.sh)
#   4 skill     skill vector = rl - stage2(source)            (calc_delta_and_save.py)
#   5 inherit   stage2(target) + ALPHA * skill, all targets in one pass, then evaluate them
#               (scripts/merge_and_eval.sh)
#   6 eval      base, stage-2-only and passage-in-context on each target's LooGLE QA
#   7 results   one table (scripts/show_results.py)
#
#   bash scripts/run_train_pipeline.sh                                    # settings below
#   SOURCE_PASSAGES=0 TARGET_PASSAGES=1-4 LOOGLE=data/loogle/shortdep_qa.jsonl bash scripts/run_train_pipeline.sh
#
# Every stage skips work whose complete outputs exist, so a rerun after a failure or Ctrl-C
# continues where it stopped (an interrupted SFT or GRPO run resumes from its last checkpoint).
# A judge server is started on JUDGE_URL's port if none answers there, and stopped on exit,
# together with everything else this script started (Ray and vLLM included).
# Every setting below can be overridden from the environment. scripts/quickstart.sh runs this
# on the shipped demo corpus with a tiny model on a CPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# --- what to run on
LOOGLE=${LOOGLE:-$ROOT/data/loogle/shortdep_qa.jsonl}   # LooGLE jsonl (input, title, qa_pairs)
MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}                 # base model: SFT starts here
SOURCE_PASSAGES=${SOURCE_PASSAGES:-0}                    # GRPO sources (N, N-M or a comma list)
TARGET_PASSAGES=${TARGET_PASSAGES:-1-4}                  # skill-transfer targets, evaluated
ALPHA=${ALPHA:-1.0}                                      # target + ALPHA * skill
# --- data generation
GENERATOR=${GENERATOR:-$MODEL}                           # writes summaries and QA pairs
GEN_BACKEND=${GEN_BACKEND:-}                             # vllm | hf | openai; empty: vllm on GPU, hf on CPU
GEN_BASE_URL=${GEN_BASE_URL:-}                           # openai backend: OpenAI-compatible URL
CHUNK_TOKENS=${CHUNK_TOKENS:-512}
OVERLAP_TOKENS=${OVERLAP_TOKENS:-64}
MAX_CHUNKS=${MAX_CHUNKS:-0}                              # 0: every chunk
QUESTIONS_PER_CHUNK=${QUESTIONS_PER_CHUNK:-5}
SUMMARY_MAX_NEW_TOKENS=${SUMMARY_MAX_NEW_TOKENS:-512}
QA_MAX_NEW_TOKENS=${QA_MAX_NEW_TOKENS:-1024}
PROPOSER=${PROPOSER:-json}                               # json | two_step
RL_PROMPTS=${RL_PROMPTS:-generated}                      # generated (QA from the generator) | loogle (the sources' own LooGLE QA)
# --- training (each driver has more settings at its top)
SFT_EPOCHS=${SFT_EPOCHS:-3}
SFT_LR=${SFT_LR:-1e-5}
SFT_BATCH_SIZE=${SFT_BATCH_SIZE:-32}
SFT_MAX_LENGTH=${SFT_MAX_LENGTH:-4096}
GRPO_STEPS=${GRPO_STEPS:-null}                           # null: GRPO_EPOCHS decide
GRPO_EPOCHS=${GRPO_EPOCHS:-5}
GRPO_BATCH_SIZE=${GRPO_BATCH_SIZE:-32}
ROLLOUT_N=${ROLLOUT_N:-8}
GRPO_LR=${GRPO_LR:-1e-6}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-512}
# --- evaluation
N_RUNS=${N_RUNS:-3}
EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-300}          # LooGLE's budget for short-dependency QA
EVAL_BACKEND=${EVAL_BACKEND:-}                           # empty: vllm on GPU, hf on CPU
MAX_CONTEXT_TOKENS=${MAX_CONTEXT_TOKENS:-}               # passage-in-context window; empty: the model's
JUDGE_URL=${JUDGE_URL:-${JUDGE_SERVER_URL:-http://127.0.0.1:8123}}
JUDGE_ARGS=${JUDGE_ARGS:-}                               # extra reward_server.py args, e.g. "--backend openai"
# --- where things go
DATA_ROOT=${DATA_ROOT:-$ROOT/data}
CKPT_ROOT=${CKPT_ROOT:-$ROOT/checkpoints}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/eval_results}
LOG_DIR=${LOG_DIR:-$ROOT/outputs}
GPUS=${CUDA_VISIBLE_DEVICES:-0}

PY=${PYTHON:-${PAST_VENV:-$ROOT/.venv}/bin/python}
[[ -x "$PY" ]] || PY=python3
export PYTHON="$PY"

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ "${1:-}" == -h || "${1:-}" == --help ]] && usage
[[ $# -eq 0 ]] || { echo "run_train_pipeline.sh takes no arguments (settings come from the environment)" >&2; usage; }
[[ -f "$LOOGLE" ]] || { echo "LOOGLE=$LOOGLE does not exist: point it at a LooGLE jsonl (input, title, qa_pairs)" >&2; exit 2; }
case "$RL_PROMPTS" in generated|loogle) ;; *) echo "RL_PROMPTS must be generated or loogle, got '$RL_PROMPTS'" >&2; exit 2 ;; esac
source "$ROOT/scripts/passages.sh"
source_ids="$(expand_passages "$SOURCE_PASSAGES")"
target_ids="$(expand_passages "$TARGET_PASSAGES")"
read -r -a sources <<< "$source_ids"
read -r -a targets <<< "$target_ids"
for t in "${targets[@]}"; do
  for s in "${sources[@]}"; do
    [[ "$t" != "$s" ]] || { echo "passage $t is both a source and a target: the targets' LooGLE QA must stay held out" >&2; exit 2; }
  done
done
all_passages="$SOURCE_PASSAGES,$TARGET_PASSAGES"
source_id=${sources[0]}

t0=$SECONDS
stage() { echo; echo "== [$(date +%H:%M:%S), +$((SECONDS - t0)) s] $*"; }

# --- everything started here is stopped on exit (also on Ctrl-C, kill and errors)
mkdir -p "$LOG_DIR"
started_judge_pid=""
child_pid=""
# Every process this run starts inherits this marker, also those that leave the stage's process
# group (Ray's daemons and workers, vLLM's engine), so that cleanup can find them all.
export PAST_PIPELINE_RUN="$$.$RANDOM"
# Sets run_pids to the processes carrying the marker (not this shell; run in this shell, so
# that no helper process of the search finds itself).
processes_of_this_run() {
  local environ pid
  run_pids=()
  for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}; pid=${pid%/environ}
    [[ "$pid" != "$$" ]] || continue
    grep -qzx "PAST_PIPELINE_RUN=$PAST_PIPELINE_RUN" "$environ" 2>/dev/null && run_pids+=("$pid")
  done
  return 0
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$child_pid" ]] && kill -0 "$child_pid" 2>/dev/null; then
    echo "stopping the running stage (process group $child_pid)" >&2
    kill -TERM -- "-$child_pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 -- "-$child_pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$child_pid" 2>/dev/null || true
  fi
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
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run CMD...: run a stage's command in its own process group, so that cleanup can stop all of
# it (verl's Ray workers, vLLM's engine processes) and a signal reaches this script at once.
run() {
  echo "+ $*" >&2
  setsid "$@" &
  child_pid=$!
  local rc=0
  wait "$child_pid" || rc=$?
  child_pid=""
  return "$rc"
}

if ! curl -sf -m 3 "$JUDGE_URL/health" >/dev/null; then
  port=${JUDGE_URL##*:}; port=${port%%/*}
  # shellcheck disable=SC2086  # JUDGE_ARGS is a list of words
  JUDGE_PORT=$port JUDGE_LOG_DIR=$LOG_DIR bash "$ROOT/scripts/train/start_judge_server.sh" $JUDGE_ARGS >/dev/null
  started_judge_pid=$(cat "$LOG_DIR/judge_server_$port.pid")
fi
echo "judge: $JUDGE_URL   sources: ${sources[*]}   targets: ${targets[*]}   model: $MODEL"

stage "1/7 data: eval sets, SFT data for passages ${all_passages}, RL prompts for ${SOURCE_PASSAGES}"
gen_env=(INPUT="$LOOGLE" DATA_DIR="$DATA_ROOT" MODEL="$GENERATOR" CHUNK_TOKENS="$CHUNK_TOKENS" OVERLAP_TOKENS="$OVERLAP_TOKENS"
  MAX_CHUNKS="$MAX_CHUNKS" QUESTIONS_PER_CHUNK="$QUESTIONS_PER_CHUNK" PROPOSER="$PROPOSER"
  SUMMARY_MAX_NEW_TOKENS="$SUMMARY_MAX_NEW_TOKENS" QA_MAX_NEW_TOKENS="$QA_MAX_NEW_TOKENS" BASE_URL="$GEN_BASE_URL")
if [[ -n "$GEN_BACKEND" ]]; then
  gen_env+=(BACKEND="$GEN_BACKEND")
elif ! { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }; then
  gen_env+=(BACKEND=hf)
fi
run env INPUT="$LOOGLE" DATA_DIR="$DATA_ROOT" bash "$ROOT/scripts/gen_data/process_loogle_eval.sh" "$all_passages"
run env "${gen_env[@]}" bash "$ROOT/scripts/gen_data/gen_sft_data.sh" "$GPUS" "$all_passages"
if [[ "$RL_PROMPTS" == generated ]]; then
  run env "${gen_env[@]}" bash "$ROOT/scripts/gen_data/gen_rl_data.sh" "$GPUS" "$SOURCE_PASSAGES"
  rl_file=grpo.parquet
else
  rl_file=eval.parquet   # the sources' own LooGLE QA; sources are never evaluated
fi
if [[ ${#sources[@]} -eq 1 ]]; then
  rl_train_file="$DATA_ROOT/passage$source_id/$rl_file"
else
  rl_train_file="$DATA_ROOT/mixed/${rl_file%.parquet}_sources_${SOURCE_PASSAGES//,/_}.parquet"
  [[ -f "$rl_train_file" ]] || run "$PY" -m prepare_data.mix_data --data_dir "$DATA_ROOT" \
    --passages "$SOURCE_PASSAGES" --file "$rl_file" --output "$rl_train_file"
fi

stage "2/7 SFT: stage 1 and stage 2 for passages ${all_passages}"
for p in "${sources[@]}" "${targets[@]}"; do
  ckpt="$CKPT_ROOT/passage$p"
  if [[ -e "$ckpt/stage2/final/config.json" ]]; then
    echo "passage $p: SFT done ($ckpt/stage2/final)"
    continue
  fi
  stages="1 2"
  [[ -e "$ckpt/stage1/final/config.json" ]] && stages="2"
  # RESUME=1: a run interrupted earlier continues from its last checkpoint.
  run env passage_id="$p" STAGES="$stages" RESUME=1 BASE_MODEL="$MODEL" DATA_DIR="$DATA_ROOT/passage$p" \
    CKPT_DIR="$ckpt" STAGE1_EPOCHS="$SFT_EPOCHS" STAGE2_EPOCHS="$SFT_EPOCHS" LR="$SFT_LR" \
    TRAIN_BATCH_SIZE="$SFT_BATCH_SIZE" MAX_LENGTH="$SFT_MAX_LENGTH" \
    bash "$ROOT/scripts/train/sft.sh"
done

stage "3/7 GRPO on ${rl_train_file#$ROOT/} from passage $source_id's stage-2 model"
grpo_dir="$CKPT_ROOT/passage$source_id/grpo"
if [[ -e "$grpo_dir/final/config.json" ]]; then
  echo "GRPO done ($grpo_dir/final)"
else
  run env passage_id="$source_id" RESUME=1 DATA_DIR="$DATA_ROOT/passage$source_id" \
    CKPT_DIR="$CKPT_ROOT/passage$source_id" TRAIN_FILES="$rl_train_file" JUDGE_URL="$JUDGE_URL" \
    TOTAL_STEPS="$GRPO_STEPS" TOTAL_EPOCHS="$GRPO_EPOCHS" TRAIN_BATCH_SIZE="$GRPO_BATCH_SIZE" \
    ROLLOUT_N="$ROLLOUT_N" LR="$GRPO_LR" MAX_RESPONSE_LENGTH="$MAX_RESPONSE_LENGTH" \
    bash "$ROOT/scripts/train/grpo.sh"
fi

skill_vector="$CKPT_ROOT/skill_vectors/sources_${SOURCE_PASSAGES//,/_}.safetensors"
stage "4/7 skill vector = rl - stage2(passage $source_id) -> ${skill_vector#$ROOT/}"
if [[ -f "$skill_vector" ]]; then
  echo "skill vector exists"
else
  run "$PY" "$ROOT/calc_delta_and_save.py" --grpo_model "$grpo_dir/final" \
    --base_model "$CKPT_ROOT/passage$source_id/stage2/final" --output "$skill_vector"
fi

stage "5/7 inherit stage2(target) + $ALPHA * skill for passages ${TARGET_PASSAGES}, and evaluate"
run env SKILL_VECTOR="$skill_vector" TARGET_PASSAGES="$TARGET_PASSAGES" ALPHA="$ALPHA" OUTPUT_TAG=inherited \
  N_RUNS="$N_RUNS" EVAL_MAX_NEW_TOKENS="$EVAL_MAX_NEW_TOKENS" CKPT_ROOT="$CKPT_ROOT" DATA_ROOT="$DATA_ROOT" \
  RESULTS_DIR="$RESULTS_DIR" JUDGE_URL="$JUDGE_URL" BACKEND="$EVAL_BACKEND" bash "$ROOT/scripts/merge_and_eval.sh"

stage "6/7 evaluation of base, stage-2-only and passage-in-context on the targets' LooGLE QA ($N_RUNS runs each)"
eval_env=(DATA_DIR="$DATA_ROOT" RESULTS_DIR="$RESULTS_DIR" JUDGE_URL="$JUDGE_URL" START_JUDGE=0
  N_RUNS="$N_RUNS" BACKEND="$EVAL_BACKEND")
for p in "${targets[@]}"; do
  for variant in base stage2 context; do
    case "$variant" in
      base) model_path="$MODEL" tag=base ;;
      stage2) model_path="$CKPT_ROOT/passage$p/stage2/final" tag=stage2 ;;
      context) model_path="$MODEL" tag=base-context ;;
    esac
    if [[ -f "$RESULTS_DIR/$tag/passage$p/test_results.json" ]]; then
      echo "passage $p, $tag: evaluated"
      continue
    fi
    if [[ "$variant" == context ]]; then
      run env "${eval_env[@]}" passage_id="$p" MODEL_PATH="$model_path" MODEL_TAG="$tag" LOOGLE_FILE="$LOOGLE" \
        MAX_CONTEXT_TOKENS="$MAX_CONTEXT_TOKENS" bash "$ROOT/scripts/eval_with_context.sh" --max_new_tokens "$EVAL_MAX_NEW_TOKENS"
    else
      run env "${eval_env[@]}" passage_id="$p" MODEL_PATH="$model_path" MODEL_TAG="$tag" \
        bash "$ROOT/scripts/eval/eval_sft.sh" --max_new_tokens "$EVAL_MAX_NEW_TOKENS"
    fi
  done
done

stage "7/7 results"
run "$PY" "$ROOT/scripts/show_results.py" --results_dir "$RESULTS_DIR" \
  --variants base stage2 inherited base-context --output "$RESULTS_DIR/results.md" --csv "$RESULTS_DIR/results.csv"
echo
echo "artifacts: data $DATA_ROOT/passage{N}/ | SFT $CKPT_ROOT/passage{N}/stage{1,2}/final |" \
  "GRPO $grpo_dir/final | skill vector $skill_vector | inherited $CKPT_ROOT/inherited/passage{N} |" \
  "eval $RESULTS_DIR/<variant>/passage{N}/test_results.json | table $RESULTS_DIR/results.md"
echo "pipeline finished in $((SECONDS - t0)) s"
