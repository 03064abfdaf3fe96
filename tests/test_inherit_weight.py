"""inherit_weight.py against an independent float32 reference, on real tiny HF checkpoints."""

import json
import os
import re
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import checkpoint_io
import inherit_weight
from calc_delta_and_save import save_skill_vector
from checkpoint_io import CheckpointError
from helpers import load_state, perturbed_copy
from inherit_weight import TransferError, add_delta, inherit, inherited_tensors, skill_delta

REPO_ROOT = Path(__file__).resolve().parent.parent


# ---- independent helpers: plain safetensors/torch loading, the formula written out once more

def as_loaded(model_dir):
    """The tensors as transformers uses them: a tied model's lm_head is its embeddings."""
    state = load_state(model_dir)
    if json.loads((Path(model_dir) / "config.json").read_text()).get("tie_word_embeddings"):
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    return state


def reference(target, rl, base, alpha=1.0):
    return {n: (t.float() + alpha * (rl[n].float() - base[n].float())).to(t.dtype) for n, t in target.items()}


def assert_bit_identical(actual, expected):
    assert sorted(actual) == sorted(expected)
    for name in expected:
        a, e = actual[name], expected[name]
        assert a.dtype == e.dtype and a.shape == e.shape, name
        assert torch.equal(a.view(torch.uint8), e.view(torch.uint8)), f"{name} differs"


def write_variant(src, dst, seed, scale=1e-2, edit=None, config_edit=None):
    """perturbed_copy, then `edit(state)` on its tensors and `config_edit(config)` on its config."""
    dst = perturbed_copy(src, dst, seed, scale)
    if edit:
        state = load_file(dst / "model.safetensors")
        edit(state)
        save_file(state, dst / "model.safetensors", metadata={"format": "pt"})
    if config_edit:
        config = json.loads((dst / "config.json").read_text())
        config_edit(config)
        (dst / "config.json").write_text(json.dumps(config))
    return dst


def leftovers(parent):
    return sorted(p.name for p in Path(parent).iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model, tiny_model_tied):
    """base (the fixture), rl = base + small delta, targets: other perturbations; tied variants too."""
    root = tmp_path_factory.mktemp("iw_models")
    return dict(
        root=root,
        base=tiny_model,
        rl=write_variant(tiny_model, root / "rl", seed=1, scale=1e-3),
        target=write_variant(tiny_model, root / "target", seed=2),
        base_tied=tiny_model_tied,
        rl_tied=write_variant(tiny_model_tied, root / "rl_tied", seed=3, scale=1e-3),
        target_tied=write_variant(tiny_model_tied, root / "target_tied", seed=4),
    )


def test_bit_identical_on_every_checkpoint_format(models, tiny_model_sharded, tiny_model_bin, tmp_path):
    targets = [models["target"], tiny_model_sharded, tiny_model_bin]
    outputs = [tmp_path / f"out{k}" for k in range(3)]
    summaries = inherit(targets, outputs, grpo_model=models["rl"], base_model=models["base"], alphas=0.7,
                        max_shard_size="300KB", quiet=True)
    rl, base = load_state(models["rl"]), load_state(models["base"])
    for target, out, summary in zip(targets, outputs, summaries):
        assert_bit_identical(load_state(out), reference(load_state(target), rl, base, alpha=0.7))
        # A complete HF dir: sharded safetensors + index, format=pt, the target's config and tokenizer.
        index = json.loads((out / "model.safetensors.index.json").read_text())
        shards = sorted(out.glob("model-*-of-*.safetensors"))
        assert len(shards) > 1 and set(index["weight_map"].values()) == {s.name for s in shards}
        assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in load_state(out).values())
        for shard in shards:  # format=pt (transformers checks it) and where the weights came from
            with safe_open(shard, "pt") as f:
                metadata = f.metadata()
            assert metadata["format"] == "pt" and set(metadata) == {"format", "past_transfer"}
            assert json.loads(metadata["past_transfer"]) == {
                "target_model": str(Path(target).resolve()), "exclude": None,
                "skill": [{"grpo_model": str(models["rl"].resolve()), "base_model": str(Path(models["base"]).resolve()),
                           "alpha": 0.7}]}
        for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                     "chat_template.jinja"):
            assert (out / name).read_bytes() == (Path(target) / name).read_bytes()
        assert summary["tensors_changed"] == summary["tensors"] == len(load_state(target))
        assert summary["skill_norm"] == pytest.approx(0.7 * torch.sqrt(sum(
            ((rl[n].float() - base[n].float()) ** 2).sum() for n in rl)).item(), rel=1e-5)
    assert leftovers(tmp_path) == []


