"""The environment scripts/setup.sh builds can run every stage: verl's trainers import, and
vLLM's CPU build generates from the tiny fixture model offline."""

import importlib.metadata
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_verl_trainers_import():
    import verl.trainer.main_ppo  # noqa: F401
    import verl.trainer.sft_trainer  # noqa: F401

    assert importlib.metadata.version("verl") == "0.9.1"


def test_project_modules_import_from_anywhere(tmp_path):
    # The editable install puts the repo on sys.path: packages resolve outside the repo root.
    code = "import cpu_compat, prepare_data, eval_loogle, analysis; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="the vLLM alias is for the CPU build only")
def test_vllm_alias_reports_a_cpu_version():
    assert "cpu" in importlib.metadata.version("vllm")


@pytest.mark.slow
def test_vllm_generates_from_tiny_model(tiny_model, tmp_path):
    # A fresh interpreter: vLLM starts its engine in subprocesses and must not inherit pytest's.
    script = textwrap.dedent(
        f"""
        from vllm import LLM, SamplingParams
        llm = LLM(model={str(tiny_model)!r}, dtype="bfloat16", enforce_eager=True, max_model_len=512,
                  max_num_batched_tokens=512, seed=0)
        outs = llm.generate(["The history of the town"], SamplingParams(max_tokens=6, min_tokens=6, temperature=0))
        print("TOKENS", len(outs[0].outputs[0].token_ids))
        """
    )
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "TOKENS 6" in out.stdout


def pip_report(tmp_path, requirement):
    """A real `pip install --dry-run --report` in this environment (no install)."""
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--quiet", "--report",
                           str(report), requirement], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return report


def preflight_pip(report):
    return subprocess.run([sys.executable, str(REPO / "scripts/preflight.py"), "pip", "--report", str(report)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)


def test_setup_sees_when_pip_would_replace_torch(tmp_path):
    """What vLLM 0.24.0's pin does on a GPU node (torch==2.11.0), asked of the real pip here."""
    installed = importlib.metadata.version("torch")
    done = preflight_pip(pip_report(tmp_path, "torch==2.11.0"))
    assert done.returncode == 3
    assert f"pip would replace torch {installed} with 2.11.0" in done.stdout
    assert f"would replace this node's torch {installed} with torch 2.11.0" in done.stderr
    (tmp_path / "same").mkdir()
    same = preflight_pip(pip_report(tmp_path / "same", f"torch=={installed}"))
    assert same.returncode == 0 and "torch stays as it is" in same.stdout


@pytest.mark.slow
def test_setup_on_a_gpu_node_refuses_to_replace_torch_and_installs_nothing(tmp_path):
    """setup.sh's GPU path for real, in a scratch venv that sees this environment's packages
    (torch 2.13.0 here, which vLLM 0.24.0 would replace): it asks pip first, says what would
    change, names the choices and installs nothing."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "shared_env.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    before = sorted(p.name for p in site.iterdir())
    env = {**os.environ, "PAST_VENV": str(venv), "PAST_DEVICE": "gpu"}
    for name in ("PYTHON", "SETUP_ALLOW_TORCH_CHANGE", "SETUP_GPU_EXTRA"):
        env.pop(name, None)
    done = subprocess.run(["bash", str(REPO / "scripts/setup.sh")], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"would replace this node's torch {importlib.metadata.version('torch')} with torch 2.11.0" in done.stderr
    assert "SETUP_ALLOW_TORCH_CHANGE=1" in done.stderr and "SETUP_GPU_EXTRA=0" in done.stderr
    assert sorted(p.name for p in site.iterdir()) == before and not (venv / ".past-setup-stamp").exists()
