"""debug/compare_checkpoints.py and debug/check_inherited.py on real tiny checkpoints."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from calc_delta_and_save import save_skill_vector
from debug import check_inherited, compare_checkpoints
from helpers import load_state, perturbed_copy
from inherit_weight import inherit

REPO_ROOT = Path(__file__).resolve().parent.parent
TENSOR = "model.layers.1.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("debug_models")
    rl = perturbed_copy(tiny_model, root / "rl", seed=1, scale=1e-3)
    target = perturbed_copy(tiny_model, root / "target", seed=2)
    vector = root / "skill.safetensors"
    save_skill_vector(rl, tiny_model, vector, quiet=True)
    inherit([target], [root / "inherited"], skill_vectors=[vector], alphas=0.5, quiet=True)
    return dict(root=root, base=Path(tiny_model), rl=rl, target=target, vector=vector, inherited=root / "inherited")


def edited_copy(src, dst, edit):
    shutil.copytree(src, dst)
    state = load_file(dst / "model.safetensors")
    edit(state)
    save_file(state, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize("script, option", [("compare_checkpoints.py", "--atol"), ("check_inherited.py", "--inherited")])
def test_help_runs_as_a_file_from_anywhere(script, option, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "debug" / script), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {script}") and option in proc.stdout.splitlines()[0]


def test_compare_checkpoints(models, tmp_path, capsys):
    same = shutil.copytree(models["target"], tmp_path / "same")
    assert compare_checkpoints.main([str(models["target"]), str(same)]) == 0
    assert "0 of 27 common tensors differ; 0 only in A, 0 only in B" in capsys.readouterr().out

    def bump(state):
        state[TENSOR][0, 0] += 0.25
    bumped = edited_copy(models["target"], tmp_path / "bumped", bump)
    assert compare_checkpoints.main([str(bumped), str(models["target"])]) == 1
    out = capsys.readouterr().out
    a, b = load_state(bumped)[TENSOR].double(), load_state(models["target"])[TENSOR].double()
    assert f"differs  {TENSOR}: max |A-B| = {(a - b).abs().max().item():.6g}" in out
    assert f"||A-B||/||B|| = {((a - b).norm() / b.norm()).item():.6g}, 1 of 32768 elements" in out
    assert "1 of 27 common tensors differ" in out
    assert compare_checkpoints.main([str(bumped), str(models["target"]), "--atol", "1"]) == 0
    capsys.readouterr()

    pruned = edited_copy(models["target"], tmp_path / "pruned", lambda s: s.pop(TENSOR))
    assert compare_checkpoints.main([str(models["target"]), str(pruned)]) == 1
    assert f"only in A  {TENSOR}" in capsys.readouterr().out

    def to_float32(state):
        state[TENSOR] = state[TENSOR].float()
    upcast = edited_copy(models["target"], tmp_path / "upcast", to_float32)
    assert compare_checkpoints.main([str(upcast), str(models["target"])]) == 1
    assert f"differs  {TENSOR}: max |A-B| = 0, ||A-B||/||B|| = 0, 0 of 32768 elements, dtype float32 vs bfloat16" in \
        capsys.readouterr().out

    # A saved vector file against rl - base computed here.
    rl, base = load_state(models["rl"]), load_state(models["base"])
    save_file({n: rl[n].float() - base[n].float() for n in rl}, tmp_path / "reference.safetensors")
    assert compare_checkpoints.main([str(models["vector"]), str(tmp_path / "reference.safetensors")]) == 0

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"\x10\x00")
    assert compare_checkpoints.main([str(tmp_path / "broken"), str(models["target"])]) == 2
    assert "not a complete safetensors file" in capsys.readouterr().err


def test_check_inherited(models, tmp_path, capsys):
    args = ["--inherited", str(models["inherited"]), "--target", str(models["target"])]
    assert check_inherited.main(args + ["--skill_vector", str(models["vector"]), "--alpha", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "IS exactly target + alpha * skill (alpha = 0.5): 0 of 27 tensors differ" in out
    assert json.loads(out.split("made from: ")[1].splitlines()[0])["skill"][0]["alpha"] == 0.5
    assert check_inherited.main(args + ["--grpo_model", str(models["rl"]), "--base_model", str(models["base"]),
                                        "--alpha", "0.5"]) == 0
    capsys.readouterr()

    # The wrong lambda: every tensor mismatches, and the metadata says which lambda was used.
    assert check_inherited.main(args + ["--skill_vector", str(models["vector"]), "--alpha", "1.0", "--show", "3"]) == 1
    out = capsys.readouterr().out
    assert out.count("differs  ") == 3 and "more differing tensors" in out and "is NOT exactly" in out

    def bump(state):
        state[TENSOR][1, 2] += 1.0
    tampered = edited_copy(models["inherited"], tmp_path / "tampered", bump)
    assert check_inherited.main(["--inherited", str(tampered), "--target", str(models["target"]),
                                 "--skill_vector", str(models["vector"]), "--alpha", "0.5"]) == 1
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("differs")] == [f"differs  {TENSOR}"]
    assert "1 of 32768 elements" in out and "1 of 27 tensors differ" in out

    pruned = edited_copy(models["inherited"], tmp_path / "pruned", lambda state: state.pop(TENSOR))
    assert check_inherited.main(["--inherited", str(pruned), "--target", str(models["target"]),
                                 "--skill_vector", str(models["vector"]), "--alpha", "0.5"]) == 1
    assert f"missing (the operator writes it)  {TENSOR}" in capsys.readouterr().out

    assert check_inherited.main(["--inherited", str(tampered), "--target", str(models["target"])]) == 2
    assert "need --grpo_model and --base_model" in capsys.readouterr().err
