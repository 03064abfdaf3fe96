"""Per-question verdicts -> SEAL's run JSON (the file query_server.py writes).

Aggregation (SEAL's): a completion's accuracy is the mean over its `eval_times` TTT runs; a
passage's, the mean over its k completions; the overall accuracy is the mean of the passage means
(macro), with the standard deviation of the passage means beside it. `baseline_*` is the served
model without adapter, `adapter_*` with the passage's adapter (equal to the baseline when a
condition trains nothing). Values are kept unrounded.

Run JSON keys (SEAL's, then this project's):
    overall      baseline_mean_accuracy, baseline_std_of_article_means, adapter_mean_accuracy,
                 adapter_std_of_article_means, mean_adapter_std_over_completions,
                 mean_adapter_std_within_completions, mean_gain; n_questions and the micro
                 (per-question) means for comparison
    timestamp, exp_name, dataset, split_newlines, n_articles, k_completions, eval_times, lora_params
    articles     [{stats, title, context, completions: [{text, stats, questions: [{rep, question,
                 answer, baseline_answer, adapter_answer, baseline_correct, adapter_correct}],
                 rounds: [{seed, epoch_losses, seconds}]}], prompt}]
    condition, server (what the TTT server served, trained and graded with: served model,
    trainer model, skill vector with lambda and fingerprint, judge, answer prompt), skill_survival
    (seal_squad.precision: the share of the vector that survives in the served dtype), seed, seconds

A run compares with SEAL's published rows only when graded by GPT-4.1 with SEAL's prompts
(`not_comparable` says why not).
"""

import hashlib
import json
import re
import statistics
from pathlib import Path

from prompts import DEFAULT_IMPLICATIONS_PROMPT, IMPLICATIONS_TEMPLATES, SQUAD_ANSWER_TEMPLATE

# SEAL's grader: GPT-4.1 through OpenAI's API (also a dated snapshot of it, e.g. gpt-4.1-2025-04-14).
SEAL_JUDGE_MODEL = "gpt-4.1"
_SEAL_JUDGE_MODELS = re.compile(r"gpt-4\.1(-\d{4}-\d{2}-\d{2})?")


def _std(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0


def completion_entry(text, questions, replies):
    """One completion's record from its `eval_times` TTT server replies."""
    base = [r["baseline_accuracy"] for r in replies]
    adapter = [r["adapter_accuracy"] for r in replies]
    details = [
        {"rep": rep, "question": q["question"], "answer": q["answer"],
         "baseline_answer": r["baseline_texts"][i], "adapter_answer": r["adapter_texts"][i],
         "baseline_correct": r["baseline_correct"][i], "adapter_correct": r["adapter_correct"][i]}
        for rep, r in enumerate(replies) for i, q in enumerate(questions)
    ]
    stats = {
        "baseline_mean": statistics.mean(base), "baseline_std": _std(base),
        "adapter_mean": statistics.mean(adapter), "adapter_std": _std(adapter),
        "gain_mean": statistics.mean(a - b for a, b in zip(adapter, base)),
    }
    # What the server reports beyond SEAL's fields (seed, training losses, timings), per round.
    rounds = [{k: r[k] for k in ("seed", "epoch_losses", "seconds") if k in r} for r in replies]
    return {"text": text, "stats": stats, "questions": details, "rounds": rounds}


def article_entry(item, completions):
    """One passage's record from its completions' records."""
    adapter = [c["stats"]["adapter_mean"] for c in completions]
    stats = {
        "baseline_accuracy": statistics.mean(c["stats"]["baseline_mean"] for c in completions),
        "adapter_mean_accuracy": statistics.mean(adapter),
        "adapter_std_over_completions": _std(adapter),
        "mean_adapter_std_within_completions": statistics.mean(c["stats"]["adapter_std"] for c in completions),
        "mean_gain": statistics.mean(c["stats"]["gain_mean"] for c in completions),
    }
    return {"stats": stats, "title": item["title"], "context": item["context"], "completions": completions,
            "prompt": item.get("prompt", "")}


def overall_stats(articles):
    base = [a["stats"]["baseline_accuracy"] for a in articles]
    adapter = [a["stats"]["adapter_mean_accuracy"] for a in articles]
    details = [q for a in articles for c in a["completions"] for q in c["questions"]]
    return {
        "baseline_mean_accuracy": statistics.mean(base),
        "baseline_std_of_article_means": _std(base),
        "adapter_mean_accuracy": statistics.mean(adapter),
        "adapter_std_of_article_means": _std(adapter),
        "mean_adapter_std_over_completions": statistics.mean(a["stats"]["adapter_std_over_completions"] for a in articles),
        "mean_adapter_std_within_completions": statistics.mean(
            c["stats"]["adapter_std"] for a in articles for c in a["completions"]),
        "mean_gain": statistics.mean(adapter) - statistics.mean(base),
        "n_questions": sum(1 for a in articles for q in a["completions"][0]["questions"] if q["rep"] == 0),
        "baseline_micro_accuracy": statistics.mean(q["baseline_correct"] for q in details),
        "adapter_micro_accuracy": statistics.mean(q["adapter_correct"] for q in details),
    }


def not_comparable(run):
    """Why a run's accuracy does not compare with SEAL's published rows, [] when it does: graded by
    another judge than SEAL's GPT-4.1, answers asked with another prompt than SEAL's, or (rows that
    train on implications) implications written from another prompt."""
    server = run.get("server")
    if not server:
        return ["its judge and prompts are not recorded"]
    reasons = []
    judge = server.get("judge") or {}
    if judge.get("backend") != "openai" or not _SEAL_JUDGE_MODELS.fullmatch(judge.get("judge_model") or ""):
        who = " ".join(str(judge[k]) for k in ("backend", "judge_model") if judge.get(k)) or "an unrecorded judge"
        reasons.append(f"graded by {who}, not {SEAL_JUDGE_MODEL}")
    if server.get("answer_template") != SQUAD_ANSWER_TEMPLATE:
        reasons.append("another answer prompt")
    if run.get("condition") in ("implications", "implications_skill"):
        seal_prompt = hashlib.sha256(IMPLICATIONS_TEMPLATES[DEFAULT_IMPLICATIONS_PROMPT].encode("utf-8")).hexdigest()
        if (run.get("dataset_meta") or {}).get("prompt_sha256") != seal_prompt:
            reasons.append("implications from another prompt")
    return reasons


RUN_KEYS = ("overall", "exp_name", "n_articles", "k_completions", "eval_times", "articles")


def read_run(path):
    """A run JSON, checked to have SEAL's keys (SEAL's own files qualify too)."""
    path = Path(path)
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable run JSON ({e})") from None
    missing = [k for k in RUN_KEYS if k not in (run if isinstance(run, dict) else {})]
    if missing:
        raise ValueError(f"{path}: not a run JSON of query_server.py (missing {', '.join(missing)})")
    return run
