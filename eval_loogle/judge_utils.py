"""What the scorers share: judging answers (the lexical judge in-process, the judge server over
HTTP, exact numeric match for GSM8K), LooGLE's automatic metrics, accuracy per run with mean and
std, and the layout of test_results.json.

The lexical judge is reward_server's own pure functions (one implementation for GRPO rewards
and evaluation); the server path speaks the /judge API of reward_server.py.
"""

import logging
import math
import os
import re
import shutil
import statistics
import time
import warnings
from pathlib import Path

log = logging.getLogger("eval_loogle")

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


# --- LooGLE's automatic metrics -----------------------------------------------------------------
# LooGLE's own (Evaluation/automatic_metrics.py), computed with the libraries it uses:
#   bleu1, bleu4  nltk sentence_bleu on whitespace tokens, no smoothing; LooGLE's "BLEU-4" uses
#                 weights (0, 0, 0, 1), i.e. the 4-gram precision alone (with brevity penalty)
#   rouge1/2/l    the `rouge` package, recall ("r")
#   meteor        nltk single_meteor_score on the two token sets (sorted here, so the score does
#                 not depend on Python's hash seed); needs WordNet: nltk_data's, or the Debian
#                 packages wordnet-base + wordnet-sense-index (the same WordNet 3.0 files)
#   bertscore     bert_score.score(lang="en"), recall; only where bert_score and its model
#                 (roberta-large) are available offline
# A metric that cannot be computed is listed under automatic_metrics.unavailable with the reason,
# never replaced by something else. An empty answer is scored as "None", as LooGLE does.

METRICS = ("bleu1", "bleu4", "rouge1", "rouge2", "rougel", "meteor", "bertscore")

# Debian's wordnet-base ships the WordNet 3.0 database without the `lexnames` file NLTK reads
# first; its content is fixed by the format (lexnames(5WN)): file number, name, syntactic category.
WORDNET_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_LEX_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = (
    "data.adj data.adv data.noun data.verb index.adj index.adv index.noun index.verb "
    "adj.exc adv.exc noun.exc verb.exc index.sense"
).split()


def bleu_scores(reference, hypothesis):
    """(BLEU-1, BLEU-4) as LooGLE computes them."""
    from nltk.translate.bleu_score import sentence_bleu

    ref, hyp = reference.replace("\n", " ").split(), hypothesis.replace("\n", " ").split()
    with warnings.catch_warnings():
        # nltk warns when an n-gram order has no match; the score is then 0, as in LooGLE.
        warnings.simplefilter("ignore")
        return float(sentence_bleu([ref], hyp, weights=(1, 0, 0, 0))), float(sentence_bleu([ref], hyp, weights=(0, 0, 0, 1)))


def rouge_recalls(reference, hypothesis):
    """(ROUGE-1, ROUGE-2, ROUGE-L) recall from the `rouge` package, as LooGLE reports them."""
    from rouge import Rouge

    scores = Rouge().get_scores(hyps=[hypothesis], refs=[reference])[0]
    return scores["rouge-1"]["r"], scores["rouge-2"]["r"], scores["rouge-l"]["r"]


def cached_nltk_wordnet_dir():
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "past" / "nltk_data"


