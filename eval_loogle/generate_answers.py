"""Answer a passage's held-out LooGLE questions with one model, several sampled runs.

    python -m eval_loogle.generate_answers --passage_idx 3 --model_path checkpoints/passage3/stage2/final
    python -m eval_loogle.generate_answers --passage_idx 3 --model_path MODEL --context_file LOOGLE.jsonl
    python -m eval_loogle.generate_answers --data_file data/gsm8k/test.parquet --model_path MODEL --max_new_tokens 512

Closed-book by default: the prompt is the question alone (data/passage{N}/eval.parquet), so the
model answers from what training put into its weights. New tokens per answer, as LooGLE allows
them: 300 for short-dependency and 500 for long-dependency QA, from each row's
extra_info["loogle_split"] (a row without it counts as short-dependency; the answers file records
how many did); --max_new_tokens N sets one budget for all. With --context_file the passage itself
goes into the prompt, cut in the middle to fit the model's window (the knowledge upper bound).
Run r samples with seed SEED + r. The answers file (default
eval_results/<model tag>/passage{N}/answers.json) is rewritten after each run, and a rerun
resumes after the last finished run. Score it with score_answers.py or
score_answers_with_server.py.
"""

import argparse
import logging
import time
from pathlib import Path

from eval_loogle.common import (
    ANSWERS_FILE,
    BACKENDS,
    LOOGLE_SPLITS,
    DEFAULT_DATA_DIR,
    DEFAULT_RESULTS_DIR,
    check_model_path,
    context_conversations,
    default_backend,
    finished_runs,
    generate_runs,
    load_answers,
    load_eval_set,
    load_generator,
    model_context_length,
    model_tag_from_path,
)

# Sampling settings: several seeded runs give a mean and a spread. New tokens per answer by
# LooGLE split, as LooGLE's own evaluation allows them.
N_RUNS = 3
TEMPERATURE = 0.7
TOP_P = 0.95
MAX_NEW_TOKENS = {"shortdep": 300, "longdep": 500}
DEFAULT_SPLIT = "shortdep"  # for rows without extra_info["loogle_split"]
SEED = 0

log = logging.getLogger("generate_answers")


def add_generation_args(parser, model_args=True):
    """The generation options generate_answers.py, eval_with_remote.py and sweep_alpha.py share
    (the sweep names its model and result folders itself: model_args=False)."""
    which = parser.add_argument_group("what to answer (one of)")
    which.add_argument("--passage_idx", type=int, help="LooGLE passage id N: answers data/passage{N}/eval.parquet")
    which.add_argument("--data_file", help="any parquet in RLHFDataset schema, e.g. data/gsm8k/test.parquet")
    if model_args:
        parser.add_argument("--model_path", required=True, help="local Hugging Face model folder or hub id (a served model name with --backend openai)")
        parser.add_argument("--model_tag", help="variant name results are filed under (default: from --model_path, e.g. "
                            "checkpoints/passage3/stage2/final -> stage2; '-context' is appended with --context_file)")
    parser.add_argument("--n_runs", type=int, default=N_RUNS, help=f"sampled runs per question (default {N_RUNS})")
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help=f"root of the passage folders (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--results_dir", default=DEFAULT_RESULTS_DIR, help=f"root of the result folders (default {DEFAULT_RESULTS_DIR})")
    backends = BACKENDS if model_args else tuple(b for b in BACKENDS if b != "openai")  # a served model's weights are out of reach
    parser.add_argument("--backend", choices=backends, default=None, help="generation backend (default: vllm on a GPU when installed, else hf)")
    parser.add_argument("--batch_size", type=int, default=8, help="prompts per batch for the hf backend (default 8)")
    if model_args:
        parser.add_argument("--base_url", help="OpenAI-compatible URL for --backend openai")
    parser.add_argument("--context_file", help="LooGLE jsonl holding the passage: put it in the prompt (passage in context)")
    parser.add_argument("--max_context_tokens", type=int, help="prompt + answer token budget with --context_file "
                        "(default: the model's max_position_embeddings)")
    parser.add_argument("--max_new_tokens", type=int, help="new tokens per answer (default by LooGLE split: "
                        + ", ".join(f"{k} {v}" for k, v in MAX_NEW_TOKENS.items()) + f"; rows without a split: {DEFAULT_SPLIT})")
    parser.add_argument("--temperature", type=float, default=TEMPERATURE, help=f"default {TEMPERATURE}")
    parser.add_argument("--top_p", type=float, default=TOP_P, help=f"default {TOP_P}")
    parser.add_argument("--seed", type=int, default=SEED, help=f"run r uses seed SEED + r (default {SEED})")


