"""LooGLE's automatic metrics, computed as LooGLE's own Evaluation/automatic_metrics.py does, with
the libraries it uses, and the WordNet set-up METEOR needs:

  bleu1, bleu4  nltk sentence_bleu on whitespace tokens, no smoothing; LooGLE's "BLEU-4" uses
                weights (0, 0, 0, 1), i.e. the 4-gram precision alone (with brevity penalty)
  rouge1/2/l    the `rouge` package, recall ("r")
  meteor        nltk single_meteor_score on the two token sets (sorted here, so the score does
                not depend on Python's hash seed); needs WordNet: nltk_data's, or the Debian
                packages wordnet-base + wordnet-sense-index (the same WordNet 3.0 files)
  bertscore     bert_score.score(lang="en"), recall; only where bert_score and its model
                (roberta-large) are available offline
A metric that cannot be computed is listed under automatic_metrics.unavailable with the reason,
never replaced by something else. An empty answer is scored as "None", as LooGLE does.
"""

import logging
import os
import shutil
import statistics
import warnings
from pathlib import Path

log = logging.getLogger("loogle_metrics")

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
