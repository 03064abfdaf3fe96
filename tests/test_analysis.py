"""analysis/: statistics, heatmaps and cosine similarities of skill vectors, against plain-torch references,
and the random control vector with a skill vector's per-tensor norms."""

import csv
import hashlib
import json
import math
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import inherit_weight
from analysis import extract_delta, heatmap, random_vector, reward_curve, save_cosine
from analysis.extract_delta import layer_and_module, read_rows
from calc_delta_and_save import save_skill_vector
from checkpoint_io import CheckpointError
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


# ----------------------------------------------------------------------------------------------
# analysis/random_vector.py: the "same per-tensor norms, random direction" control


def random_vector_args(like, output, *extra):
    return ["--like", str(like), "--output", str(output), *map(str, extra)]


def test_random_vector_matches_the_skill_vectors_layout_and_norms(vectors, tmp_path):
    out = tmp_path / "random.safetensors"
    assert random_vector.main(random_vector_args(vectors["skill"], out, "--seed", 3)) == 0
    skill, rand = load_file(vectors["skill"]), load_file(out)
    assert list(rand) == list(skill)  # the same names, in the same storage order
    assert any(t.numel() >= 1000 for t in skill.values())
    for name, s in skill.items():
        r = rand[name]
        assert (r.shape, r.dtype) == (s.shape, s.dtype), name
        assert torch.isfinite(r).all()
        assert r.double().norm().item() == pytest.approx(s.double().norm().item(), rel=1e-5), name
        if s.numel() >= 1000:  # a random direction: nearly orthogonal to the skill
            a, b = r.double().reshape(-1), s.double().reshape(-1)
            assert abs((a @ b / (a.norm() * b.norm())).item()) < 0.2, name
            assert not torch.equal(r, s)
    with safe_open(str(vectors["skill"]), "pt") as f:
        skill_meta = f.metadata()
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    for key in ("past_skill_vector", "dtype", "architecture", "tied_embeddings", "grpo_model", "base_model"):
        assert meta[key] == skill_meta[key], key
    assert meta["random_like"] == str(vectors["skill"].resolve()) and meta["seed"] == "3"
    digest = hashlib.sha256(b"".join(rand[n].contiguous().view(torch.uint8).reshape(-1).numpy().tobytes()
                                     for n in rand))
    assert meta["fingerprint"] == "sha256:" + digest.hexdigest() != skill_meta["fingerprint"]


def test_random_vector_keeps_zero_tensors_zero_and_the_dtype(tmp_path):
    like = tmp_path / "like.safetensors"
    g = torch.Generator().manual_seed(0)
    save_file({"a.weight": torch.randn(40, 50, generator=g).to(torch.bfloat16), "zero.bias": torch.zeros(7),
               "b.weight": torch.randn(3, generator=g)}, like, metadata={"format": "pt"})
    out = tmp_path / "rand.safetensors"
    assert random_vector.main(random_vector_args(like, out)) == 0
    skill, rand = load_file(like), load_file(out)
    assert rand["a.weight"].dtype == torch.bfloat16 and rand["zero.bias"].dtype == torch.float32
    assert torch.equal(rand["zero.bias"], torch.zeros(7))
    assert rand["b.weight"].norm().item() == pytest.approx(skill["b.weight"].norm().item(), rel=1e-6)
    # bf16 rounds each element once after scaling: the norm holds to the dtype's precision
    assert rand["a.weight"].double().norm().item() == pytest.approx(skill["a.weight"].double().norm().item(), rel=1e-3)


def test_random_vector_streams_tensors_in_chunks(vectors, tmp_path, monkeypatch):
    monkeypatch.setattr(random_vector, "CHUNK_ELEMENTS", 1000)  # every matrix spans many chunks
    out = tmp_path / "random.safetensors"
    assert random_vector.main(random_vector_args(vectors["skill"], out)) == 0
    skill, rand = load_file(vectors["skill"]), load_file(out)
    assert any(t.numel() > 3000 for t in skill.values())
    for name, s in skill.items():
        assert rand[name].double().norm().item() == pytest.approx(s.double().norm().item(), rel=1e-5), name
        assert rand[name].numel() < 2000 or rand[name].reshape(-1)[-500:].abs().sum() > 0  # the last chunk is filled