def test_applying_the_vector_to_base_gives_rl_and_alpha_zero_gives_target(models, tmp_path):
    inherit([models["base"], models["target"]], [tmp_path / "rl_again", tmp_path / "same"],
            grpo_model=models["rl"], base_model=models["base"], quiet=True)
    assert_bit_identical(load_state(tmp_path / "rl_again"), load_state(models["rl"]))
    inherit([models["target"]], [tmp_path / "zero"], grpo_model=models["rl"], base_model=models["base"],
            alphas=0.0, quiet=True)
    assert_bit_identical(load_state(tmp_path / "zero"), load_state(models["target"]))


def test_tied_embeddings(models, tmp_path):
    rl_t, base_t = as_loaded(models["rl_tied"]), as_loaded(models["base_tied"])
    # All tied: the output stays tied and stores only the embeddings.
    [s] = inherit([models["target_tied"]], [tmp_path / "tied"], grpo_model=models["rl_tied"],
                  base_model=models["base_tied"], quiet=True)
    out = load_state(tmp_path / "tied")
    assert "lm_head.weight" not in out
    assert json.loads((tmp_path / "tied" / "config.json").read_text())["tie_word_embeddings"] is True
    assert_bit_identical(out, reference(load_state(models["target_tied"]), rl_t, base_t))
    assert "kept tied" in s["embeddings"]

    # Untied sources onto a tied target: the head delta would be lost if the output stayed tied.
    [s] = inherit([models["target_tied"]], [tmp_path / "untied"], grpo_model=models["rl"],
                  base_model=models["base"], quiet=True)
    assert "UNTIED" in s["embeddings"]
    assert json.loads((tmp_path / "untied" / "config.json").read_text())["tie_word_embeddings"] is False
    assert_bit_identical(load_state(tmp_path / "untied"),
                         reference(as_loaded(models["target_tied"]), load_state(models["rl"]), load_state(models["base"])))

    # Tied sources onto an untied target: its own lm_head receives the embedding delta.
    [s] = inherit([models["target"]], [tmp_path / "head"], grpo_model=models["rl_tied"],
                  base_model=models["base_tied"], quiet=True)
    assert "received the embedding delta" in s["embeddings"]
    assert_bit_identical(load_state(tmp_path / "head"), reference(load_state(models["target"]), rl_t, base_t))


def test_outputs_load_with_transformers_as_exactly_the_computed_weights(models, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    inherit([models["target"], models["target_tied"]], [tmp_path / "a", tmp_path / "b"],
            grpo_model=models["rl"], base_model=models["base"], quiet=True)
    rl, base = load_state(models["rl"]), load_state(models["base"])
    for out, target in ((tmp_path / "a", models["target"]), (tmp_path / "b", models["target_tied"])):
        model = AutoModelForCausalLM.from_pretrained(out)
        expected = reference(as_loaded(target), rl, base)
        # What transformers computes with is the operator's result, bit for bit: the head of the
        # untied output is not silently re-tied to the embeddings, nothing is converted.
        weights = dict(model.named_parameters(remove_duplicate=False))
        assert sorted(weights) == sorted(expected)
        assert all(torch.equal(weights[n].view(torch.uint8), expected[n].view(torch.uint8)) for n in expected)
        tokenizer = AutoTokenizer.from_pretrained(out)
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Who wrote it?"}],
                                               add_generation_prompt=True, return_tensors="pt", return_dict=True)
        assert model.generate(**prompt, max_new_tokens=4, do_sample=False).shape[1] == prompt["input_ids"].shape[1] + 4


