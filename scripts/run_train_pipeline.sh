#!/usr/bin/env bash
# PaST end to end for a set of source and target LooGLE passages:
#   1 data      eval sets, stage-1/stage-2 SFT data for every passage, RL prompts for the sources
#   2 SFT       stage 1 then stage 2 for every passage (scripts/train/sft.sh)
#   3 GRPO      one source: GRPO from its stage-2 model (grpo.sh). Several: iterative skill
#               refinement, round k on source k from stage2(s_k) + ALPHA * skill_{k-1} (grpo_round10.sh)
#   4 skill     skill vector = rl - stage2(source) (calc_delta_and_save.py; several sources: the last round's)
#   5 inherit   stage2(target) + ALPHA * skill, all targets in one pass, then evaluate them
#               (scripts/merge_and_eval.sh); CONTROLS=1 adds two controls the same way: a random
#               vector with the skill's per-tensor norms (analysis/random_vector.py), and -ALPHA
#   6 eval      base, stage-2-only and passage-in-context on each target's LooGLE QA
#   7 results   one table (scripts/show_results.py) and the GRPO reward per step (analysis/reward_curve.py)
#
#   JUDGE_BACKEND=openai bash scripts/run_train_pipeline.sh              # settings below
#   SOURCE_PASSAGES=0,5,9 TARGET_PASSAGES=1-4 LOOGLE=data/loogle/shortdep_qa.jsonl JUDGE_BACKEND=openai bash ...
#   DRY_RUN=1 ... bash scripts/run_train_pipeline.sh                     # checks + every stage's commands
#
# Before any stage it needs a judge for GRPO and evaluation: one that answers at JUDGE_URL, or
# JUDGE_BACKEND (openai | vllm | lexical | exact_match) to start one (scripts/train/start_judge_server.sh, with
# JUDGE_ARGS as its extra arguments). Without one it stops: the lexical (word-overlap) judge runs
# only when named. It prints the disk the run will write (from the model's parameter count) and
# refuses when the free space is clearly short (DISK_CHECK=0 skips that).
# Every stage skips work whose complete outputs exist, so a rerun after a failure or Ctrl-C
# continues where it stopped (an interrupted SFT or GRPO run resumes from its last checkpoint).
# Several nodes (NNODES > 1, N_GPUS_PER_NODE, a Ray cluster up and named by RAY_ADDRESS, MASTER_ADDR
# the head's address; see scripts/train/grpo.sh --help): GRPO spans them,
# the judge binds the head's address with a token (see scripts/train/grpo.sh), SFT and evaluation
# run on this node. Everything this script started (judge, Ray, vLLM) is stopped on exit. Settings below, and
# every setting of sft.sh, grpo.sh, the data and evaluation drivers by the same names, come from
# the environment. scripts/quickstart.sh runs this on the shipped demo corpus on a CPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# --- what to run on
LOOGLE=${LOOGLE:-$ROOT/data/loogle/shortdep_qa.jsonl}   # LooGLE jsonl (input, title, qa_pairs)
MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}                 # base model: SFT starts here
SOURCE_PASSAGES=${SOURCE_PASSAGES:-0}                    # GRPO sources (N, N-M or a comma list; in round order)
TARGET_PASSAGES=${TARGET_PASSAGES:-1-4}                  # skill-transfer targets, evaluated
ALPHA=${ALPHA:-1.0}                                      # target + ALPHA * skill (and each round's start)
GENERATOR=${GENERATOR:-$MODEL}                           # data generation (see gen_sft_data.sh --help)
RL_PROMPTS=${RL_PROMPTS:-generated}                      # generated (QA from the generator) | loogle (the sources' own LooGLE QA)
CONTROLS=${CONTROLS:-0}                                  # 1: also evaluate the random-vector and -ALPHA controls
# --- the judge
JUDGE_BACKEND=${JUDGE_BACKEND:-}                         # openai | vllm | lexical | exact_match: start this judge if none answers
JUDGE_ARGS=${JUDGE_ARGS:-}                               # extra reward_server.py arguments
# --- where things go
DATA_ROOT=${DATA_ROOT:-$ROOT/data}
CKPT_ROOT=${CKPT_ROOT:-$ROOT/checkpoints}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/eval_results}
DISK_CHECK=${DISK_CHECK:-1}                              # 0: do not refuse on too little free disk
export LOOGLE MODEL ALPHA GENERATOR RL_PROMPTS JUDGE_BACKEND DATA_ROOT CKPT_ROOT RESULTS_DIR LOG_DIR JUDGE_URL