def answer_budgets(eval_set, max_new_tokens=None):
    """(max new tokens per question, what the answers file records about the choice)."""
    if max_new_tokens is not None:
        if max_new_tokens < 1:
            raise ValueError(f"--max_new_tokens must be >= 1, got {max_new_tokens}")
        return [max_new_tokens] * len(eval_set.questions), {"max_new_tokens": max_new_tokens, "max_new_tokens_from": "--max_new_tokens"}
    splits = [q["loogle_split"] or DEFAULT_SPLIT for q in eval_set.questions]
    counts = {s: splits.count(s) for s in LOOGLE_SPLITS if s in splits}
    budgets = {s: MAX_NEW_TOKENS[s] for s in counts}
    settings = {
        "max_new_tokens": budgets.popitem()[1] if len(budgets) == 1 else budgets,
        "max_new_tokens_from": "loogle_split",
        "loogle_split": counts,
    }
    missing = sum(q["loogle_split"] is None for q in eval_set.questions)
    if missing:
        settings["loogle_split_missing"] = f"{missing} question(s) without extra_info.loogle_split, taken as {DEFAULT_SPLIT}"
    return [MAX_NEW_TOKENS[s] for s in splits], settings


def prepare(args):
    """Check the arguments and load the questions (no model yet).

    Returns (eval_set, header, passage, budgets): header = what the answers file records about
    the model, data and generation settings; passage = the LooGLE passage with --context_file,
    else None; budgets = max new tokens per question. Raises ValueError/FileNotFoundError with a
    message a user can act on.
    """
    if args.n_runs < 1:
        raise ValueError(f"--n_runs must be >= 1, got {args.n_runs}")
    backend = args.backend or default_backend()
    if args.context_file and backend == "openai":
        raise ValueError("--context_file needs the model's tokenizer to fit the passage: use --backend hf or vllm")
    check_model_path(args.model_path, backend)
    eval_set = load_eval_set(args.passage_idx, args.data_file, args.data_dir)
    budgets, budget_settings = answer_budgets(eval_set, args.max_new_tokens)
    generation = {
        "backend": backend,
        "prompt": "passage_in_context" if args.context_file else "closed_book",
        **budget_settings,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "base_seed": args.seed,
        "n_runs": args.n_runs,
    }
    passage = None
    if args.context_file:
        from prepare_data.passages import load_passages

        if eval_set.passage_id is None:
            raise ValueError("--context_file goes with --passage_idx (the passage to put in the prompt)")
        (passage,) = load_passages(args.context_file, [eval_set.passage_id])
        if eval_set.title and passage.title != eval_set.title:
            raise ValueError(
                f"{args.context_file} passage {eval_set.passage_id} is {passage.title!r} but {eval_set.data_file} "
                f"was made from {eval_set.title!r}: pass the LooGLE file the eval set was made from"
            )
        max_context = args.max_context_tokens or model_context_length(args.model_path)
        if max_context <= max(budgets):
            raise ValueError(f"--max_context_tokens {max_context} leaves no room for a prompt after {max(budgets)} new tokens")
        generation.update(context_file=str(args.context_file), max_context_tokens=max_context)
    header = {
        "model_tag": args.model_tag or model_tag_from_path(args.model_path) + ("-context" if args.context_file else ""),
        "model_path": str(args.model_path),
        "split": eval_set.split,
        "passage_id": eval_set.passage_id,
        "title": eval_set.title,
        "data_file": eval_set.data_file,
        "data_source": eval_set.data_source,
        "generation": generation,
    }
    return eval_set, header, passage, budgets


def generate(args, eval_set, header, passage, budgets, answers_file, generator=None):
    """Build the prompts and answer the runs not yet in `answers_file`, with `generator` (loaded
    here from --model_path when None)."""
    done = finished_runs(answers_file, header, len(eval_set.questions), args.n_runs)
    if len({a["run"] for a in done}) == args.n_runs:
        log.info("%s already holds all %d runs", answers_file, args.n_runs)
        return {**load_answers(answers_file), "answers": done}
    start = time.time()
    if generator is None:
        generator = load_generator(args.model_path, header["generation"]["backend"], args.batch_size, args.base_url)
    if passage is not None:
        budget = header["generation"]["max_context_tokens"] - max(budgets)
        conversations, kept = context_conversations(eval_set, passage.text, generator.tokenizer, budget)
        header["generation"]["passage_tokens_kept"] = min(kept)
        log.info("passage %d in context: at least %d of its tokens kept", eval_set.passage_id, min(kept))
    else:
        conversations = [q["prompt"] for q in eval_set.questions]
    sampling = {"temperature": args.temperature, "top_p": args.top_p}
    doc = generate_runs(eval_set, conversations, generator, answers_file, header, done, args.n_runs, args.seed, sampling, budgets)
    log.info("%d answers (%d questions x %d runs) in %.1fs -> %s", len(doc["answers"]), len(eval_set.questions), args.n_runs, time.time() - start, answers_file)
    return doc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_generation_args(parser)
    parser.add_argument("--output_file", help="answers JSON (default RESULTS_DIR/<model tag>/<split>/answers.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        eval_set, header, passage, budgets = prepare(args)
        answers_file = Path(args.output_file or Path(args.results_dir) / header["model_tag"] / header["split"] / ANSWERS_FILE)
        finished_runs(answers_file, header, len(eval_set.questions), args.n_runs)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    generate(args, eval_set, header, passage, budgets, answers_file)
    print(answers_file)


if __name__ == "__main__":
    main()
