"""Benchmark a λ sweep done in place (inplace_transfer.py) against the same sweep done by writing
a model per λ (inherit_weight.py) and starting an engine on it, both on vLLM.

Builds a random bf16 model with Qwen2.5-0.5B's shapes (tied embeddings, 494M parameters, 0.99 GB)
and a float32 skill vector for it (rl = model + noise; rl - model), then per repetition runs both
arms over the same λ values, each λ followed by the same small evaluation (greedy answers to a
fixed batch of prompts):

  in_place   one engine started on the target; per λ: apply_to_vllm (stream target + λ·v into
             the engine, re-run post-load processing, reset the prefix cache), evaluate
  written    per λ: inherit_weight.inherit writes target + λ·v, an engine starts on it, evaluate,
             the engine stops and the written model is deleted

and prints each arm's wall time (median over --repeats, arms interleaved), the ratio, and the
per-λ steps: weight update, model write, engine start, evaluation. The two arms' answers are
compared token by token for every λ, when the engine is repeatable (the in-place arm evaluates
its last λ twice): float32 by default, since vLLM's bf16 CPU kernels at these shapes give other
logits from one call to the next on the very same weights. Engines otherwise run with vLLM's
defaults, as the evaluation does (--enforce_eager skips torch.compile), without a tokenizer
(prompts are token ids).

    python benchmarks/bench_alpha_sweep.py                                  # 5 λ, 3 repetitions
    python benchmarks/bench_alpha_sweep.py --repeats 1 --alphas 0 1 --enforce_eager
"""

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

# Qwen2.5-0.5B(-Instruct)
SHAPES = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
              num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=32768, rope_theta=1000000.0,
              rms_norm_eps=1e-6)
PROMPTS, PROMPT_TOKENS, NEW_TOKENS = 8, 64, 16


