"""Score an answers file locally: judge verdicts plus LooGLE's automatic metrics.

    python -m eval_loogle.score_answers --answers_file eval_results/stage2/passage3/answers.json

Verdicts come from reward_server's lexical judge (token F1, in-process, no server), or exact
numeric match for GSM8K. For an LLM judge use score_answers_with_server.py.

The automatic metrics are LooGLE's own (BLEU-1/4, ROUGE-1/2/L recall, METEOR, BERTScore where
installed; see judge_utils.py), averaged over all answers of all runs and stored per answer too.
A metric that cannot be computed (no WordNet, no bert_score) is listed with the reason.

Writes RESULTS_DIR/<model tag>/<split>/test_results.json (or --output_file), atomically.
"""

import argparse
import logging
from pathlib import Path

from eval_loogle.common import DEFAULT_RESULTS_DIR, load_answers, results_path, write_json_atomic
from eval_loogle.judge_utils import (
    automatic_metrics,
    is_gsm8k,
    judge_items,
    judge_lexically,
    judge_numeric,
    judged_rows,
    lexical_judge_info,
    numeric_judge_info,
    results_document,
)

log = logging.getLogger("score_answers")

# --- Scoring ------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers_file", required=True, help="answers JSON from eval_loogle.generate_answers")
    parser.add_argument("--results_dir", default=DEFAULT_RESULTS_DIR, help=f"default {DEFAULT_RESULTS_DIR}")
    parser.add_argument("--output_file", help="default RESULTS_DIR/<model tag>/<split>/test_results.json")
    parser.add_argument("--no_metrics", action="store_true", help="verdicts only, skip the automatic metrics")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        answers_doc = load_answers(args.answers_file)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    items = judge_items(answers_doc)
    if is_gsm8k(answers_doc):
        rows, judge_info = judged_rows(answers_doc, judge_numeric(items)), numeric_judge_info()
    else:
        rows, judge_info = judged_rows(answers_doc, judge_lexically(items)), lexical_judge_info()
    metrics = None if args.no_metrics or is_gsm8k(answers_doc) else automatic_metrics(rows)
    doc = results_document(answers_doc, rows, judge_info, metrics)
    output = Path(args.output_file or results_path(args.results_dir, answers_doc["model_tag"], answers_doc["split"]))
    write_json_atomic(output, doc)
    acc = doc["accuracy"]
    log.info("%s %s: accuracy %.3f ± %.3f over %d runs (%s judge) -> %s", doc["model_tag"], doc["split"], acc["mean"], acc["std"], acc["n_runs"], judge_info["backend"], output)
    print(output)


if __name__ == "__main__":
    main()
