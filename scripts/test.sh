#!/usr/bin/env bash
# Create/update the environment if needed, then run the test suite (slow tests included).
#   bash scripts/test.sh                   # everything
#   bash scripts/test.sh -m "not slow"     # quick tests only; any pytest argument passes through
# Exits non-zero on any failure, and also when no test ran.
set -euo pipefail
PAST_COMMON_PARTS=setup source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
set +e
"${PAST_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "test.sh: no test ran (pytest exit 5): that is a failure" >&2
  exit 1
fi
exit $rc
