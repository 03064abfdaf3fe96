"""Generate and judge in one process: answers from the model, verdicts from the judge server.

    bash scripts/train/start_judge_server.sh
    python -m eval_loogle.eval_with_remote --passage_idx 3 --model_path checkpoints/passage3/stage2/final --n_runs 3

Takes generate_answers.py's options (the same sampling settings, --context_file for the
passage in context, --data_file for GSM8K) plus --judge_url. The judge server is checked before
any generation starts. Writes RESULTS_DIR/<model tag>/<split>/answers.json (resumable, as
generate_answers.py does) and then test_results.json next to it, with LooGLE's automatic
metrics (--no_metrics skips them). GSM8K answers are scored by exact numeric match in-process
instead of the server.
"""

import argparse
import logging
from pathlib import Path

from eval_loogle.common import ANSWERS_FILE, RESULTS_FILE, finished_runs
from eval_loogle.generate_answers import add_generation_args, generate, prepare
from eval_loogle.judge_utils import (
    is_gsm8k,
    judge_items,
    judge_numeric,
    judge_server_info,
    judged_rows,
    numeric_judge_info,
    results_document,
    save_results,
    score_with_server,
)
from judge import JudgeError, default_judge_url


def score(answers_doc, judge_url, metrics=True):
    """The test_results document of an answers file: GSM8K by exact numeric match in-process,
    anything else through the judge server (JudgeError when it cannot judge)."""
    if is_gsm8k(answers_doc):
        return results_document(answers_doc, judged_rows(answers_doc, judge_numeric(judge_items(answers_doc))), numeric_judge_info())
    return score_with_server(answers_doc, judge_url, metrics=metrics)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_generation_args(parser)
    parser.add_argument("--judge_url", default=default_judge_url(), help="judge server URL (default env JUDGE_URL, JUDGE_SERVER_URL or http://127.0.0.1:8123)")
    parser.add_argument("--no_metrics", action="store_true", help="verdicts only, skip LooGLE's automatic metrics")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        eval_set, header, passage, budgets = prepare(args)
        out_dir = Path(args.results_dir) / header["model_tag"] / header["split"]
        finished_runs(out_dir / ANSWERS_FILE, header, len(eval_set.questions), args.n_runs)
        if not is_gsm8k(header):
            judge_server_info(args.judge_url)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    except RuntimeError as e:
        parser.exit(1, f"error: {e}\n")
    answers_doc = generate(args, eval_set, header, passage, budgets, out_dir / ANSWERS_FILE)
    try:
        doc = score(answers_doc, args.judge_url, metrics=not args.no_metrics)
    except JudgeError as e:
        parser.exit(1, f"error: {e}\nThe answers are saved in {out_dir / ANSWERS_FILE}: rerun to judge them without generating again.\n")
    save_results(doc, out_dir / RESULTS_FILE)


if __name__ == "__main__":
    main()
