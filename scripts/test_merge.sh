#!/usr/bin/env bash
# Quick check that an (inherited) model loads and answers: one closed-book run over a passage's
# LooGLE questions with a small token budget, answers printed. No judge needed.
#
#   MODEL_PATH=checkpoints/inherited/passage3 passage_id=3 bash scripts/test_merge.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

MODEL_PATH=${MODEL_PATH:-$ROOT/checkpoints/inherited/passage${passage_id:-1}}
passage_id=${passage_id:-1}
DATA_ROOT=${DATA_ROOT:-$ROOT/data}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-64}
BACKEND=${BACKEND:-}                        # empty: vllm on GPU, hf otherwise
PY=${PYTHON:-${PAST_VENV:-$ROOT/.venv}/bin/python}
[[ -x "$PY" ]] || PY=python3

[[ "${1:-}" == -h || "${1:-}" == --help ]] && { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }
[[ -e "$MODEL_PATH/config.json" ]] || { echo "no model at $MODEL_PATH (set MODEL_PATH)" >&2; exit 2; }
answers="$(mktemp -d)/answers.json"
trap 'rm -rf "$(dirname "$answers")"' EXIT
"$PY" -m eval_loogle.generate_answers --passage_idx "$passage_id" --model_path "$MODEL_PATH" --n_runs 1 \
  --data_dir "$DATA_ROOT" --max_new_tokens "$MAX_NEW_TOKENS" --output_file "$answers" ${BACKEND:+--backend "$BACKEND"}
"$PY" -m json.tool "$answers" | grep -E '"(question|response)"' | head -20
echo "test_merge.sh: $MODEL_PATH loaded and answered passage $passage_id's questions"