def build_models(workdir):
    """(target, skill vector): a random bf16 Qwen2 and rl - target with rl = target + noise."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from calc_delta_and_save import save_skill_vector

    target, rl, vector = workdir / "target", workdir / "rl", workdir / "skill.safetensors"
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(**SHAPES)).to(torch.bfloat16).save_pretrained(target)
    shutil.copytree(target, rl, ignore=shutil.ignore_patterns("*.safetensors"))
    g = torch.Generator().manual_seed(1)
    state = {n: (t.float() + torch.randn(t.shape, generator=g) * 2e-3).to(t.dtype) for n, t in load_file(target / "model.safetensors").items()}
    save_file(state, rl / "model.safetensors", metadata={"format": "pt"})
    del state
    save_skill_vector(rl, target, vector, quiet=True)
    shutil.rmtree(rl)
    return target, vector


def engine(model, args):
    from vllm import LLM

    from inplace_transfer import vllm_engine_options

    return LLM(model=str(model), skip_tokenizer_init=True, enforce_eager=args.enforce_eager, dtype=args.dtype, max_model_len=512,
               seed=0, **vllm_engine_options())


def evaluate(llm):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    prompts = [TokensPrompt(prompt_token_ids=[(p * 7919 + i * 104729) % 50000 + 100 for i in range(PROMPT_TOKENS)]) for p in range(PROMPTS)]
    params = SamplingParams(max_tokens=NEW_TOKENS, min_tokens=NEW_TOKENS, temperature=0, detokenize=False)
    return [list(o.outputs[0].token_ids) for o in llm.generate(prompts, params, use_tqdm=False)]


def stop(llm):
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


def in_place(target, vector, alphas, args):
    """(seconds per step, answers per λ, whether a second evaluation of the last λ repeats the first)."""
    from inplace_transfer import apply_to_vllm

    steps, answers = {"engine start": [], "weight update": [], "evaluate": []}, {}
    t = time.perf_counter()
    llm = engine(target, args)
    steps["engine start"].append(time.perf_counter() - t)
    for alpha in alphas:
        t = time.perf_counter()
        apply_to_vllm(llm, target, [vector], [alpha])
        steps["weight update"].append(time.perf_counter() - t)
        t = time.perf_counter()
        answers[alpha] = evaluate(llm)
        steps["evaluate"].append(time.perf_counter() - t)
    repeatable = evaluate(llm) == answers[alphas[-1]]
    stop(llm)
    return steps, answers, repeatable


def written(target, vector, alphas, args, workdir):
    from inherit_weight import inherit

    steps, answers = {"model write": [], "engine start": [], "evaluate": []}, {}
    for alpha in alphas:
        out = workdir / f"inherited_a{alpha:g}"
        t = time.perf_counter()
        inherit([target], [out], skill_vectors=[vector], alphas=[alpha], quiet=True)
        steps["model write"].append(time.perf_counter() - t)
        t = time.perf_counter()
        llm = engine(out, args)
        steps["engine start"].append(time.perf_counter() - t)
        t = time.perf_counter()
        answers[alpha] = evaluate(llm)
        steps["evaluate"].append(time.perf_counter() - t)
        stop(llm)
        shutil.rmtree(out)
    return steps, answers


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alphas", nargs="+", type=float, default=[-0.5, 0.0, 0.5, 1.0, 1.5], help="default -0.5 0 0.5 1 1.5")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of both arms, interleaved (default 3)")
    parser.add_argument("--enforce_eager", action="store_true", help="engines without torch.compile (faster starts)")
    parser.add_argument("--dtype", default="float32", help="engine dtype (default float32: repeatable on CPU; auto: the model's bf16)")
    parser.add_argument("--workdir", help="where the models go (~3 GB; default: a temporary folder, removed at the end)")
    args = parser.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_alpha_sweep-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        target, vector = build_models(root)
        print(f"built target ({sum(f.stat().st_size for f in target.glob('*.safetensors')) / 1e9:.2f} GB bf16) and skill vector "
              f"({vector.stat().st_size / 1e9:.2f} GB fp32) in {time.perf_counter() - t:.0f}s", file=sys.stderr, flush=True)
        totals, steps = {"in_place": [], "written": []}, {"in_place": {}, "written": {}}
        for repeat in range(args.repeats):
            for arm in ("in_place", "written"):
                t = time.perf_counter()
                if arm == "in_place":
                    arm_steps, answers, repeatable = in_place(target, vector, args.alphas, args)
                else:
                    arm_steps, answers = written(target, vector, args.alphas, args, root)
                totals[arm].append(time.perf_counter() - t)
                for step, seconds in arm_steps.items():
                    steps[arm].setdefault(step, []).extend(seconds)
                if arm == "in_place":
                    reference = answers
                elif repeatable:
                    differ = [a for a in args.alphas if answers[a] != reference[a]]
                    if differ:
                        raise SystemExit(f"the arms' answers differ for λ = {differ}: the in-place update is not exact")
                print(f"repeat {repeat + 1}: {arm} {totals[arm][-1]:.1f}s", file=sys.stderr, flush=True)
        assert len({json.dumps(reference[a]) for a in args.alphas}) == len(args.alphas), "λ values gave identical answers"
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)

    med = {arm: statistics.median(v) for arm, v in totals.items()}
    checked = ("answers identical in both arms for every λ" if repeatable else
               "answers not compared: the engine does not repeat its own answers at this dtype")
    print(f"\nλ sweep of {len(args.alphas)} values on Qwen2.5-0.5B shapes (vLLM {'eager' if args.enforce_eager else 'default options'}, "
          f"dtype {args.dtype}), median of {args.repeats}; {checked}")
    print("| arm | wall (s) | min–max (s) |\n|---|---|---|")
    for arm, values in totals.items():
        print(f"| {arm} | {med[arm]:.1f} | {min(values):.1f}–{max(values):.1f} |")
    print(f"\nwritten / in_place = {med['written'] / med['in_place']:.2f}x\n")
    print("| arm | step | median per λ (s) | min–max (s) |\n|---|---|---|---|")
    for arm, by_step in steps.items():
        for step, values in by_step.items():
            print(f"| {arm} | {step}{' (once)' if arm == 'in_place' and step == 'engine start' else ''} | "
                  f"{statistics.median(values):.2f} | {min(values):.2f}–{max(values):.2f} |")


if __name__ == "__main__":
    main()
