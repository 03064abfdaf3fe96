"""seal_squad/precision.py and skill_precision.py: how much of a skill vector survives in the served
model, counted on the files vLLM loads, and float32 serving as the way out when little does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import load_state, perturbed_copy
from seal_squad.precision import LOW_SURVIVAL, cached_survival, float32_copy, report, survival

REPO = Path(__file__).resolve().parent.parent
GK = REPO / "SEAL" / "general-knowledge"
ALPHA = 0.5


def run(*args):
    done = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def small_vector(tiny_model, tmp_path_factory):
    """The bf16 tiny model, its float32 copy, and a vector of RL-sized updates (std 1e-5) to it."""
    root = tmp_path_factory.mktemp("precision")
    base32 = root / "base_float32"
    float32_copy(tiny_model, base32)
    rl = perturbed_copy(base32, root / "rl", seed=3, scale=1e-5)
    vector = root / "skill.safetensors"
    run(REPO / "calc_delta_and_save.py", "--grpo_model", rl, "--base_model", base32, "--output", vector)
    served = {}
    for name, target in (("bf16", tiny_model), ("float32", base32)):
        served[name] = root / f"served_{name}"
        run(REPO / "inherit_weight.py", "--skill_vector", vector, "--alpha", ALPHA, "--target_models", target,
            "--output_dirs", served[name])
    return root, vector, served


def test_float32_copy_is_exact_and_says_float32(tiny_model, small_vector):
    root, _, _ = small_vector
    base, copy = load_state(tiny_model), load_state(root / "base_float32")
    assert base.keys() == copy.keys()
    assert all(copy[n].dtype == torch.float32 and torch.equal(copy[n], base[n].float()) for n in base)
    assert json.loads((root / "base_float32" / "config.json").read_text())["dtype"] == "float32"


def test_survival_counts_the_vector_elements_that_change_the_served_weights(tiny_model, small_vector):
    root, vector, served = small_vector
    in_bf16 = survival(tiny_model, served["bf16"], vector, ALPHA)
    # The count by hand: lambda * v != 0 and bf16(W + lambda * v) != W.
    base, v, out = load_state(tiny_model), load_file(vector), load_state(served["bf16"])
    moved = sum(int((ALPHA * v[n].float() != 0).sum()) for n in v)
    kept = sum(int(((ALPHA * v[n].float() != 0) & (out[n] != base[n])).sum()) for n in v)
    assert moved > 0 and (in_bf16["nonzero"], in_bf16["survived"], in_bf16["served_dtypes"]) == (moved, kept, ["bfloat16"])
    assert in_bf16["share"] < LOW_SURVIVAL  # updates of 1e-5 mostly round away in bf16
    assert "WARNING" in report(in_bf16) and "SERVED_DTYPE=float32" in report(in_bf16)
    in_fp32 = survival(tiny_model, served["float32"], vector, ALPHA)
    assert in_fp32["share"] > 0.99 and in_fp32["nonzero"] == moved and in_fp32["served_dtypes"] == ["float32"]
    assert "WARNING" not in report(in_fp32)
    save_file({"model.other.weight": torch.ones(2)}, root / "other.safetensors")
    with pytest.raises(ValueError, match="model.other.weight .* not the vector of this served model"):
        survival(tiny_model, served["bf16"], root / "other.safetensors", ALPHA)


def test_measure_keeps_its_numbers_beside_the_served_model(tiny_model, small_vector):
    _, vector, served = small_vector
    done = run(GK / "skill_precision.py", "measure", "--base_model", tiny_model, "--served_model", served["bf16"],
               "--skill_vector", vector, "--alpha", ALPHA)
    kept = json.loads((served["bf16"] / "skill_survival.json").read_text())
    assert done.stdout.startswith(f"skill vector in the served model: {100 * kept['share']:.1f}% of its")
    kept["share"] = "from the file"  # a second call reads the file rather than measuring again
    (served["bf16"] / "skill_survival.json").write_text(json.dumps(kept))
    assert cached_survival(tiny_model, served["bf16"], vector, ALPHA)["share"] == "from the file"
    assert cached_survival(tiny_model, served["bf16"], vector, 1.0)["alpha"] == 1.0  # another lambda: measured anew


def test_served_dtype_float32_writes_and_serves_w_plus_lambda_v_in_float32(tmp_path):
    vector, base = tmp_path / "skill.safetensors", tmp_path / "Qwen2.5-7B"
    vector.write_bytes(b"")
    base.mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "DRY_RUN": "1", "PAST_DEVICE": "gpu", "BASE_MODEL": str(base),
           "SKILL_VECTOR": str(vector), "ALPHA": "0.5", "CKPT_ROOT": str(tmp_path / "ck"), "SERVED_DTYPE": "float32"}
    done = subprocess.run(["bash", str(GK / "start_servers.sh")], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    cmds = [line[len("DRY_RUN: "):] for line in done.stdout.splitlines() if line.startswith("DRY_RUN: ")]
    copy, served = tmp_path / "ck" / "seal_served" / "Qwen2.5-7B_float32", tmp_path / "ck" / "seal_served" / "skill_alpha0.5_float32"
    assert cmds[0].endswith(f"skill_precision.py float32_copy --model {base} --output {copy}")
    assert cmds[1].endswith(f"inherit_weight.py --skill_vector {vector} --alpha 0.5 --target_models {copy} --output_dirs {served}")
    assert f"--model {served} " in cmds[2] and cmds[2].endswith("--dtype float32")
    bad = subprocess.run(["bash", str(GK / "start_servers.sh")], capture_output=True, text=True, env={**env, "SERVED_DTYPE": "fp8"},
                         cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "SERVED_DTYPE must be float32 or empty" in bad.stderr


def test_the_pipeline_writes_its_served_models_from_one_float32_copy(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "DRY_RUN": "1", "PAST_DEVICE": "cpu", "K": "1", "SERVED_DTYPE": "float32",
           "DATA_ROOT": str(tmp_path / "data"), "CKPT_ROOT": str(tmp_path / "ck"), "RESULTS_DIR": str(tmp_path / "res"),
           "LOG_DIR": str(tmp_path / "logs")}
    done = subprocess.run(["bash", str(GK / "run_squad_pipeline.sh")], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    served = tmp_path / "ck" / "seal_served"
    copy = served / "Qwen2.5-7B_float32"
    lines = done.stdout.splitlines()
    assert sum("float32_copy" in line for line in lines) == 1
    assert any(line.endswith(f"float32_copy --model {tmp_path}/ck/base/Qwen2.5-7B --output {copy}") for line in lines)
    writes = [line for line in lines if "inherit_weight.py" in line and str(served) in line]
    assert len(writes) == 3  # lambda 1.0 (post and pre share it), 0.5 and 1.5 of the sweep
    assert all(f"--target_models {copy} " in w and w.endswith("_float32") for w in writes)