(($# == 0)) || usage_error "takes no arguments (settings come from the environment)"
[[ -f "$LOOGLE" ]] || usage_error "LOOGLE=$LOOGLE does not exist: point it at a LooGLE jsonl (input, title, qa_pairs)"
case "$RL_PROMPTS" in generated | loogle) ;; *) usage_error "RL_PROMPTS must be generated or loogle, got '$RL_PROMPTS'" ;; esac
[[ "$CONTROLS" == 0 || "$CONTROLS" == 1 ]] || usage_error "CONTROLS must be 0 or 1, got '$CONTROLS'"
ids="$(expand_passages "$SOURCE_PASSAGES")" || exit 2
read -r -a sources <<< "$ids"
ids="$(expand_passages "$TARGET_PASSAGES")" || exit 2
read -r -a targets <<< "$ids"
for t in "${targets[@]}"; do
  for s in "${sources[@]}"; do
    [[ "$t" != "$s" ]] || usage_error "passage $t is both a source and a target: the targets' LooGLE QA must stay held out"
  done
done
[[ "$(printf '%s\n' "${sources[@]}" | sort -u | wc -l)" == "${#sources[@]}" ]] \
  || usage_error "SOURCE_PASSAGES must be distinct, got '$SOURCE_PASSAGES'"
all_passages="$(IFS=,; echo "${sources[*]},${targets[*]}")"
sources_tag="$(IFS=_; echo "${sources[*]}")"
check_judge_for_nodes
check_ray_for_nodes

t0=$SECONDS
stage() { echo; echo "== [$(date +%H:%M:%S), +$((SECONDS - t0)) s] $*"; }

track_run   # everything started from here on is stopped on exit (scripts/common.sh)
ensure_judge pipeline
echo "judge: $JUDGE_URL (backend ${JUDGE_DESCRIPTION:-not checked under DRY_RUN})   sources: ${sources[*]}   targets: ${targets[*]}   model: $MODEL"

# Work still to do, for the disk estimate.
sft_todo=0
for p in "${sources[@]}" "${targets[@]}"; do
  [[ -e "$CKPT_ROOT/passage$p/stage2/final/config.json" ]] || sft_todo=$((sft_todo + 2))
