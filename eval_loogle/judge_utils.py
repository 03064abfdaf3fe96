"""What the scorers share: judging answers (judge.py's lexical judge in-process, the judge server
through judge.JudgeClient, exact numeric match for GSM8K), accuracy per run with mean and std,
the layout of test_results.json, and the scorers' command line and ending.

LooGLE's automatic metrics (BLEU, ROUGE, METEOR, BERTScore) are in loogle_metrics.py.
"""

import argparse
import logging
import math
import re
import statistics
import time
from pathlib import Path

from eval_loogle.common import DEFAULT_RESULTS_DIR, load_answers, results_path, write_json_atomic
from judge import LEXICAL_THRESHOLD, JudgeClient, lexical_judge

log = logging.getLogger("eval_loogle")

# reward_server accepts up to 1024 items per request (--max_items); stay well below.
SERVER_BATCH_SIZE = 256
GRADER = "loogle"

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def is_gsm8k(answers_doc):
    """GSM8K (data_source "gsm8k", or verl's "openai/gsm8k") is scored by exact numeric match."""
    return "gsm8k" in str(answers_doc.get("data_source", "")).lower()


def judge_lexically(items):
    """[{question, reference, response}] -> [{score, verdict}] with judge.py's lexical judge."""
    return [lexical_judge(item["reference"], item["response"]) for item in items]


def lexical_judge_info():
    return {"backend": "lexical", "model": None, "threshold": LEXICAL_THRESHOLD, "where": "in-process"}


def final_number(text):
    """A GSM8K answer's number: the first number after the last '####' (the dataset's format),
    else the last number in the text; None when there is none."""
    text = (text or "").replace("$", "")
    if "####" in text:
        numbers = _NUMBER.findall(text.rsplit("####", 1)[1])[:1]
    else:
        numbers = _NUMBER.findall(text)[-1:]
    if not numbers:
        return None
    return float(numbers[0].replace(",", ""))


def judge_numeric(items):
    """GSM8K accuracy: the response's final number equals the reference's, as numbers."""
    results = []
    for item in items:
        reference, predicted = final_number(item["reference"]), final_number(item["response"])
        verdict = reference is not None and predicted is not None and math.isclose(reference, predicted, abs_tol=1e-6)
        results.append({"score": float(verdict), "verdict": verdict})
    return results


def numeric_judge_info():
    return {"backend": "numeric_exact_match", "model": None, "where": "in-process"}


def judge_server_info(judge_url):
    """The server's backend, judge model and verdict budget (GET /health); JudgeError with the
    fix when it is not up."""
    client = JudgeClient(judge_url, timeout=10.0)
    try:
        health = client.health()
    finally:
        client.close()
    return {"backend": health.get("backend"), "model": health.get("judge_model"), "grader": GRADER,
            "max_tokens": health.get("max_tokens"), "where": judge_url}


def judge_with_server(items, judge_url, timeout=600.0):
    """[{question, reference, response}] -> the server's results, same order, in batches (retried
    as judge.py's client does; the server caches judged items, so a retry only pays for the rest)."""
    from tqdm import tqdm

    client = JudgeClient(judge_url, timeout=timeout)
    results = []
    try:
        batches = range(0, len(items), SERVER_BATCH_SIZE)
        for start in tqdm(batches, desc="judge (server)", unit="batch", disable=len(batches) < 2):
            results.extend(client.judge(items[start : start + SERVER_BATCH_SIZE], GRADER))
    finally:
        client.close()
    return results


# --- Results -----------------------------------------------------------------------------------


def judge_items(answers_doc):
    """The (question, reference, extracted answer) items to judge, in the answers' order."""
    return [{"question": a["question"], "reference": a["reference"], "response": a["answer"]} for a in answers_doc["answers"]]


