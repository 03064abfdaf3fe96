"""inplace_transfer.py: an engine's weights set in place to target + λ·v compute what a fresh
engine loaded from the model inherit_weight.py writes for that λ computes -- outputs compared, not
`weight` attributes (vLLM's CPU build computes with repacked copies of them). transformers in
process; vLLM (CPU build) in a fresh interpreter: prompt log-probs and greedy tokens of one
engine moved from λ to λ against fresh engines per λ, then the sweep entry point on vLLM."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import inherit_weight
from eval_loogle.common import load_eval_set
from generation import render_chat
from inplace_transfer import apply_to_hf, check_inputs
from prepare_data import loogle_to_parquet

REPO_ROOT = Path(__file__).resolve().parent.parent
ALPHAS = (-0.5, 1.0, 0.0)  # the in-place engine visits them in this order: 0 last, after the others
NEW_TOKENS = 8


def written_model(target, vector, alpha, out):
    """The model inherit_weight.py writes for target + alpha·vector."""
    assert inherit_weight.main(["--skill_vector", str(vector), "--alpha", str(alpha), "--target_models", str(target),
                                "--output_dirs", str(out)]) in (0, None)
    return out


@pytest.fixture(scope="module")
def written(tiny_model, tiny_skill_vector, tmp_path_factory):
    root = tmp_path_factory.mktemp("written")
    return {a: written_model(tiny_model, tiny_skill_vector, a, root / f"alpha{a:g}") for a in ALPHAS}


# --- transformers -------------------------------------------------------------------------------


def logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def test_hf_model_in_place_equals_the_written_model(tiny_model, tiny_skill_vector, tiny_tokenizer, written):
    from transformers import AutoModelForCausalLM

    ids = tiny_tokenizer("In 1834, Émile Laurent rebuilt the salt works in Cádiz.")["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    before = logits(model, ids)
    seen = {}
    for alpha in ALPHAS:
        assert apply_to_hf(model, tiny_model, [tiny_skill_vector], [alpha]) == len(model.state_dict())
        fresh = AutoModelForCausalLM.from_pretrained(written[alpha]).eval()
        seen[alpha] = logits(model, ids)
        assert torch.equal(seen[alpha], logits(fresh, ids)), f"λ = {alpha}"
    assert not torch.equal(seen[-0.5], seen[1.0]) and not torch.equal(seen[1.0], seen[0.0])
    assert torch.equal(seen[0.0], before)  # back to λ = 0 after the others: a replacement, not a sum


def test_tied_target_the_vector_would_untie_is_refused_before_any_change(tiny_model_tied, tiny_skill_vector):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_tied)
    state = {n: t.clone() for n, t in model.state_dict().items()}
    with pytest.raises(inherit_weight.TransferError, match="ties lm_head to its embeddings"):
        apply_to_hf(model, tiny_model_tied, [tiny_skill_vector], [0.5])
    assert all(torch.equal(state[n], t) for n, t in model.state_dict().items())


def test_one_alpha_per_vector(tiny_model, tiny_skill_vector):
    with pytest.raises(inherit_weight.TransferError, match="2 alphas for 1 skill vectors"):
        check_inputs(tiny_model, [tiny_skill_vector], [0.5, 1.0])


# --- vLLM (CPU build) ---------------------------------------------------------------------------

ENGINES = """
import gc, json, sys
from generation import make_generator
from inplace_transfer import apply_to_vllm, vllm_engine_options
from vllm import SamplingParams
from vllm.inputs import TokensPrompt


def record(generator, spec):
    params = SamplingParams(max_tokens=spec["new_tokens"], temperature=0, prompt_logprobs=0)
    outs = generator.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in spec["prompt_ids"]], params, use_tqdm=False)
    # the sweep's own call: generation.py with the eval's sampling arguments
    texts = generator.generate(spec["conversations"], max_new_tokens=spec["new_tokens"], temperature=0, top_p=0.95, seed=0)
    return {"tokens": [list(o.outputs[0].token_ids) for o in outs],
            "prompt_logprobs": [[d[i].logprob for i, d in zip(o.prompt_token_ids[1:], o.prompt_logprobs[1:])] for o in outs],
            "texts": [t for (t,) in texts]}


