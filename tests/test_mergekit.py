"""inherit_weight.py against mergekit: PaST's transfer is mergekit's task_arithmetic with
base_model = stage2(source), models rl (weight λ) and the target (weight 1), which
`--export_mergekit_config` writes; mergekit runs it from its own virtualenv, pinned."""

import fcntl
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import load_state, perturbed_copy
from inherit_weight import main as inherit_main

REPO_ROOT = Path(__file__).resolve().parent.parent
MERGEKIT = "mergekit==0.1.5"
MERGEKIT_VENV = REPO_ROOT / ".venv-mergekit"  # kept between runs (.gitignore); rebuilt when the pins change


@pytest.fixture(scope="session")
def mergekit_yaml():
    """The mergekit-yaml command of a virtualenv of its own (mergekit pins transformers and friends
    apart from ours), made on first use: torch first, pinned as pyproject.toml pins it (an
    unpinned one would pull a multi-GB CUDA build), then mergekit."""
    torch_pin = re.search(r'"(torch==[0-9.]+)"', (REPO_ROOT / "pyproject.toml").read_text()).group(1)
    pins = f"{torch_pin} {MERGEKIT}"
    stamp = MERGEKIT_VENV / ".past-pins"
    with open(REPO_ROOT / ".venv-mergekit.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one creator at a time
        if not (stamp.exists() and stamp.read_text() == pins):
            shutil.rmtree(MERGEKIT_VENV, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(MERGEKIT_VENV)], check=True)
            pip = [str(MERGEKIT_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            subprocess.run(pip + [torch_pin], check=True)
            subprocess.run(pip + pins.split(), check=True)
            stamp.write_text(pins)
    return MERGEKIT_VENV / "bin" / "mergekit-yaml"


@pytest.mark.slow
@pytest.mark.parametrize("model, alpha", [("tiny_model", 1.0), ("tiny_model", 0.7), ("tiny_model_tied", -0.5)])
def test_transfer_matches_mergekit_task_arithmetic(mergekit_yaml, request, tmp_path, model, alpha):
    base = request.getfixturevalue(model)
    rl = perturbed_copy(base, tmp_path / "rl", seed=1, scale=1e-3)
    target = perturbed_copy(base, tmp_path / "target", seed=2)
    config = tmp_path / "past.yml"
    assert inherit_main(["--grpo_model", str(rl), "--base_model", str(base), "--target_models", str(target),
                         "--output_dirs", str(tmp_path / "ours"), "--alpha", str(alpha),
                         "--export_mergekit_config", str(config)]) == 0
    subprocess.run([str(mergekit_yaml), str(config), str(tmp_path / "mergekit")], check=True,
                   env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)})
    ours, theirs = load_state(tmp_path / "ours"), load_state(tmp_path / "mergekit")
    assert sorted(ours) == sorted(theirs)
    # Measured bound: bit-identical, every element of every tensor, untied and tied. mergekit
    # computes base + (λ·(rl − base) + (target − base)) in float32, two roundings more than
    # target + λ·(rl − base); differences of nearby bf16 values are exact in float32, and what is
    # left stays far below the one rounding to bf16 at the end.
    for name, t in ours.items():
        assert theirs[name].dtype == t.dtype == torch.bfloat16 and theirs[name].shape == t.shape, name
        assert torch.equal(t.view(torch.uint8), theirs[name].view(torch.uint8)), f"{name} differs from mergekit's"
