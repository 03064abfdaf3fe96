"""What the scorers share: judging answers (the lexical judge in-process, the judge server over
HTTP, exact numeric match for GSM8K), accuracy per run with mean and std, and the layout of
test_results.json.

The lexical judge is reward_server's own pure functions (one implementation for GRPO rewards
and evaluation); the server path speaks the /judge API of reward_server.py.
"""

import math
import os
import re
import statistics
import time

DEFAULT_JUDGE_URL = "http://127.0.0.1:8123"
# reward_server accepts up to 1024 items per request (--max_items); stay well below.
SERVER_BATCH_SIZE = 256

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def default_judge_url():
    return os.environ.get("JUDGE_SERVER_URL") or DEFAULT_JUDGE_URL


def is_gsm8k(answers_doc):
    """GSM8K (data_source "gsm8k", or verl's "openai/gsm8k") is scored by exact numeric match."""
    return "gsm8k" in str(answers_doc.get("data_source", "")).lower()


def judge_lexically(items):
    """[{question, reference, response}] -> [{score, verdict}] with reward_server's lexical judge."""
    from reward_server import lexical_judge

    return [lexical_judge(item["reference"], item["response"]) for item in items]


def lexical_judge_info():
    from reward_server import LEXICAL_THRESHOLD

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


def _server_client(judge_url, timeout):
    import httpx

    headers = {}
    token = os.environ.get("JUDGE_AUTH_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=judge_url.rstrip("/"), headers=headers, timeout=timeout)


def judge_server_info(judge_url, timeout=10.0):
    """The server's backend and judge model (GET /health); a clear error when it is not up."""
    import httpx

    try:
        with _server_client(judge_url, timeout) as client:
            response = client.get("/health")
            response.raise_for_status()
            health = response.json()
    except httpx.HTTPError as e:
        raise RuntimeError(
            f"judge server not reachable at {judge_url} ({e}). Start one with "
            "`bash scripts/train/start_judge_server.sh` (or `python reward_server.py --backend lexical`), "
            "or point --judge_url / JUDGE_SERVER_URL at a running one."
        ) from None
    return {"backend": health.get("backend"), "model": health.get("judge_model"), "where": judge_url}


def judge_with_server(items, judge_url, timeout=600.0, max_attempts=5):
    """[{question, reference, response}] -> the server's results, same order, in batches.

    503 (backend busy) and connection errors are retried with backoff; the server caches judged
    items, so a retry only pays for the rest. Other HTTP errors stop with the server's reason.
    """
    import httpx
    from tqdm import tqdm

    results = []
    batches = range(0, len(items), SERVER_BATCH_SIZE)
    with _server_client(judge_url, timeout) as client:
        for start in tqdm(batches, desc="judge (server)", unit="batch", disable=len(batches) < 2):
            batch = [{k: item[k] for k in ("question", "reference", "response")} for item in items[start : start + SERVER_BATCH_SIZE]]
            for attempt in range(1, max_attempts + 1):
                try:
                    response = client.post("/judge", json={"items": batch})
                except httpx.TransportError as e:
                    if attempt == max_attempts:
                        raise RuntimeError(f"judge server at {judge_url} failed {attempt} times: {e}") from None
                    time.sleep(2**attempt)
                    continue
                if response.status_code == 503 and attempt < max_attempts:
                    time.sleep(2**attempt)
                    continue
                if response.status_code != 200:
                    raise RuntimeError(f"judge server at {judge_url} answered {response.status_code}: {response.text[:500]}")
                batch_results = response.json()["results"]
                if len(batch_results) != len(batch):
                    raise RuntimeError(f"judge server returned {len(batch_results)} results for {len(batch)} items")
                results.extend(batch_results)
                break
    return results


def judge_items(answers_doc):
    """The (question, reference, extracted answer) items to judge, in the answers' order."""
    return [{"question": a["question"], "reference": a["reference"], "response": a["answer"]} for a in answers_doc["answers"]]


def score_with_server(answers_doc, judge_url):
    """Judge every answer through the server; returns the test_results document."""
    judge_info = judge_server_info(judge_url)
    rows = judged_rows(answers_doc, judge_with_server(judge_items(answers_doc), judge_url))
    return results_document(answers_doc, rows, judge_info)


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
    """The per-question entries of test_results.json: each answer with its judge's score/verdict."""
    rows = []
    for answer, judged in zip(answers_doc["answers"], judgements, strict=True):
        row = {k: answer[k] for k in ("index", "run", "seed", "question", "reference", "answer", "response")}
        row["score"] = float(judged["score"])
        row["verdict"] = bool(judged["verdict"])
        if judged.get("parse_failed"):
            row["parse_failed"] = True
        rows.append(row)
    return rows


def results_document(answers_doc, rows, judge_info, automatic_metrics=None):
    """The content of test_results.json for one model on one passage (or GSM8K)."""
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
        "parse_failures": sum(1 for r in rows if r.get("parse_failed")),
    }
    if automatic_metrics is not None:
        doc["automatic_metrics"] = automatic_metrics
    doc["results"] = rows
    doc["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return doc