def score_with_server(answers_doc, judge_url, metrics=True):
    """Judge every answer through the server (plus LooGLE's automatic metrics unless
    `metrics` is False); returns the test_results document."""
    from eval_loogle.loogle_metrics import automatic_metrics

    judge_info = judge_server_info(judge_url)
    rows = judged_rows(answers_doc, judge_with_server(judge_items(answers_doc), judge_url))
    return results_document(answers_doc, rows, judge_info, automatic_metrics(rows) if metrics else None)


def accuracy_summary(results):
    """Accuracy per run from per-question verdicts, then mean and sample std (ddof=1) over runs.

    `results`: [{run, verdict, ...}]. The std is 0.0 with a single run.
    """
    if not results:
        raise ValueError("no judged answers: cannot compute an accuracy")
    by_run = {}
    for row in results:
        by_run.setdefault(int(row["run"]), []).append(bool(row["verdict"]))
    runs = sorted(by_run)
    per_run = [sum(by_run[r]) / len(by_run[r]) for r in runs]
    return {
        "runs": runs,
        "per_run": per_run,
        "mean": statistics.fmean(per_run),
        "std": statistics.stdev(per_run) if len(per_run) > 1 else 0.0,
        "n_runs": len(runs),
        "n_questions": len(by_run[runs[0]]),
    }


def judged_rows(answers_doc, judgements):
    """The per-question entries of test_results.json: each answer with its judge's score/verdict
    (and, for an answer the judge gave no verdict on, parse_failed and the judge's reason)."""
    rows = []
    for answer, judged in zip(answers_doc["answers"], judgements, strict=True):
        row = {k: answer[k] for k in ("index", "run", "seed", "question", "reference", "answer", "response")}
        row["score"] = float(judged["score"])
        row["verdict"] = bool(judged["verdict"])
        if judged.get("parse_failed"):
            row["parse_failed"] = True
            row["judge_failure"] = judged.get("failure")
        rows.append(row)
    return rows


def results_document(answers_doc, rows, judge_info, metrics=None):
    """The content of test_results.json for one model on one passage (or GSM8K). parse_failures
    counts the answers the judge gave no verdict on (scored wrong); parse_failure_share is their
    share of all answers."""
    parse_failures = sum(1 for r in rows if r.get("parse_failed"))
    doc = {
        "model_tag": answers_doc["model_tag"],
        "model_path": answers_doc["model_path"],
        "split": answers_doc["split"],
        "passage_id": answers_doc.get("passage_id"),
        "title": answers_doc.get("title"),
        "data_file": answers_doc["data_file"],
        "generation": answers_doc["generation"],
        "judge": judge_info,
        "accuracy": accuracy_summary(rows),
        "parse_failures": parse_failures,
        "parse_failure_share": parse_failures / len(rows),
    }
    if metrics is not None:
        doc["automatic_metrics"] = metrics
    doc["results"] = rows
    doc["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return doc


# --- The scorers' command line and ending --------------------------------------------------------


def scoring_parser(description):
    """The options every scorer of an answers file takes."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers_file", required=True, help="answers JSON from eval_loogle.generate_answers")
    parser.add_argument("--results_dir", default=DEFAULT_RESULTS_DIR, help=f"default {DEFAULT_RESULTS_DIR}")
    parser.add_argument("--output_file", help="default RESULTS_DIR/<model tag>/<split>/test_results.json")
    parser.add_argument("--no_metrics", action="store_true", help="verdicts only, skip LooGLE's automatic metrics")
    return parser


def load_answers_or_exit(parser, path):
    try:
        return load_answers(path)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))


def default_output(args, doc):
    return Path(args.output_file or results_path(args.results_dir, doc["model_tag"], doc["split"]))


def save_results(doc, output):
    """Write test_results.json atomically, log the accuracy, print the path (the scorers' ending)."""
    write_json_atomic(output, doc)
    acc = doc["accuracy"]
    log.info("%s %s: accuracy %.3f ± %.3f over %d runs (%s judge; %d answers without a verdict) -> %s",
             doc["model_tag"], doc["split"], acc["mean"], acc["std"], acc["n_runs"], doc["judge"]["backend"],
             doc["parse_failures"], output)
    print(output)