def test_random_vector_is_deterministic_from_the_seed(vectors, tmp_path):
    a, b, c = tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "c.safetensors"
    for out, seed in ((a, 0), (b, 0), (c, 1)):
        assert random_vector.main(random_vector_args(vectors["skill"], out, "--seed", seed)) == 0
    assert a.read_bytes() == b.read_bytes()
    ta, tc = load_file(a), load_file(c)
    assert list(ta) == list(tc)
    assert all(not torch.equal(ta[n], tc[n]) for n in ta if ta[n].norm() > 0)

    # A tensor's noise depends on the seed and its name only, not on the other tensors or their positions.
    skill = load_file(vectors["skill"])
    names = list(skill)
    subset = {n: skill[n] for n in names[1:4]}
    subset_like, subset_out = tmp_path / "subset_like.safetensors", tmp_path / "subset.safetensors"
    save_file(subset, subset_like, metadata={"format": "pt"})
    assert random_vector.main(random_vector_args(subset_like, subset_out)) == 0
    sub = load_file(subset_out)
    for n in subset:
        assert torch.equal(sub[n], ta[n]), n


def test_random_vector_refuses_bad_outputs_and_inputs(vectors, tmp_path, capsys):
    out = tmp_path / "random.safetensors"
    assert random_vector.main(random_vector_args(vectors["skill"], out)) == 0
    first = out.read_bytes()
    capsys.readouterr()
    assert random_vector.main(random_vector_args(vectors["skill"], out, "--seed", 1)) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == first
    assert random_vector.main(random_vector_args(vectors["skill"], out, "--seed", 1, "--overwrite")) == 0
    assert out.read_bytes() != first
    # --output == --like: refused, even with --overwrite; the skill vector is untouched
    skill_bytes = vectors["skill"].read_bytes()
    for extra in ([], ["--overwrite"]):
        assert random_vector.main(random_vector_args(vectors["skill"], vectors["skill"], *extra)) == 2
        assert "is (or contains) the input" in capsys.readouterr().err
    assert vectors["skill"].read_bytes() == skill_bytes
    # a model dir, a missing file, a non-safetensors output: one-line errors, nothing written
    assert random_vector.main(random_vector_args(vectors["base"], tmp_path / "x.safetensors")) == 2
    assert "not a skill vector file" in capsys.readouterr().err
    assert random_vector.main(random_vector_args(tmp_path / "missing.safetensors", tmp_path / "x.safetensors")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert random_vector.main(random_vector_args(vectors["skill"], tmp_path / "x.pth")) == 2
    assert ".safetensors" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "x.pth").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random.safetensors"]  # no temporary leftovers
    with pytest.raises(SystemExit):
        random_vector.main(["--help"])
    help_text = capsys.readouterr().out
    assert "--like" in help_text and "--seed" in help_text and "inherit_weight.py" in help_text