def main():
    spec = json.load(open(sys.argv[1]))
    results = {}
    *first, last = spec["alphas"]
    for alpha in first:  # fresh engines, one at a time
        generator = make_generator("vllm", spec["written"][str(alpha)], **vllm_engine_options())
        results[f"fresh {alpha}"] = record(generator, spec)
        del generator
        gc.collect()
    generator = make_generator("vllm", spec["written"][str(last)], **vllm_engine_options())
    results[f"fresh {last}"] = record(generator, spec)
    for alpha in spec["alphas"]:  # this engine, moved from λ to λ from the on-disk target
        apply_to_vllm(generator.llm, spec["target"], [spec["vector"]], [alpha])
        results[f"in place {alpha}"] = record(generator, spec)
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
"""


def vllm_env():
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}


@pytest.fixture(scope="module")
def eval_data(loogle_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    loogle_to_parquet.main(["--input", str(loogle_corpus), "--output_dir", str(out), "--passages", "4"])
    return out


@pytest.fixture(scope="module")
def engines(tiny_model, tiny_skill_vector, tiny_tokenizer, written, eval_data, tmp_path_factory):
    """What vLLM computes on passage 4's prompts: fresh engines from each written model, and one
    engine updated in place to each λ (see ENGINES)."""
    conversations = [q["prompt"] for q in load_eval_set(4, data_dir=eval_data).questions]
    root = tmp_path_factory.mktemp("engines")
    spec = {"alphas": list(ALPHAS), "written": {str(a): str(p) for a, p in written.items()}, "target": str(tiny_model),
            "vector": str(tiny_skill_vector), "conversations": conversations, "new_tokens": NEW_TOKENS,
            "prompt_ids": [render_chat(tiny_tokenizer, c) for c in conversations]}
    (root / "spec.json").write_text(json.dumps(spec))
    (root / "engines.py").write_text(textwrap.dedent(ENGINES))
    done = subprocess.run([sys.executable, str(root / "engines.py"), str(root / "spec.json")], capture_output=True, text=True,
                          env=vllm_env(), cwd=REPO_ROOT, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.split("RESULT ", 1)[1].splitlines()[0])


@pytest.mark.slow
def test_vllm_engine_in_place_equals_fresh_engines_of_the_written_models(engines):
    for alpha in ALPHAS:
        fresh, in_place = engines[f"fresh {alpha}"], engines[f"in place {alpha}"]
        assert in_place["tokens"] == fresh["tokens"], f"λ = {alpha}: greedy tokens differ"
        assert in_place["texts"] == fresh["texts"]
        for got, want in zip(in_place["prompt_logprobs"], fresh["prompt_logprobs"], strict=True):
            assert got == pytest.approx(want, abs=1e-5), f"λ = {alpha}: prompt log-probs differ"
    # and the λ values give other outputs
    outputs = {alpha: (engines[f"fresh {alpha}"]["tokens"], engines[f"fresh {alpha}"]["prompt_logprobs"]) for alpha in ALPHAS}
    assert outputs[-0.5] != outputs[0.0] and outputs[1.0] != outputs[0.0] and outputs[-0.5] != outputs[1.0]


@pytest.mark.slow
def test_sweep_entry_point_on_vllm_answers_as_fresh_engines_do(engines, tiny_model, tiny_skill_vector, eval_data, lexical_judge_url, tmp_path):
    """`python -m eval_loogle.sweep_alpha --backend vllm`, greedy: per λ the answers of a fresh
    engine of the written model, judged and filed per λ."""
    results = tmp_path / "eval_results"
    done = subprocess.run(
        [sys.executable, "-m", "eval_loogle.sweep_alpha", "--backend", "vllm", "--target_model", str(tiny_model),
         "--skill_vector", str(tiny_skill_vector), "--alphas", *map(str, ALPHAS), "--passage_idx", "4", "--n_runs", "1",
         "--temperature", "0", "--max_new_tokens", str(NEW_TOKENS), "--data_dir", str(eval_data), "--results_dir", str(results),
         "--judge_url", lexical_judge_url, "--no_metrics"],
        capture_output=True, text=True, env=vllm_env(), cwd=REPO_ROOT, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stderr.count("engine (vllm) loaded") == 1
    for alpha in ALPHAS:
        doc = json.loads((results / f"inherited_a{alpha:g}" / "passage4" / "test_results.json").read_text())
        assert doc["sweep"]["alpha"] == alpha and doc["generation"]["backend"] == "vllm"
        assert [r["response"] for r in doc["results"]] == engines[f"fresh {alpha}"]["texts"], f"λ = {alpha}"