def load_wordnet():
    """NLTK's WordNet reader, or (None, reason). Uses nltk_data's corpus when installed, else lays
    Debian's WordNet 3.0 files out as an nltk_data corpus in the user cache (copied: NLTK only
    reads inside its data paths)."""
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
        from nltk.corpus import wordnet

        return wordnet, None
    except LookupError:
        pass
    try:
        nltk.data.find("corpora/wordnet.zip")
        from nltk.corpus import wordnet

        return wordnet, None
    except LookupError:
        pass
    if not all((DEBIAN_WORDNET_DIR / name).is_file() for name in WORDNET_FILES):
        return None, (
            "WordNet not found: install it with `apt-get install wordnet-base wordnet-sense-index` "
            "(Debian/Ubuntu) or `python -m nltk.downloader wordnet`"
        )
    root = cached_nltk_wordnet_dir()
    corpus = root / "corpora" / "wordnet"
    if not (corpus / "lexnames").is_file():
        corpus.mkdir(parents=True, exist_ok=True)
        for name in WORDNET_FILES:
            shutil.copyfile(DEBIAN_WORDNET_DIR / name, corpus / name)
        lexnames = "".join(f"{i:02d}\t{name}\t{_LEX_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(WORDNET_LEXNAMES))
        tmp = corpus / ".lexnames.tmp"
        tmp.write_text(lexnames, encoding="ascii")
        os.replace(tmp, corpus / "lexnames")  # last: its presence means the copy is complete
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
    from nltk.corpus import wordnet

    return wordnet, None


def meteor(reference, hypothesis, wordnet):
    """METEOR as LooGLE computes it: single_meteor_score on the token sets."""
    from nltk.translate.meteor_score import single_meteor_score

    ref, hyp = reference.replace("\n", " ").split(), hypothesis.replace("\n", " ").split()
    return float(single_meteor_score(sorted(set(ref)), sorted(set(hyp)), wordnet=wordnet))


def bertscore_recalls(references, hypotheses):
    """BERTScore recall per pair, or (None, reason) when bert_score or its model is missing."""
    try:
        from bert_score import score
    except ImportError:
        return None, "bert_score is not installed (pip install bert-score; it also needs the roberta-large model)"
    try:
        _, recall, _ = score(hypotheses, references, lang="en", verbose=False)
    except Exception as e:  # noqa: BLE001 - any failure to load the model means: unavailable
        return None, f"bert_score could not run ({type(e).__name__}: {e}); its model must be available offline"
    return [float(r) for r in recall], None


def automatic_metrics(rows):
    """Mean of each LooGLE metric over the answers; adds each metric to the rows too."""
    pairs = [(r["reference"], r["answer"] if r["answer"].strip() else "None") for r in rows]
    unavailable = {}
    for row, (ref, hyp) in zip(rows, pairs, strict=True):
        row["bleu1"], row["bleu4"] = bleu_scores(ref, hyp)
        try:
            row["rouge1"], row["rouge2"], row["rougel"] = rouge_recalls(ref, hyp)
        except ValueError:
            # the rouge package rejects a text with no words after its own cleaning
            row["rouge1"] = row["rouge2"] = row["rougel"] = 0.0
    wordnet, reason = load_wordnet()
    if wordnet is None:
        unavailable["meteor"] = reason
    else:
        for row, (ref, hyp) in zip(rows, pairs, strict=True):
            row["meteor"] = meteor(ref, hyp, wordnet)
    recalls, reason = bertscore_recalls([p[0] for p in pairs], [p[1] for p in pairs])
    if recalls is None:
        unavailable["bertscore"] = reason
    else:
        for row, recall in zip(rows, recalls, strict=True):
            row["bertscore"] = recall
    means = {m: statistics.fmean(r[m] for r in rows) for m in METRICS if m not in unavailable}
    for metric, why in unavailable.items():
        log.warning("%s not computed: %s", metric, why)
    return {"mean": means, "unavailable": unavailable}


# --- Results -----------------------------------------------------------------------------------


def judge_items(answers_doc):
    """The (question, reference, extracted answer) items to judge, in the answers' order."""
    return [{"question": a["question"], "reference": a["reference"], "response": a["answer"]} for a in answers_doc["answers"]]


def score_with_server(answers_doc, judge_url, metrics=True):
    """Judge every answer through the server (plus LooGLE's automatic metrics unless
    `metrics` is False); returns the test_results document."""
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


def results_document(answers_doc, rows, judge_info, metrics=None):
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
    if metrics is not None:
        doc["automatic_metrics"] = metrics
    doc["results"] = rows
    doc["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return doc