done
skill_vector="$CKPT_ROOT/skill_vectors/sources_${sources_tag}.safetensors"
grpo_todo=0
[[ -f "$skill_vector" ]] || grpo_todo=${#sources[@]}
inherit_todo=0
for t in "${targets[@]}"; do [[ -e "$CKPT_ROOT/inherited/passage$t/config.json" ]] || inherit_todo=$((inherit_todo + 1)); done
disk=("$PYTHON" "$ROOT/scripts/preflight.py" disk --model "$MODEL" --path "$CKPT_ROOT" --sft_stages "$sft_todo"
  --grpo_runs "$grpo_todo" --inherited "$inherit_todo" --grpo_ckpt_to_keep "${GRPO_CKPT_TO_KEEP:-1}"
  --export_dtype "$HF_EXPORT_DTYPE")
[[ "${KEEP_RESUMABLE:-0}" == 1 ]] && disk+=(--keep_resumable)
[[ "$DISK_CHECK" == 1 && "$DRY_RUN" != 1 ]] || disk+=(--no_refuse)
"${disk[@]}" || exit 1

stage "1/7 data: eval sets, SFT data for passages ${all_passages}, RL prompts for ${SOURCE_PASSAGES}"
run bash "$ROOT/scripts/gen_data/process_loogle_eval.sh" "$all_passages"
run bash "$ROOT/scripts/gen_data/gen_sft_data.sh" "$TRAINING_GPU_IDS" "$all_passages"
if [[ "$RL_PROMPTS" == generated ]]; then
  run bash "$ROOT/scripts/gen_data/gen_rl_data.sh" "$TRAINING_GPU_IDS" "$SOURCE_PASSAGES"
  rl_file=grpo.parquet
else
  rl_file=eval.parquet   # the sources' own LooGLE QA; sources are never evaluated
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
  # On the head node's GPUs (NNODES=1): several-node SFT needs sft.sh started on every node.
  run env passage_id="$p" STAGES="$stages" RESUME=1 DATA_DIR="$DATA_ROOT/passage$p" CKPT_DIR="$ckpt" NNODES=1 \
    bash "$ROOT/scripts/train/sft.sh"
done

if ((${#sources[@]} == 1)); then
  source_id=${sources[0]}
  grpo_dir="$CKPT_ROOT/passage$source_id/grpo"
  stage "3/7 GRPO on passage $source_id's $rl_file from its stage-2 model"
  if [[ -e "$grpo_dir/final/config.json" ]]; then
    echo "GRPO done ($grpo_dir/final)"
  else
    run env passage_id="$source_id" RESUME=1 DATA_DIR="$DATA_ROOT/passage$source_id" CKPT_DIR="$CKPT_ROOT/passage$source_id" \
      GRPO_TRAIN_FILES="$DATA_ROOT/passage$source_id/$rl_file" bash "$ROOT/scripts/train/grpo.sh"
  fi
  stage "4/7 skill vector = rl - stage2(passage $source_id) -> ${skill_vector#"$ROOT"/}"
  if [[ -f "$skill_vector" ]]; then
    echo "skill vector exists"
  else
    run_python "$PYTHON" "$ROOT/calc_delta_and_save.py" --grpo_model "$grpo_dir/final" \
      --base_model "$CKPT_ROOT/passage$source_id/stage2/final" --output "$skill_vector"
  fi
else
  rounds_dir="$CKPT_ROOT/rounds_sources_$sources_tag"
  stage "3/7 GRPO: ${#sources[@]} rounds of iterative skill refinement over sources ${sources[*]} -> ${rounds_dir#"$ROOT"/}"
  run env K="${#sources[@]}" SOURCE_PASSAGES="${sources[*]}" TARGET_PASSAGES= ROUNDS_DIR="$rounds_dir" RESUME=1 \
    bash "$ROOT/scripts/train/grpo_round10.sh"
  stage "4/7 skill vector = round ${#sources[@]}'s skill -> ${skill_vector#"$ROOT"/}"
  if [[ "$DRY_RUN" != 1 ]]; then
    mkdir -p "$(dirname "$skill_vector")"
    ln -sfn "$rounds_dir/round${#sources[@]}/skill_vector.safetensors" "$skill_vector"
  fi
fi

stage "5/7 inherit stage2(target) + $ALPHA * skill for passages ${TARGET_PASSAGES}, and evaluate"
run env SKILL_VECTOR="$skill_vector" TARGET_PASSAGES="$TARGET_PASSAGES" MODEL_TAG=inherited \
  bash "$ROOT/scripts/merge_and_eval.sh"
variants=(base stage2 inherited)
if [[ "$CONTROLS" == 1 ]]; then
  random_vector="${skill_vector%.safetensors}.random.safetensors"
  stage "5/7 controls: stage2(target) + a random vector of the skill's per-tensor norms, and stage2(target) - $ALPHA * skill"
  [[ -f "$random_vector" ]] || run_python "$PYTHON" -m analysis.random_vector --like "$skill_vector" --output "$random_vector"
  run env SKILL_VECTOR="$random_vector" TARGET_PASSAGES="$TARGET_PASSAGES" MODEL_TAG=random_vector \
    bash "$ROOT/scripts/merge_and_eval.sh"
  run env SKILL_VECTOR="$skill_vector" ALPHA="$(awk -v a="$ALPHA" 'BEGIN { print -a }')" TARGET_PASSAGES="$TARGET_PASSAGES" MODEL_TAG=negated \
    bash "$ROOT/scripts/merge_and_eval.sh"
  variants+=(random_vector negated)
fi
variants+=(base-context)

stage "6/7 evaluation of base, stage-2-only and passage-in-context on the targets' LooGLE QA"
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
    script="$ROOT/scripts/eval/eval_sft.sh"
    [[ "$variant" == context ]] && script="$ROOT/scripts/eval_with_context.sh"
    run env passage_id="$p" MODEL_PATH="$model_path" MODEL_TAG="$tag" START_JUDGE=0 bash "$script"
  done
done

stage "7/7 results"
run_python "$PYTHON" "$ROOT/scripts/show_results.py" --results_dir "$RESULTS_DIR" \
  --variants "${variants[@]}" --output "$RESULTS_DIR/results.md" --csv "$RESULTS_DIR/results.csv"
if ((${#sources[@]} == 1)) && { [[ "$DRY_RUN" == 1 ]] || compgen -G "$grpo_dir/metrics*.jsonl" >/dev/null; }; then
  run_python "$PYTHON" -m analysis.reward_curve "$grpo_dir"/metrics*.jsonl --output "$RESULTS_DIR/grpo_reward.png" \
    --json "$RESULTS_DIR/grpo_reward.json"
fi
echo
echo "artifacts: data $DATA_ROOT/passage{N}/ | SFT $CKPT_ROOT/passage{N}/stage{1,2}/final |" \
  "skill vector $skill_vector | inherited $CKPT_ROOT/inherited/passage{N} |" \
  "eval $RESULTS_DIR/<variant>/passage{N}/test_results.json | table $RESULTS_DIR/results.md"
echo "pipeline finished in $((SECONDS - t0)) s"
