"""Score an answers file locally: judge verdicts plus LooGLE's automatic metrics.

    python -m eval_loogle.score_answers --answers_file eval_results/stage2/passage3/answers.json

Verdicts come from judge.py's lexical judge (token F1, in-process, no server), or exact numeric
match for GSM8K. For an LLM judge use score_answers_with_server.py.

The automatic metrics are LooGLE's own (BLEU-1/4, ROUGE-1/2/L recall, METEOR, BERTScore where
installed; see loogle_metrics.py), averaged over all answers of all runs and stored per answer
too. A metric that cannot be computed (no WordNet, no bert_score) is listed with the reason.

Writes RESULTS_DIR/<model tag>/<split>/test_results.json (or --output_file), atomically.
"""

import logging

from eval_loogle.judge_utils import (
    default_output,
    is_gsm8k,
    judge_items,
    judge_lexically,
    judge_numeric,
    judged_rows,
    lexical_judge_info,
    load_answers_or_exit,
    numeric_judge_info,
    results_document,
    save_results,
    scoring_parser,
)
from eval_loogle.loogle_metrics import automatic_metrics


def main(argv=None):
    parser = scoring_parser(__doc__)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    answers_doc = load_answers_or_exit(parser, args.answers_file)
    items = judge_items(answers_doc)
    if is_gsm8k(answers_doc):
        rows, judge_info = judged_rows(answers_doc, judge_numeric(items)), numeric_judge_info()
    else:
        rows, judge_info = judged_rows(answers_doc, judge_lexically(items)), lexical_judge_info()
    metrics = None if args.no_metrics or is_gsm8k(answers_doc) else automatic_metrics(rows)
    doc = results_document(answers_doc, rows, judge_info, metrics)
    save_results(doc, default_output(args, doc))


if __name__ == "__main__":
    main()