def test_n_targets_in_one_run_equal_n_single_runs(models, tiny_model_sharded, tmp_path):
    targets = [models["target"], tiny_model_sharded]
    inherit(targets, [tmp_path / "both0", tmp_path / "both1"], grpo_model=models["rl"], base_model=models["base"],
            quiet=True)
    for k, target in enumerate(targets):
        inherit([target], [tmp_path / f"single{k}"], grpo_model=models["rl"], base_model=models["base"], quiet=True)
        files = sorted(p.name for p in (tmp_path / f"single{k}").iterdir())
        assert files == sorted(p.name for p in (tmp_path / f"both{k}").iterdir())
        for name in files:
            assert (tmp_path / f"single{k}" / name).read_bytes() == (tmp_path / f"both{k}" / name).read_bytes()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("sources", ["untied", "tied"])
def test_saved_skill_vector_equals_direct_path(models, tmp_path, suffix, sources):
    rl, base = (models["rl"], models["base"]) if sources == "untied" else (models["rl_tied"], models["base_tied"])
    vector = tmp_path / f"skill{suffix}"
    save_skill_vector(rl, base, vector, quiet=True)
    inherit([models["target"], models["target_tied"]], [tmp_path / "direct0", tmp_path / "direct1"],
            grpo_model=rl, base_model=base, alphas=0.5, quiet=True)
    inherit([models["target"], models["target_tied"]], [tmp_path / "vec0", tmp_path / "vec1"],
            skill_vectors=[vector], alphas=[0.5], quiet=True)
    for k in range(2):
        assert_bit_identical(load_state(tmp_path / f"vec{k}"), load_state(tmp_path / f"direct{k}"))
        for f in (tmp_path / f"direct{k}").glob("*.json"):
            assert (tmp_path / f"vec{k}" / f.name).read_bytes() == f.read_bytes()


@pytest.fixture(scope="module")
def two_vectors(models, tmp_path_factory):
    """Two float32 skill vectors from the same base (rl - base and rl2 - base)."""
    root = tmp_path_factory.mktemp("two_vectors")
    rl2 = perturbed_copy(models["base"], root / "rl2", seed=13, scale=2e-3)
    save_skill_vector(models["rl"], models["base"], root / "v1.safetensors", quiet=True)
    save_skill_vector(rl2, models["base"], root / "v2.safetensors", quiet=True)
    return root / "v1.safetensors", root / "v2.safetensors"


def test_two_vectors_equal_an_independent_float32_reference(models, two_vectors, tmp_path, capsys):
    v1, v2 = two_vectors
    outs = [tmp_path / "untied", tmp_path / "was_tied"]
    rc = inherit_weight.main(["--skill_vector", str(v1), str(v2), "--alpha", "0.7", "-0.4", "--target_models",
                              str(models["target"]), str(models["target_tied"]), "--output_dirs", *map(str, outs)])
    assert rc == 0, capsys.readouterr().err
    a, b = load_file(v1), load_file(v2)  # float32 vectors, as saved
    for target, out in zip((models["target"], models["target_tied"]), outs):
        expected = {n: (t.float() + (0.7 * a[n] + -0.4 * b[n])).to(t.dtype) for n, t in as_loaded(target).items()}
        assert_bit_identical(load_state(out), expected)
        with safe_open(out / "model.safetensors", "pt") as f:
            recorded = json.loads(f.metadata()["past_transfer"])
        assert [(s["skill_vector"], s["alpha"]) for s in recorded["skill"]] == [(str(v1), 0.7), (str(v2), -0.4)]
        for s, v in zip(recorded["skill"], (v1, v2)):
            with safe_open(v, "pt") as f:
                assert s["fingerprint"] == f.metadata()["fingerprint"] and s["fingerprint"].startswith("sha256:")
    # The tied target received a separate lm_head delta, so it is written untied.
    assert json.loads((outs[1] / "config.json").read_text())["tie_word_embeddings"] is False


def _vector_cases(models, two_vectors, tmp_path):
    v1, v2 = two_vectors

    def edited(edit):
        state = load_file(v1)
        with safe_open(v1, "pt") as f:
            metadata = f.metadata()
        edit(state)
        save_file(state, tmp_path / "edited.safetensors", metadata=metadata)
        return [tmp_path / "edited.safetensors"]

    def reshaped(state):
        state["model.layers.0.mlp.up_proj.weight"] = state["model.layers.0.mlp.up_proj.weight"][:-1].clone()

    other_arch = write_variant(models["target"], tmp_path / "heads", seed=5,
                               config_edit=lambda c: c.update(num_attention_heads=1, num_key_value_heads=1))
    return {
        "names": (lambda: edited(lambda s: s.pop("model.layers.1.self_attn.o_proj.weight")), None,
                  r"only in target .*model.layers.1.self_attn.o_proj.weight"),
        "shapes": (lambda: edited(reshaped), None, r"model.layers.0.mlp.up_proj.weight: skill vector has shape"),
        "architecture": (lambda: [v1], other_arch, "config mismatch: num_attention_heads = 2 in skill vector"),
        "vectors_differ": (lambda: [v1] + edited(reshaped), None, r"up_proj.weight: shape .* in skill vector"),
        "alphas": (lambda: [v1, v2], None, r"give one finite value per skill vector \(2\)"),
    }