def test_inherit_weight_accepts_the_random_vector(vectors, tmp_path):
    import inherit_weight
    rand = tmp_path / "random.safetensors"
    assert random_vector.main(random_vector_args(vectors["skill"], rand, "--seed", 5)) == 0
    out = tmp_path / "target_plus_random"
    assert inherit_weight.main(["--skill_vector", str(rand), "--alpha", "1.0", "--target_models", str(vectors["other"]),
                                "--output_dirs", str(out)]) == 0
    target, result, noise = load_state(vectors["other"]), load_state(out), load_file(rand)
    assert sorted(result) == sorted(target) == sorted(noise)
    for name, t in target.items():
        expected = (t.float() + noise[name].float()).to(t.dtype)  # inherit_weight: float32 sum, one cast
        assert result[name].dtype == t.dtype
        assert torch.equal(result[name], expected), name
        # i.e. result - target is the random tensor, up to the one rounding to the target's dtype (bf16)
        error = (result[name].double() - t.double() - noise[name].double()).abs()
        assert (error <= result[name].double().abs() * 2**-8 + 1e-12).all(), name
    with safe_open(str(next(out.glob("*.safetensors"))), "pt") as f:
        recorded = json.loads(f.metadata()["past_transfer"])
    assert recorded["skill"][0]["skill_vector"] == str(rand.resolve())
    with safe_open(str(rand), "pt") as f:
        assert recorded["skill"][0]["fingerprint"] == f.metadata()["fingerprint"]
    # It is refused where the skill vector is: a target of another architecture, with the same message.
    other_arch = tmp_path / "other_arch"
    shutil.copytree(vectors["other"], other_arch)
    config = json.loads((other_arch / "config.json").read_text())
    (other_arch / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    errors = []
    for vector in (vectors["skill"], rand):
        with pytest.raises(CheckpointError) as failure:
            inherit_weight.inherit([other_arch], [tmp_path / "never"], skill_vectors=[vector], quiet=True)
        errors.append(str(failure.value).replace(str(vector), "VECTOR"))
    assert "num_hidden_layers" in errors[0] and errors[0] == errors[1]
    assert not (tmp_path / "never").exists()


# ----------------------------------------------------------------------------------------------
# analysis/reward_curve.py: the GRPO reward per step, from verl's file logger


def write_metrics(path, steps, monkeypatch):
    """A metrics.jsonl written by verl's own FileLogger (as grpo.sh has it): a validation-only line at
    step 0, then {step: reward} as numpy floats, the way verl logs them."""
    import numpy as np
    from verl.utils.tracking import FileLogger

    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(path))
    logger = FileLogger("past-grpo", "test")
    logger.log({"val-core/acc/mean@1": np.float64(0.5)}, step=0)
    for step, reward in steps.items():
        logger.log({"critic/score/mean": np.float64(reward), "actor/pg_loss": np.float32(0.1)}, step=step)
    logger.finish()
    return path


def test_reward_summary_first_and_last_fifth(tmp_path, monkeypatch):
    first = write_metrics(tmp_path / "metrics.1.jsonl", {s: s / 10 for s in range(1, 11)}, monkeypatch)
    summary = reward_curve.reward_summary(first)
    assert summary["steps"] == list(range(1, 11))  # the validation-only step 0 has no reward
    assert summary["rewards"] == pytest.approx([s / 10 for s in range(1, 11)])
    assert summary["first_20pct"] == pytest.approx(0.15) and summary["last_20pct"] == pytest.approx(0.95)
    # A resumed run: the later file's steps replace the earlier file's.
    resumed = write_metrics(tmp_path / "metrics.jsonl", {9: 2.0, 10: 2.0, 11: 3.0, 12: 3.0, 13: 3.0}, monkeypatch)
    summary = reward_curve.reward_summary([first, resumed])
    assert summary["steps"] == list(range(1, 14)) and summary["rewards"][8:10] == [2.0, 2.0]
    assert summary["first_20pct"] == pytest.approx(0.15) and summary["last_20pct"] == pytest.approx(3.0)
    one = write_metrics(tmp_path / "one.jsonl", {1: 0.4}, monkeypatch)  # at least one step each
    assert reward_curve.reward_summary(one)["first_20pct"] == reward_curve.reward_summary(one)["last_20pct"] == 0.4


def test_reward_curve_writes_png_and_json(tmp_path, monkeypatch, capsys):
    metrics = write_metrics(tmp_path / "metrics.jsonl", {s: s / 10 for s in range(1, 11)}, monkeypatch)
    png, out_json = tmp_path / "plots" / "reward.png", tmp_path / "reward.json"
    assert reward_curve.main([str(metrics), "--output", str(png), "--json", str(out_json)]) == 0
    assert "10 steps" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(out_json.read_text()) == reward_curve.reward_summary(metrics)


def test_reward_curve_errors_name_the_file_and_the_metrics(tmp_path, monkeypatch, capsys):
    metrics = write_metrics(tmp_path / "metrics.jsonl", {1: 0.2, 2: 0.3}, monkeypatch)
    assert reward_curve.main([str(metrics), "--metric", "critic/rewards/mean", "--output", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err
    assert "critic/rewards/mean is in no line of" in err and str(metrics) in err
    assert "actor/pg_loss, critic/score/mean, val-core/acc/mean@1" in err
    assert not (tmp_path / "r.png").exists()
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty.jsonl is empty"):
        reward_curve.reward_summary(tmp_path / "empty.jsonl")
    with pytest.raises(ValueError, match="absent.jsonl: no such file"):
        reward_curve.reward_summary(tmp_path / "absent.jsonl")
