"""Score an answers file through the judge server (reward_server.py), in batches.

    bash scripts/train/start_judge_server.sh          # or: python reward_server.py --backend openai
    python -m eval_loogle.score_answers_with_server --answers_file eval_results/stage2/passage3/answers.json

The server decides each verdict with its backend (an LLM judge: OpenAI or a vLLM server; or the
offline lexical judge); its backend and judge model are recorded in the results, next to
LooGLE's automatic metrics (computed here, see judge_utils.py; --no_metrics skips them). The URL comes
from --judge_url, else env JUDGE_SERVER_URL, else http://127.0.0.1:8123; a bearer token, if the
server wants one, from env JUDGE_AUTH_TOKEN. GSM8K answers are scored by exact numeric match
instead: use score_answers.py for them.

Writes RESULTS_DIR/<model tag>/<split>/test_results.json (or --output_file), atomically.
"""

import argparse
import logging
from pathlib import Path

from eval_loogle.common import DEFAULT_RESULTS_DIR, load_answers, results_path, write_json_atomic
from eval_loogle.judge_utils import default_judge_url, is_gsm8k, score_with_server

log = logging.getLogger("score_answers_with_server")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers_file", required=True, help="answers JSON from eval_loogle.generate_answers")
    parser.add_argument("--judge_url", default=default_judge_url(), help="judge server URL (default env JUDGE_SERVER_URL or http://127.0.0.1:8123)")
    parser.add_argument("--results_dir", default=DEFAULT_RESULTS_DIR, help=f"default {DEFAULT_RESULTS_DIR}")
    parser.add_argument("--output_file", help="default RESULTS_DIR/<model tag>/<split>/test_results.json")
    parser.add_argument("--no_metrics", action="store_true", help="verdicts only, skip LooGLE's automatic metrics")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        answers_doc = load_answers(args.answers_file)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    if is_gsm8k(answers_doc):
        parser.error("GSM8K answers are scored by exact numeric match: use python -m eval_loogle.score_answers")
    try:
        doc = score_with_server(answers_doc, args.judge_url, metrics=not args.no_metrics)
    except RuntimeError as e:
        parser.exit(1, f"error: {e}\n")
    output = Path(args.output_file or results_path(args.results_dir, answers_doc["model_tag"], answers_doc["split"]))
    write_json_atomic(output, doc)
    acc = doc["accuracy"]
    log.info("%s %s: accuracy %.3f ± %.3f over %d runs -> %s", doc["model_tag"], doc["split"], acc["mean"], acc["std"], acc["n_runs"], output)
    print(output)


if __name__ == "__main__":
    main()
