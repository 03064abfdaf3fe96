"""analysis/: statistics, heatmaps and cosine similarities of skill vectors, against plain-torch references."""

import csv
import json
import math

import pytest
import torch

from analysis import extract_delta, heatmap, save_cosine
from analysis.extract_delta import layer_and_module, read_rows
from calc_delta_and_save import save_skill_vector
from helpers import load_state, perturbed_copy


@pytest.fixture(scope="module")
def vectors(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("analysis")
    rl = perturbed_copy(tiny_model, root / "rl", seed=1)
    other = perturbed_copy(tiny_model, root / "other", seed=2)
    save_skill_vector(rl, tiny_model, root / "skill.safetensors", quiet=True)
    return dict(root=root, base=tiny_model, rl=rl, other=other, skill=root / "skill.safetensors")


def test_layer_and_module_names():
    assert layer_and_module("model.layers.3.self_attn.q_proj.weight") == (3, "q_proj")
    assert layer_and_module("model.layers.12.self_attn.k_proj.bias") == (12, "k_proj.bias")
    assert layer_and_module("model.layers.0.post_attention_layernorm.weight") == (0, "post_attention_layernorm")
    assert layer_and_module("model.embed_tokens.weight") == (None, "embed_tokens")
    assert layer_and_module("lm_head.weight") == (None, "lm_head")
    assert layer_and_module("model.norm.weight") == (None, "norm")


def test_extract_delta_statistics_match_a_plain_torch_reference(vectors, tmp_path):
    out = tmp_path / "stats.csv"
    assert extract_delta.main(["--grpo_model", str(vectors["rl"]), "--base_model", str(vectors["base"]),
                               "--output", str(out), "--near_zero", "1e-3"]) == 0
    rows = {r["name"]: r for r in read_rows(out)}
    rl, base = load_state(vectors["rl"]), load_state(vectors["base"])
    assert sorted(rows) == sorted(rl)
    for name in rl:
        delta = rl[name].double() - base[name].double()
        row = rows[name]
        assert (row["layer"], row["module"]) == layer_and_module(name)
        assert row["numel"] == delta.numel()
        assert row["l2"] == pytest.approx(delta.norm().item(), rel=1e-5)
        assert row["base_l2"] == pytest.approx(base[name].double().norm().item(), rel=1e-5)
        if row["base_l2"]:
            assert row["rel_l2"] == pytest.approx(row["l2"] / row["base_l2"], rel=1e-9)
        else:
            assert row["rel_l2"] is None  # zero-initialised biases: no relative norm
        assert row["mean_abs"] == pytest.approx(delta.abs().mean().item(), rel=1e-5)
        assert row["max_abs"] == pytest.approx(delta.abs().max().item(), rel=1e-6)
        assert row["near_zero_frac"] == pytest.approx((delta.abs() <= 1e-3).double().mean().item(), abs=1e-3)

    # The saved vector gives the same statistics; JSON output round-trips too.
    out_json = tmp_path / "stats.json"
    assert extract_delta.main(["--skill_vector", str(vectors["skill"]), "--base_model", str(vectors["base"]),
                               "--output", str(out_json), "--near_zero", "1e-3"]) == 0
    for row in json.loads(out_json.read_text()):
        for key in ("l2", "base_l2", "mean_abs", "max_abs", "near_zero_frac"):
            assert row[key] == pytest.approx(rows[row["name"]][key], rel=1e-6)


def test_heatmap_writes_a_png_with_the_right_grid(vectors, tmp_path):
    stats = tmp_path / "stats.csv"
    extract_delta.main(["--grpo_model", str(vectors["rl"]), "--base_model", str(vectors["base"]), "--output", str(stats)])
    rows = read_rows(stats)
    layers, modules, grid = heatmap.layer_module_grid(rows, "l2")
    assert layers == [0, 1] and modules[:7] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                  "down_proj"]
    by_name = {r["name"]: r for r in rows}
    assert grid[1][modules.index("down_proj")] == by_name["model.layers.1.mlp.down_proj.weight"]["l2"]
    png = tmp_path / "plots" / "l2.png"
    assert heatmap.main(["--stats", str(stats), "--metric", "l2", "--output", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000

    no_base = tmp_path / "no_base.csv"
    extract_delta.main(["--skill_vector", str(vectors["skill"]), "--output", str(no_base)])
    assert heatmap.main(["--stats", str(no_base), "--output", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()


def test_cosine_similarity_per_layer_and_overall(vectors, tmp_path):
    out, png = tmp_path / "cos.csv", tmp_path / "cos.png"
    assert save_cosine.main(["--vector", str(vectors["skill"]), "--pair", str(vectors["rl"]), str(vectors["base"]),
                             "--pair", str(vectors["base"]), str(vectors["rl"]),
                             "--pair", str(vectors["other"]), str(vectors["base"]),
                             "--labels", "saved", "direct", "negated", "other",
                             "--output", str(out), "--heatmap", str(png)]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    cos = {(r["vector_a"], r["vector_b"], r["group"]): float(r["cosine"]) for r in rows}
    assert len(rows) == 6 * 4  # 6 pairs x (layer0, layer1, outside, all)
    assert cos[("saved", "direct", "all")] == pytest.approx(1.0, abs=1e-6)
    assert cos[("direct", "negated", "layer1")] == pytest.approx(-1.0, abs=1e-6)

    rl, base, other = load_state(vectors["rl"]), load_state(vectors["base"]), load_state(vectors["other"])

    def flat(state, keep):
        return torch.cat([(state[n].double() - base[n].double()).reshape(-1) for n in sorted(rl) if keep(n)])

    for group, keep in (("layer0", lambda n: ".layers.0." in n), ("outside", lambda n: ".layers." not in n),
                        ("all", lambda n: True)):
        a, b = flat(rl, keep), flat(other, keep)
        expected = (a @ b / (a.norm() * b.norm())).item()
        assert cos[("direct", "other", group)] == pytest.approx(expected, abs=1e-5)
    # Independent random perturbations are nearly orthogonal.
    assert abs(cos[("direct", "other", "all")]) < 0.05
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cosine_needs_matching_vectors(vectors, tiny_model_tied, tmp_path):
    tied_rl = perturbed_copy(tiny_model_tied, tmp_path / "tied_rl", seed=3)
    args = ["--pair", str(vectors["rl"]), str(vectors["base"]), "--pair", str(tied_rl), str(tiny_model_tied),
            "--output", str(tmp_path / "cos.csv")]
    assert save_cosine.main(args) == 2  # the untied vector has an lm_head delta the tied one lacks
    assert save_cosine.main(args + ["--exclude", "lm_head"]) == 0
    with open(tmp_path / "cos.csv") as f:
        assert all(not math.isnan(float(r["cosine"])) for r in csv.DictReader(f))
