"""Rule-based cloze items: fill-in-the-blank questions made from a text's own sentences, with no
model. The `cloze` proposer of prepare_data.generate_qa uses them, so that stage-2 SFT and GRPO
data exist for any passage on any machine (the CPU demo's tiny model writes no usable QA).

For each sentence one span is blanked, and the answer is that span, verbatim:
  - a number ("1871", "2,400", "thirty-two", "four hundred"), or
  - a name: a run of capitalised words ("Ansel Drue", "Kestrel Point", "Tomás O'Brien"); a
    sentence's first word counts only when the passage never writes it in lower case and also
    writes it capitalised elsewhere or follows it with another capitalised word ("The", "In",
    "Today" do not count), and a name that the title already gives away is not asked for;
  - a sentence with neither gives its longest word.
When a sentence has several candidates, the sentence's position in the passage picks one, so a
passage's items mix numbers and names. Sentences that lie whole inside a chunk are used (each
once, in the first chunk that holds it); a chunk that holds no whole sentence (one very long
sentence) uses its own text. Everything is deterministic: the same passage and chunks give the
same items on every machine.
"""

import re
from dataclasses import dataclass

BLANK = "____"
# Words kept on each side of the blank: a question about a 300-word run-on sentence stays short.
CONTEXT_WORDS = 30

_BOUNDARY = re.compile(r"""[.!?]+["'”’)\]]*\s+|\n\s*""")
_WORD = re.compile(r"[^\W\d_](?:[\w'’-]*\w)?")
_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
    "sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|"
    "hundred|thousand|million|billion"
)
_NUMBER = re.compile(
    rf"(?<![\w.,])\d+(?:[.,]\d+)*(?:s\b)?(?![\w])|\b(?:{_NUMBER_WORDS})(?:[ -](?:and[ -])?(?:{_NUMBER_WORDS}))*\b",
    re.IGNORECASE,
)
# Lower-case words that may sit inside a name: "Bank of England", "Luis de Góngora".
_NAME_JOINERS = {"of", "de", "del", "la", "le", "du", "da", "dos", "van", "von", "der", "den", "y"}


@dataclass(frozen=True)
class ClozeItem:
    sentence: str  # the sentence with BLANK in place of the answer (whitespace normalised)
    answer: str  # a verbatim span of the text
    start_char: int  # where the answer starts in the text


def sentence_spans(text):
    """[(start, end)] of the sentences of `text`: cut after . ! ? (and closing quotes) when the
    next sentence does not start in lower case, and at line breaks."""
    spans, start = [], 0
    for m in _BOUNDARY.finditer(text):
        if m.end() < len(text) and text[m.end()].islower() and "\n" not in m.group():
            continue  # "e.g. this" or "St. louis": not a sentence end
        if text[start : m.start()].strip():
            spans.append((start, m.start() + len(m.group().rstrip())))
        start = m.end()
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return [(s + len(text[s:e]) - len(text[s:e].lstrip()), e) for s, e in spans]


def _is_name_start(words, sentence, lower_words, mid_capitals):
    """Whether a sentence's capitalised first word may start a name: the passage never writes it
    in lower case, and writes it capitalised inside a sentence or follows it with another
    capitalised word ("Ansel Drue kept ...", not "Today the ...")."""
    first = words[0].group()
    if first.lower() in lower_words:
        return False
    followed = len(words) > 1 and sentence[words[0].end() : words[1].start()] == " " and words[1].group()[0].isupper()
    return first in mid_capitals or followed


def _names(sentence, lower_words, mid_capitals):
    """(start, end) of runs of capitalised words in `sentence`."""
    words = list(_WORD.finditer(sentence))
    runs, run = [], []
    for i, w in enumerate(words):
        token = w.group()
        capital = token[0].isupper() and (i > 0 or _is_name_start(words, sentence, lower_words, mid_capitals))
        joined = run and sentence[run[-1].end() : w.start()] == " "
        if capital and (joined or not run):
            run.append(w)
        elif capital:
            runs.append(run)
            run = [w]
        elif joined and token in _NAME_JOINERS and i + 1 < len(words) and words[i + 1].group()[0].isupper():
            run.append(w)
        else:
            if run:
                runs.append(run)
            run = []
    if run:
        runs.append(run)
    for run in runs:
        while run and run[-1].group() in _NAME_JOINERS:
            run.pop()
    return [(run[0].start(), run[-1].end()) for run in runs if run]


def _candidates(sentence, lower_words, mid_capitals, title):
    spans = [(m.start(), m.end()) for m in _NUMBER.finditer(sentence)]
    taken = [range(s, e) for s, e in spans]
    for s, e in _names(sentence, lower_words, mid_capitals):
        overlaps = any(s in r or e - 1 in r for r in taken)
        if not overlaps and sentence[s:e].lower() not in title.lower():
            spans.append((s, e))
    return sorted(spans)


def _longest_word(sentence):
    words = list(_WORD.finditer(sentence)) or list(re.finditer(r"\w+", sentence))
    if not words:
        return None
    best = max(words, key=lambda w: len(w.group()))  # the first of the longest
    return best.start(), best.end()


def _masked(sentence, start, end):
    before, after = sentence[:start].split(), sentence[end:].split()
    if len(before) > CONTEXT_WORDS:
        before = ["…", *before[-CONTEXT_WORDS:]]
    if len(after) > CONTEXT_WORDS:
        after = [*after[:CONTEXT_WORDS], "…"]
    # keep punctuation glued to the blank ("in ____." not "in ____ .")
    left = " ".join(before) + (" " if before and sentence[:start][-1:].isspace() else "")
    right = (" " if after and sentence[end:][:1].isspace() else "") + " ".join(after)
    return f"{left}{BLANK}{right}"


def cloze_items(text, title, chunks):
    """[(chunk, ClozeItem)] for `chunks` of `text` (utils.Chunk, in order), at most one item per
    sentence, in text order."""
    lower_words = {w.group() for w in _WORD.finditer(text) if w.group().islower()}
    sentences = sentence_spans(text)
    mid_capitals = {w.group() for s, e in sentences for w in list(_WORD.finditer(text, s, e))[1:] if w.group()[0].isupper()}
    used, items = set(), []
    for chunk in chunks:
        inside = [(k, s, e) for k, (s, e) in enumerate(sentences) if chunk.start_char <= s and e <= chunk.end_char and k not in used]
        if not inside and not any(chunk.start_char <= s and e <= chunk.end_char for s, e in sentences):
            stripped = chunk.text.strip()
            if stripped:  # no whole sentence in this chunk: its own text stands for one
                start = chunk.start_char + chunk.text.index(stripped)
                inside = [(-1 - chunk.index, start, start + len(stripped))]
        for k, s, e in inside:
            used.add(k)
            sentence = text[s:e]
            candidates = _candidates(sentence, lower_words, mid_capitals, title)
            span = candidates[abs(k) % len(candidates)] if candidates else _longest_word(sentence)
            if span is None:
                continue
            a, b = span
            items.append((chunk, ClozeItem(_masked(sentence, a, b), sentence[a:b], s + a)))
    return items