@pytest.mark.parametrize("case", ["names", "shapes", "architecture", "vectors_differ", "alphas"])
def test_mismatched_vectors_are_refused_before_anything_is_written(models, two_vectors, tmp_path, case, capsys):
    make_vectors, target, message = _vector_cases(models, two_vectors, tmp_path)[case]
    vectors = make_vectors()
    alphas = ["1", "2", "3"] if case == "alphas" else ["1"]
    out_parent = tmp_path / "outs"
    rc = inherit_weight.main(["--skill_vector", *map(str, vectors), "--alpha", *alphas, "--target_models",
                              str(target or models["target"]), "--output_dirs", str(out_parent / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not out_parent.exists()
    with pytest.raises(CheckpointError, match=message):  # the streaming API checks the same, at call time
        inherited_tensors(target or models["target"], vectors, [1.0, 2.0, 3.0] if case == "alphas" else 1.0)


def test_exclude_keeps_the_targets_tensors(models, tmp_path):
    [s] = inherit([models["target"]], [tmp_path / "out"], grpo_model=models["rl"], base_model=models["base"],
                  exclude=r"embed_tokens|lm_head", quiet=True)
    target, out = load_state(models["target"]), load_state(tmp_path / "out")
    expected = reference(target, load_state(models["rl"]), load_state(models["base"]))
    expected["model.embed_tokens.weight"] = target["model.embed_tokens.weight"]
    expected["lm_head.weight"] = target["lm_head.weight"]
    assert_bit_identical(out, expected)
    assert s["excluded"] == ["lm_head.weight", "model.embed_tokens.weight"]
    assert s["tensors_changed"] == s["tensors"] - 2



def test_a_bad_exclude_pattern_is_one_error_line_and_writes_nothing(models, tmp_path, capsys):
    rc = inherit_weight.main(["--grpo_model", str(models["rl"]), "--base_model", str(models["base"]), "--target_models",
                              str(models["target"]), "--output_dirs", str(tmp_path / "out"), "--exclude", "embed_tokens|(lm_head"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --exclude") and "regular expression" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []

def _add_vocab_rows(extra):
    def edit(state):
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            t = state[name]
            state[name] = torch.cat([t, torch.full((extra, t.shape[1]), 0.5, dtype=t.dtype)])
    return edit


def test_vocabulary_mismatch(models, tmp_path):
    bigger = write_variant(models["target"], tmp_path / "bigger_vocab", seed=6, edit=_add_vocab_rows(64),
                           config_edit=lambda c: c.update(vocab_size=c["vocab_size"] + 64))
    rows = load_state(models["base"])["model.embed_tokens.weight"].shape[0]
    with pytest.raises(TransferError, match=rf"rows {rows}\.\.{rows + 63} exist only in the target.*--shared_vocab_rows"):
        inherit([bigger], [tmp_path / "out"], grpo_model=models["rl"], base_model=models["base"], quiet=True)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []

    inherit([bigger], [tmp_path / "out"], grpo_model=models["rl"], base_model=models["base"],
            shared_vocab_rows=True, quiet=True)
    target, out = load_state(bigger), load_state(tmp_path / "out")
    rl, base = load_state(models["rl"]), load_state(models["base"])
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        expected_rows = reference({name: target[name][:rows]}, rl, base)[name]
        assert torch.equal(out[name][:rows].view(torch.uint8), expected_rows.view(torch.uint8))
        assert torch.equal(out[name][rows:], target[name][rows:])  # the target's extra rows, untouched
    others = {n: t for n, t in target.items() if "embed" not in n and "lm_head" not in n}
    assert_bit_identical({n: out[n] for n in others}, reference(others, rl, base))


def _bad_inputs(models, tmp_path):
    def nan_target():
        def edit(state):
            state["model.layers.1.mlp.up_proj.weight"][3, 5] = float("nan")
        return write_variant(models["target"], tmp_path / "nan_target", seed=7, edit=edit)

    def inf_result():  # finite inputs whose float32 sum overflows
        def edit(state):
            state["model.norm.weight"][0] = 3e38
        rl = write_variant(models["base"], tmp_path / "huge_rl", seed=8, scale=0, edit=edit)
        return dict(grpo_model=rl, target=write_variant(models["target"], tmp_path / "huge_t", seed=9, edit=edit))

    def missing_tensor():
        return write_variant(models["target"], tmp_path / "missing", seed=10,
                             edit=lambda s: s.pop("model.layers.0.mlp.up_proj.weight"))

    def config_mismatch():
        return write_variant(models["target"], tmp_path / "heads", seed=11,
                             config_edit=lambda c: c.update(num_hidden_layers=3))

    def fsdp_only():
        actor = tmp_path / "verl_ckpt" / "global_step_5" / "actor"
        actor.mkdir(parents=True)
        (actor / "model_world_size_2_rank_0.pt").write_bytes(b"")
        return dict(grpo_model=actor.parent)

    return {
        "nan": (nan_target, "NaN or Inf in model.layers.1.mlp.up_proj.weight"),
        "inf": (inf_result, "NaN or Inf in model.norm.weight"),
        "names": (missing_tensor, r"only in rl .*model.layers.0.mlp.up_proj.weight"),
        "config": (config_mismatch, "num_hidden_layers"),
        "fsdp": (fsdp_only, "merge_fsdp_to_hf.sh"),
        "output_is_input": (lambda: dict(output=models["target"]), "is \\(or contains\\) the input"),
        "output_contains_input": (lambda: dict(output=Path(models["target"]).parent), "is \\(or contains\\) the input"),
    }


@pytest.mark.parametrize("case", ["nan", "inf", "names", "config", "fsdp", "output_is_input", "output_contains_input"])
def test_bad_inputs_fail_before_any_output_exists(models, tmp_path, case):
    make, message = _bad_inputs(models, tmp_path)[case]
    made = make()
    args = dict(target=models["target"], grpo_model=models["rl"], output=tmp_path / "out")
    args.update(made if isinstance(made, dict) else {"target": made})
    before = sorted(Path(args["output"]).parent.iterdir()) if Path(args["output"]).parent.exists() else []
    with pytest.raises(checkpoint_io.USER_ERRORS, match=message):
        inherit([args["target"]], [args["output"]], grpo_model=args["grpo_model"], base_model=models["base"],
                quiet=True)
    assert not (tmp_path / "out").exists()
    assert sorted(Path(args["output"]).parent.iterdir()) == before  # no temporary dir left behind


def _damage(case, target, tmp_path):
    """A copy of a target damaged the way a user meets it; returns (model dir, expected message)."""
    damaged = tmp_path / f"damaged_{case}"
    shutil.copytree(target, damaged)
    if case == "config":
        (damaged / "config.json").write_text('{"model_type": "qwen2", "hidden_size": 128,')
        return damaged, rf"{damaged / 'config.json'} is not valid JSON"
    if case == "missing_shard":
        shard = sorted(damaged.glob("model-*.safetensors"))[-1]
        shard.unlink()
        return damaged, rf"puts tensor \S+ in {shard.name}, which is missing from {damaged}"
    file = damaged / "model.safetensors"
    raw = file.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    if case == "truncated":  # a partial copy: the last 1000 bytes are missing
        file.write_bytes(raw[:-1000])
        header = json.loads(raw[8:8 + header_len])
        ends = sorted((8 + header_len + e["data_offsets"][1], n) for n, e in header.items() if n != "__metadata__")
        end, first_cut = next((end, n) for end, n in ends if end > len(raw) - 1000)
        return damaged, (rf"{file} is truncated: tensor {re.escape(first_cut)} ends at byte {end} but the file "
                         rf"has {len(raw) - 1000} bytes")
    file.write_bytes(raw[:8] + b"\xff" * 16 + raw[24:])  # bytes of the JSON header overwritten
    return damaged, rf"{file}: the safetensors header is not valid JSON"


@pytest.mark.parametrize("case", ["truncated", "header", "missing_shard", "config"])
@pytest.mark.parametrize("role", ["target", "grpo_model"])
def test_damaged_checkpoint_is_refused_while_planning(models, tiny_model_sharded, tmp_path, case, role, capsys):
    source = tiny_model_sharded if case == "missing_shard" else models["target" if role == "target" else "rl"]
    damaged, message = _damage(case, Path(source), tmp_path)
    inputs = {"target": models["target"], "grpo_model": models["rl"], role: damaged}
    if case == "missing_shard" and role == "grpo_model":
        inputs["target"] = tiny_model_sharded
    out_parent = tmp_path / "outs"
    rc = inherit_weight.main(["--grpo_model", str(inputs["grpo_model"]), "--base_model", str(models["base"]),
                              "--target_models", str(inputs["target"]), "--output_dirs", str(out_parent / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err  # one line, no traceback
    assert re.search(message, err), err
    assert not out_parent.exists()


def test_existing_output_needs_overwrite(models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous result")
    with pytest.raises(CheckpointError, match="--overwrite"):
        inherit([models["target"]], [out], grpo_model=models["rl"], base_model=models["base"], quiet=True)
    assert (out / "old.txt").exists()
    inherit([models["target"]], [out], grpo_model=models["rl"], base_model=models["base"], overwrite=True, quiet=True)
    assert not (out / "old.txt").exists() and (out / "model.safetensors").exists()
    assert leftovers(tmp_path) == []


def test_dry_run_checks_and_writes_nothing(models, tmp_path, capsys):
    rc = inherit_weight.main(["--grpo_model", str(models["rl"]), "--base_model", str(models["base"]),
                              "--target_models", str(models["target"]), "--output_dirs", str(tmp_path / "out"),
                              "--dry_run"])
    assert rc == 0
    assert "[dry run]" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    rc = inherit_weight.main(["--grpo_model", str(models["rl"]), "--base_model", str(models["base"]),
                              "--target_models", str(models["target"]), "--output_dirs", str(models["target"]),
                              "--dry_run"])
    assert rc == 2 and "is (or contains) the input" in capsys.readouterr().err


def test_verl_checkpoint_dir_with_hf_weights(models, tmp_path):
    hf = tmp_path / "grpo" / "global_step_3" / "actor" / "huggingface"
    shutil.copytree(models["rl"], hf)
    inherit([models["target"]], [tmp_path / "from_verl"], grpo_model=tmp_path / "grpo" / "global_step_3",
            base_model=models["base"], quiet=True)
    inherit([models["target"]], [tmp_path / "from_hf"], grpo_model=models["rl"], base_model=models["base"], quiet=True)
    assert_bit_identical(load_state(tmp_path / "from_verl"), load_state(tmp_path / "from_hf"))


def test_injected_failure_mid_write_leaves_nothing(models, tmp_path, monkeypatch):
    real_write, calls = checkpoint_io.ShardedWriter.write, []

    def failing_write(self, name, data):
        calls.append(name)
        if len(calls) == 5:
            raise OSError("No space left on device (injected)")
        return real_write(self, name, data)

    monkeypatch.setattr(checkpoint_io.ShardedWriter, "write", failing_write)
    with pytest.raises(OSError, match="injected"):
        inherit([models["target"], models["target_tied"]], [tmp_path / "a", tmp_path / "b"],
                grpo_model=models["rl"], base_model=models["base"], quiet=True)
    assert len(calls) == 5
    assert list(tmp_path.iterdir()) == []


SLOW_WRITER = """
import sys, time
from pathlib import Path
import checkpoint_io, inherit_weight
real_write = checkpoint_io.ShardedWriter.write
def slow_write(self, name, data):
    real_write(self, name, data)
    Path(sys.argv[-1]).touch()  # tell the test we are mid-write
    time.sleep(0.5)
checkpoint_io.ShardedWriter.write = slow_write
sys.exit(inherit_weight.main(sys.argv[1:-1]))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_leaves_no_output_dir(models, tmp_path, sig):
    out_parent = tmp_path / "outs"
    flag = tmp_path / "mid_write"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, "--grpo_model", str(models["rl"]), "--base_model", str(models["base"]),
         "--target_models", str(models["target"]), "--output_dirs", str(out_parent / "inherited"), str(flag)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not flag.exists():
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.time() < deadline, "the run never started writing"
            time.sleep(0.05)
        assert [p.name for p in out_parent.iterdir()][0].startswith(".inherited.tmp-")
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out_parent / "inherited").exists()
    if sig == signal.SIGTERM:
        assert list(out_parent.iterdir()) == []  # cleaned up on the way out
    else:  # SIGKILL cannot be caught: only a hidden, clearly temporary dir may remain
        assert all(p.name.startswith(".inherited.tmp-") for p in out_parent.iterdir())


def test_cli_from_the_repo_root(models, tmp_path):
    help_text = subprocess.run([sys.executable, "inherit_weight.py", "--help"], cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=120, check=True).stdout
    assert "--skill_vector" in help_text and "--exclude" in help_text
    proc = subprocess.run(
        [sys.executable, "inherit_weight.py", "--grpo_model", str(models["rl"]), "--base_model", str(models["base"]),
         "--target_models", str(models["target"]), "--output_dirs", str(tmp_path / "cli_out"), "--alpha", "0.5"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "tensors changed" in proc.stdout and "||alpha*skill||" in proc.stdout
    expected = reference(load_state(models["target"]), load_state(models["rl"]), load_state(models["base"]), 0.5)
    assert_bit_identical(load_state(tmp_path / "cli_out"), expected)


def test_float32_target_from_bf16_sources(models, tmp_path):
    def to_float32(state):
        for name in state:
            state[name] = state[name].float()
    target32 = write_variant(models["target"], tmp_path / "target32", seed=12, edit=to_float32)
    inherit([target32, models["target"]], [tmp_path / "out32", tmp_path / "out16"], grpo_model=models["rl"],
            base_model=models["base"], quiet=True)
    rl, base = load_state(models["rl"]), load_state(models["base"])
    out32 = load_state(tmp_path / "out32")
    assert all(t.dtype == torch.float32 for t in out32.values())
    assert_bit_identical(out32, reference(load_state(target32), rl, base))
    assert_bit_identical(load_state(tmp_path / "out16"), reference(load_state(models["target"]), rl, base))


def test_block_math_is_float32_with_one_cast():
    g = torch.Generator().manual_seed(0)
    target, rl, base, saved = (torch.randn(1000, generator=g).to(torch.bfloat16) for _ in range(4))
    saved = saved.float() * 1e-2
    out, scratch, work = torch.empty(1000), torch.empty(1000), torch.empty(1000)
    delta = skill_delta([(rl, base), (saved,)], [0.5, -2.0], out, scratch)
    assert torch.equal(delta, 0.5 * (rl.float() - base.float()) + -2.0 * saved)
    result = torch.empty(1000, dtype=torch.bfloat16)
    add_delta(target, delta, work, result)
    assert torch.equal(result, (target.float() + delta).to(torch.bfloat16))
    # Doing the sum in bf16 instead would round differently: the single cast matters.
    assert not torch.equal(result, target + delta.to(torch.bfloat16))
    # rl - base with alpha 1, added to base, gives rl back exactly.
    add_delta(base, skill_delta([(rl, base)], [1.0], out, scratch), work, result)
    assert torch.equal(result, rl)


def test_tensors_of_many_blocks_are_bit_identical_on_any_core_count(tiny_model, tmp_path, monkeypatch):
    # Tensors spanning two read chunks and ~20 compute blocks, split over 1 or 3 worker threads:
    # every byte is the reference formula's (which main's one-thread operator matched bit for bit),
    # and so are the statistics, summed in block order.
    shapes = {"model.embed_tokens.weight": (1031, 4099), "model.layers.0.mlp.up_proj.weight": (2500, 1999),
              "model.norm.weight": (4099,)}
    g = torch.Generator().manual_seed(0)
    base = {n: torch.randn(shape, generator=g).to(torch.bfloat16) for n, shape in shapes.items()}
    states = {"base": base, "rl": {n: (t.float() + 1e-3 * torch.randn(t.shape, generator=g)).to(t.dtype)
                                   for n, t in base.items()}}
    for k in range(2):
        states[f"target{k}"] = {n: (t.float() + 1e-2 * torch.randn(t.shape, generator=g)).to(t.dtype)
                                for n, t in base.items()}
    for name, state in states.items():
        (tmp_path / name).mkdir()
        shutil.copy(Path(tiny_model) / "config.json", tmp_path / name / "config.json")
        save_file(state, tmp_path / name / "model.safetensors", metadata={"format": "pt"})
    summaries = {}
    for cores in (1, 3):
        monkeypatch.setattr(inherit_weight, "usable_cores", lambda: cores)
        outputs = [tmp_path / f"out{cores}_{k}" for k in range(2)]
        summaries[cores] = inherit([tmp_path / "target0", tmp_path / "target1"], outputs, grpo_model=tmp_path / "rl",
                                   base_model=tmp_path / "base", alphas=0.7, quiet=True)
        for k, out in enumerate(outputs):
            assert_bit_identical(load_state(out), reference(states[f"target{k}"], states["rl"], base, alpha=0.7))
    assert [s["skill_norm"] for s in summaries[1]] == [s["skill_norm"] for s in summaries[3]]


def test_export_mergekit_config(models, two_vectors, tmp_path, capsys):
    # With --dry_run the config is the only file written: mergekit's task_arithmetic with
    # base_model = base, rl at weight λ and the target at weight 1 (tests/test_mergekit.py runs it).
    config = tmp_path / "past.yml"
    assert inherit_weight.main(["--grpo_model", str(models["rl"]), "--base_model", str(models["base"]), "--target_models",
                 str(models["target"]), "--output_dirs", str(tmp_path / "out"), "--alpha", "0.7", "--dry_run",
                 "--export_mergekit_config", str(config)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["past.yml"]
    assert yaml.safe_load(config.read_text()) == {
        "merge_method": "task_arithmetic", "base_model": str(Path(models["base"]).resolve()),
        "models": [{"model": str(Path(models["rl"]).resolve()), "parameters": {"weight": 0.7}},
                   {"model": str(Path(models["target"]).resolve()), "parameters": {"weight": 1.0}}],
        "dtype": "float32", "out_dtype": "bfloat16"}
    # What the config cannot express is refused, naming the option, before anything is written.
    config.unlink()
    rl_base = ["--grpo_model", str(models["rl"]), "--base_model", str(models["base"])]
    one = ["--target_models", str(models["target"]), "--output_dirs", str(tmp_path / "out")]
    for args, problem in (([*rl_base, *one, "--exclude", "lm_head"], "--exclude"),
                          (["--skill_vector", str(two_vectors[0]), *one], "--skill_vector"),
                          ([*rl_base, "--target_models", str(models["target"]), str(models["target_tied"]),
                            "--output_dirs", str(tmp_path / "o1"), str(tmp_path / "o2")], "2 targets")):
        capsys.readouterr()
        assert inherit_weight.main([*args, "--export_mergekit_config", str(config)]) == 2
        assert problem in capsys.readouterr().err
        assert list(tmp_path.iterdir()) == []


def test_inherited_tensors_are_what_the_cli_writes(models, two_vectors, tmp_path):
    v1, v2 = two_vectors
    tied_vector = tmp_path / "tied.safetensors"
    save_skill_vector(models["rl_tied"], models["base_tied"], tied_vector, quiet=True)
    for target, vectors, alphas in ((models["target"], [v1, v2], [0.7, -0.4]),
                                    (models["target_tied"], [tied_vector], [-1.5])):
        out = tmp_path / f"out_{Path(target).name}"
        inherit([target], [out], skill_vectors=vectors, alphas=alphas, quiet=True)
        streamed = inherited_tensors(target, vectors, alphas)
        names = []
        for name, tensor in streamed:
            names.append(name)
            assert torch.equal(tensor.view(torch.uint8), load_state(out)[name].view(torch.uint8)), name
        assert names == list(load_state(target))  # every stored tensor, in the target's order
    # Checks run at call time, before the first tensor: a tied target would be untied by this vector.
    with pytest.raises(TransferError, match="ties lm_head to its embeddings"):
        inherited_tensors(models["target_tied"], [v1], 1.0)
    assert len(list(inherited_tensors(models["target_tied"], [v1], 1.0, exclude="lm_head"))) == len(
        load_state(models["target_tied"]))
