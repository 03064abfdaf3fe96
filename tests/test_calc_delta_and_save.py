"""calc_delta_and_save.py: the saved skill vector is rl - base, exactly, with metadata the operator checks."""

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import calc_delta_and_save
from calc_delta_and_save import save_skill_vector
from checkpoint_io import CheckpointError
from helpers import load_state, perturbed_copy

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_model, tiny_model_tied):
    root = tmp_path_factory.mktemp("delta")
    return dict(base=tiny_model, rl=perturbed_copy(tiny_model, root / "rl", 1, scale=1e-3),
                base_tied=tiny_model_tied, rl_tied=perturbed_copy(tiny_model_tied, root / "rl_tied", 2, scale=1e-3))


def test_float32_vector_is_exactly_rl_minus_base_with_metadata(pair, tmp_path):
    out = tmp_path / "vectors" / "skill.safetensors"
    count, nbytes = save_skill_vector(pair["rl"], pair["base"], out, quiet=True)
    rl, base, vector = load_state(pair["rl"]), load_state(pair["base"]), load_file(out)
    assert sorted(vector) == sorted(rl) and count == len(rl)
    for name in rl:
        assert vector[name].dtype == torch.float32
        assert torch.equal(vector[name], rl[name].float() - base[name].float())
    assert nbytes == out.stat().st_size - (8 + int.from_bytes(out.read_bytes()[:8], "little"))
    with safe_open(out, "pt") as f:
        meta = f.metadata()
    config = json.loads((Path(pair["base"]) / "config.json").read_text())
    assert json.loads(meta["architecture"]) == {k: config[k] for k in (
        "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "intermediate_size")}
    assert meta["format"] == "pt" and meta["dtype"] == "float32" and meta["tied_embeddings"] == "false"
    assert meta["grpo_model"] == str(pair["rl"].resolve()) and meta["base_model"] == str(Path(pair["base"]).resolve())
    header_len = int.from_bytes(out.read_bytes()[:8], "little")
    assert meta["fingerprint"] == "sha256:" + hashlib.sha256(out.read_bytes()[8 + header_len:]).hexdigest()
    assert [p.name for p in out.parent.iterdir()] == ["skill.safetensors"]  # no temporary file left


def test_bfloat16_vector_halves_the_file(pair, tmp_path):
    save_skill_vector(pair["rl"], pair["base"], tmp_path / "f32.safetensors", quiet=True)
    save_skill_vector(pair["rl"], pair["base"], tmp_path / "bf16.safetensors", dtype="bfloat16", quiet=True)
    f32, bf16 = load_file(tmp_path / "f32.safetensors"), load_file(tmp_path / "bf16.safetensors")
    for name in f32:
        assert bf16[name].dtype == torch.bfloat16 and torch.equal(bf16[name], f32[name].to(torch.bfloat16))
    ratio = (tmp_path / "bf16.safetensors").stat().st_size / (tmp_path / "f32.safetensors").stat().st_size
    assert 0.49 < ratio < 0.52


def test_tied_pair_stores_the_embedding_delta_once(pair, tmp_path):
    out = tmp_path / "tied.safetensors"
    save_skill_vector(pair["rl_tied"], pair["base_tied"], out, quiet=True)
    vector = load_file(out)
    assert "lm_head.weight" not in vector and "model.embed_tokens.weight" in vector
    with safe_open(out, "pt") as f:
        assert f.metadata()["tied_embeddings"] == "true"


def test_pth_format_as_in_the_original_release(pair, tmp_path):
    out = tmp_path / "skill.pth"
    save_skill_vector(pair["rl"], pair["base"], out, quiet=True)
    vector = torch.load(out, weights_only=True)
    rl, base = load_state(pair["rl"]), load_state(pair["base"])
    assert sorted(vector) == sorted(rl)
    for name in rl:
        assert torch.equal(vector[name], rl[name].float() - base[name].float())


def test_errors_before_writing(pair, tmp_path):
    with pytest.raises(CheckpointError, match=r"\.safetensors .*or \.pth"):
        save_skill_vector(pair["rl"], pair["base"], tmp_path / "skill.npz", quiet=True)
    existing = tmp_path / "skill.safetensors"
    existing.write_bytes(b"old")
    with pytest.raises(CheckpointError, match="--overwrite"):
        save_skill_vector(pair["rl"], pair["base"], existing, quiet=True)
    assert existing.read_bytes() == b"old"
    pruned = tmp_path / "pruned"
    perturbed_copy(pair["rl"], pruned, 3)
    state = load_file(pruned / "model.safetensors")
    del state["model.layers.1.self_attn.o_proj.weight"]
    save_file(state, pruned / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"tensor names differ: .*only in base .*layers.1.self_attn.o_proj"):
        save_skill_vector(pruned, pair["base"], tmp_path / "pruned.safetensors", quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned", "skill.safetensors"]


def test_rl_that_untied_the_head_of_a_tied_base(pair, tmp_path):
    # base ties lm_head to its embeddings; rl stores its own head: the head delta is rl.lm_head - base.embed.
    out = tmp_path / "untied.safetensors"
    save_skill_vector(pair["rl"], pair["base_tied"], out, quiet=True)
    vector, rl, base = load_file(out), load_state(pair["rl"]), load_state(pair["base_tied"])
    expected = rl["lm_head.weight"].float() - base["model.embed_tokens.weight"].float()
    assert torch.equal(vector["lm_head.weight"], expected)
    with safe_open(out, "pt") as f:
        assert f.metadata()["tied_embeddings"] == "false"


def test_cli(pair, tmp_path):
    out = tmp_path / "skill.safetensors"
    proc = subprocess.run([sys.executable, "calc_delta_and_save.py", "--grpo_model", str(pair["rl"]),
                           "--base_model", str(pair["base"]), "--output", str(out), "--dtype", "bfloat16"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "bfloat16" in proc.stdout and out.exists()
    proc = subprocess.run([sys.executable, "calc_delta_and_save.py", "--grpo_model", str(pair["rl"]),
                           "--base_model", str(pair["base"]), "--output", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr


@pytest.mark.parametrize("case", ["truncated", "config"])
def test_damaged_source_is_refused_with_one_line(pair, tmp_path, capsys, case):
    damaged = tmp_path / "rl"
    shutil.copytree(pair["rl"], damaged)
    if case == "truncated":
        raw = (damaged / "model.safetensors").read_bytes()
        (damaged / "model.safetensors").write_bytes(raw[:-10])
        message = rf"{damaged / 'model.safetensors'} is truncated: tensor \S+ ends at byte {len(raw)}"
    else:
        (damaged / "config.json").write_text("{not json")
        message = rf"{damaged / 'config.json'} is not valid JSON"
    out = tmp_path / "vectors" / "skill.safetensors"
    rc = calc_delta_and_save.main(["--grpo_model", str(damaged), "--base_model", str(pair["base"]), "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and re.search(message, err), err
    assert not out.parent.exists()
