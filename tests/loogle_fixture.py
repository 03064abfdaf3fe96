"""A LooGLE-format corpus the tests write themselves, so that no test needs data from outside the
repository.

It has the format's quirks, as in LooGLE's own shortdep_qa.jsonl: one JSON object per line with
`input`, `title`, `qa_pairs` and `output`; `qa_pairs` is a *string* holding a Python literal list
of {S, Q, A} dicts (single-quoted, double-quoted where a value holds an apostrophe: parse it with
ast.literal_eval, not json); unicode in titles, text and answers; documents tens of thousands of
characters long; `output` is the string 'none'. Every `S` (the evidence) is a sentence of the
document and every answer is taken from its evidence sentence.

The text is made from a fixed vocabulary with a seeded generator: the same on every machine.
"""

import json
import random

# name, place and thing pools; several carry non-ASCII letters on purpose
PEOPLE = ["José Ibáñez", "Marta Kowalczyk", "Søren Ødegaard", "Aiko Tanaka", "Émile Laurent", "Nnamdi Okafor",
          "Zoë Brontë", "Ivan Petrović", "Leila Haddad", "Björn Ängström", "Chloé Dubois", "Tomás O'Brien"]
PLACES = ["Cádiz", "Kraków", "Tromsø", "Québec", "Zürich", "Łódź", "São Paulo", "Reykjavík", "Malmö",
          "Düsseldorf", "Córdoba", "Dún Laoghaire"]
THINGS = ["the river bridge", "the glass observatory", "the salt works", "the printing guild", "the tram line",
          "the seed archive", "the copper mine", "the winter market", "the harbour wall", "the music school"]
VERBS = {"founded": "found", "rebuilt": "rebuild", "funded": "fund", "designed": "design", "restored": "restore",
         "surveyed": "survey", "opened": "open", "expanded": "expand"}  # past tense -> infinitive
FILLER = ["Records from the period are incomplete.", "Local newspapers reported the event at length.",
          "Historians still debate the exact sequence of decisions.", "The work drew visitors from the whole region.",
          "Several letters about it survive in the city archive.", "It was mentioned again in a report decades later.",
          "Contemporary accounts describe it as “an unusual undertaking”.", "Costs rose well above the first estimate — "
          "nearly twice as much.", "The council approved the plan after a long debate.", "Its influence can still be seen today."]
TITLES = ["History of Cádiz's harbour district", "Søren Ødegaard (engineer)", "The Kraków printing guild",
          "Tram lines of Zürich — a chronology", "Reykjavík winter market", "Copper mining in Łódź province"]


def _document(rng, n_sentences):
    """(text, facts): a long document and the (sentence, question, answer) facts in it."""
    sentences, facts = [], []
    for i in range(n_sentences):
        if i % 4 == 0:
            person, place, thing, verb = rng.choice(PEOPLE), rng.choice(PLACES), rng.choice(THINGS), rng.choice(sorted(VERBS))
            year = rng.randint(1801, 1999)
            sentence = f"In {year}, {person} {verb} {thing} in {place}."
            kind = rng.randrange(3)
            if kind == 0:
                facts.append((sentence, f"Who {verb} {thing} in {place} in {year}?", person))
            elif kind == 1:
                facts.append((sentence, f"In which year did {person} {VERBS[verb]} {thing}?", str(year)))
            else:
                facts.append((sentence, f"Where did {person}'s work on {thing} take place?", f"In {place}."))
        else:
            sentence = rng.choice(FILLER)
        sentences.append(sentence)
    # paragraphs of about five sentences, as in the Wikipedia-derived LooGLE documents
    paragraphs = [" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5)]
    return "\n".join(paragraphs), facts


def loogle_rows(n_docs=5, n_sentences=600, qa_per_doc=(6, 12, 9, 25, 4), seed=0):
    """The rows of the corpus: n_docs documents, the i-th with qa_per_doc[i % len] QA pairs."""
    rng = random.Random(seed)
    rows = []
    for i in range(n_docs):
        text, facts = _document(rng, n_sentences)
        # distinct questions only (LooGLE's QA pairs of a document are distinct)
        unique = list({q: (s, q, a) for s, q, a in facts}.values())
        n_qa = min(qa_per_doc[i % len(qa_per_doc)], len(unique))
        qa_pairs = [{"S": s, "Q": q, "A": a} for s, q, a in rng.sample(unique, n_qa)]
        rows.append({"input": text, "title": TITLES[i % len(TITLES)], "qa_pairs": repr(qa_pairs), "output": "none"})
    return rows


def write_loogle_corpus(path, **kwargs):
    """Write the corpus as LooGLE jsonl to `path`; returns the path."""
    with open(path, "w", encoding="utf-8") as f:
        for row in loogle_rows(**kwargs):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
