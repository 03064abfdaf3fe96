"""Score an answers file through the judge server (reward_server.py), in batches.

    bash scripts/train/start_judge_server.sh --backend openai
    python -m eval_loogle.score_answers_with_server --answers_file eval_results/stage2/passage3/answers.json

The server decides each verdict with its backend (an LLM judge: OpenAI or a vLLM server; or the
offline lexical judge); its backend, judge model and verdict budget are recorded in the results,
next to the share of answers it gave no verdict on and LooGLE's automatic metrics (computed
here, see loogle_metrics.py; --no_metrics skips them). The URL comes from --judge_url, else env
JUDGE_URL or JUDGE_SERVER_URL, else http://127.0.0.1:8123; a bearer token, if the server wants one, from the
file env JUDGE_TOKEN_FILE names, else env JUDGE_AUTH_TOKEN. GSM8K answers are scored by exact
numeric match instead: use score_answers.py for them.

Writes RESULTS_DIR/<model tag>/<split>/test_results.json (or --output_file), atomically.
"""

import logging

from eval_loogle.judge_utils import default_output, is_gsm8k, load_answers_or_exit, save_results, score_with_server, scoring_parser
from judge import JudgeError, default_judge_url


def main(argv=None):
    parser = scoring_parser(__doc__)
    parser.add_argument("--judge_url", default=default_judge_url(), help="judge server URL (default env JUDGE_URL, JUDGE_SERVER_URL or http://127.0.0.1:8123)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    answers_doc = load_answers_or_exit(parser, args.answers_file)
    if is_gsm8k(answers_doc):
        parser.error("GSM8K answers are scored by exact numeric match: use python -m eval_loogle.score_answers")
    try:
        doc = score_with_server(answers_doc, args.judge_url, metrics=not args.no_metrics)
    except JudgeError as e:
        parser.exit(1, f"error: {e}\n")
    save_results(doc, default_output(args, doc))


if __name__ == "__main__":
    main()
