"""LooGLE's automatic metrics on hand-made pairs with known values, as LooGLE's own
Evaluation/automatic_metrics.py computes them."""

import math

import pytest

from eval_loogle import loogle_metrics
from eval_loogle.loogle_metrics import automatic_metrics, bleu_scores, load_wordnet, meteor, rouge_recalls


def test_bleu_matches_hand_computed_values():
    # 4 of 4 hypothesis words match, reference has 5: precision 1, brevity penalty exp(1 - 5/4).
    bleu1, bleu4 = bleu_scores("the quick brown fox jumps", "the quick brown fox")
    assert bleu1 == pytest.approx(math.exp(-0.25))
    assert bleu4 == pytest.approx(math.exp(-0.25))  # the one 4-gram matches: LooGLE's BLEU-4 = p4 x BP
    bleu1, bleu4 = bleu_scores("a b c d", "a b x y")
    assert bleu1 == pytest.approx(0.5)
    assert bleu4 == pytest.approx(0.0, abs=1e-300)  # no smoothing: no matching 4-gram scores zero


def test_rouge_reports_recall():
    # reference a b c d, hypothesis a b x y x: unigram recall 2/4, bigram recall 1/3 (ab of ab bc cd),
    # LCS "a b" = 2 of 4. Precision would differ (2/5), so this shows recall is what is reported.
    assert rouge_recalls("a b c d", "a b x y x") == pytest.approx((0.5, 1 / 3, 0.5))


def test_meteor_uses_wordnet_synonyms():
    wordnet, why = load_wordnet()
    assert wordnet is not None, f"METEOR needs WordNet on this machine: {why}"
    # 4 matched words in one chunk: fmean 1, penalty 0.5 * (1/4)^3.
    assert meteor("the car is here", "the car is here", wordnet) == pytest.approx(1 - 0.5 / 64)
    # "auto" is a WordNet synonym of "car": the same score as the exact match.
    assert meteor("the car is here", "the auto is here", wordnet) == pytest.approx(1 - 0.5 / 64)
    # an unrelated word: 3 of 4 match (P = R = 0.75); sorted token sets [car here is the] and
    # [here is the tree] align in one chunk -> 0.75 * (1 - 0.5 * (1/3)^3)
    assert meteor("the car is here", "the tree is here", wordnet) == pytest.approx(0.75 * (1 - 0.5 / 27))


def test_meteor_reported_unavailable_without_wordnet(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nltk_data")])
    monkeypatch.setattr(loogle_metrics, "DEBIAN_WORDNET_DIR", tmp_path / "no_wordnet")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rows = [{"reference": "Pan-Islamism.", "answer": "Pan-Islamism."}]
    metrics = automatic_metrics(rows)
    assert "meteor" not in metrics["mean"] and "meteor" not in rows[0]
    assert "apt-get install wordnet-base" in metrics["unavailable"]["meteor"]
    assert metrics["mean"]["rouge1"] == 1.0 and metrics["mean"]["bleu1"] == 1.0
