"""SQuAD passages in SEAL's grouped schema, and SEAL's seeded selection.

The schema (SEAL's squad_val.json / squad_train.json, and every file of this setting that holds
passages): a JSON list of passages

    [{"title": str, "context": str, "questions": [{"question": str, "answer": str}, ...]}, ...]

Implication files add "completions" (k strings) and "prompt" to each passage.

Inputs: such a grouped file, or raw SQuAD rows (the hub's rajpurkar/squad, a local
.json/.jsonl/.parquet of its rows, or the original nested SQuAD JSON), loaded by
prepare_data's SQuAD loader and grouped here by paragraph in order of first appearance, with
the first reference answer as the answer and "_" in titles read as spaces. SQuAD v2.0
questions without an answer are left out. SQuAD v1.1 dev gives 2,067 passages and 10,570
questions this way.

Selection (SEAL's): `random.seed(seed); random.shuffle(items); items[start:start + n]`. With the
dev set, seed 42, start 0, n 200 is SEAL's evaluation set: 200 passages, 974 questions. A
selected passage may carry `passage_id`, its position in that shuffle (squad_data.py writes it).
"""

import json
import random
from pathlib import Path

from prepare_data.passages import load_records
from prepare_data.preprocess_squad import flatten

SQUAD_HUB_DATASET = "rajpurkar/squad"


def check_passages(items, source):
    """Raise ValueError naming `source` and the first bad passage unless `items` is in the
    grouped schema; return the items."""
    if not isinstance(items, list) or not items:
        raise ValueError(f"{source}: expected a non-empty JSON list of passages "
                         "[{title, context, questions: [{question, answer}]}]")
    for i, item in enumerate(items):
        where = f"{source} passage {i}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object with title, context, questions; got {type(item).__name__}")
        for key in ("title", "context"):
            if not isinstance(item.get(key), str):
                raise ValueError(f"{where}: missing or non-string field {key!r}")
        if not item["context"].strip():
            raise ValueError(f"{where}: the context is empty")
        questions = item.get("questions")
        if not isinstance(questions, list) or not questions:
            raise ValueError(f"{where}: 'questions' must be a non-empty list of {{question, answer}}")
        for j, q in enumerate(questions):
            if not (isinstance(q, dict) and isinstance(q.get("question"), str) and isinstance(q.get("answer"), str)):
                raise ValueError(f"{where}: questions[{j}] needs string fields question and answer, got {q!r:.200}")
        if "completions" in item and not (isinstance(item["completions"], list)
                                          and all(isinstance(c, str) for c in item["completions"])):
            raise ValueError(f"{where}: 'completions' must be a list of strings")
    return items


def is_grouped(records):
    return isinstance(records, list) and bool(records) and isinstance(records[0], dict) \
        and "questions" in records[0] and "context" in records[0]


def _answer_texts(record):
    answers = record.get("answers") or {}
    texts = answers.get("text") if isinstance(answers, dict) else None
    return [t for t in (texts if texts is not None else []) if isinstance(t, str) and t.strip()]


def group_rows(rows, source):
    """Raw SQuAD rows (one per question) -> grouped passages, in order of first appearance."""
    passages = {}
    for i, row in enumerate(rows):
        if not (isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ("context", "question"))):
            raise ValueError(f"{source} row {i}: need string fields context and question (SQuAD rows), got {row!r:.200}")
        texts = _answer_texts(row)
        if not texts:
            continue  # SQuAD v2.0 unanswerable
        title = (row.get("title") or "").replace("_", " ")
        passage = passages.setdefault((title, row["context"]), {"title": title, "context": row["context"], "questions": []})
        passage["questions"].append({"question": row["question"], "answer": texts[0]})
    return check_passages(list(passages.values()), source)


def load_squad(source, split="validation"):
    """Passages from a grouped JSON file, a file of raw SQuAD rows, or a hub dataset id
    (default split validation = SQuAD dev)."""
    path = Path(source)
    if path.suffix in (".json", ".jsonl", ".parquet") or path.exists():
        records = load_records(path, None, None, split)
        if is_grouped(records):
            return check_passages(records, str(path))
        return group_rows(flatten(records), str(path))
    if "/" not in source:
        raise FileNotFoundError(f"{source}: no such file, and not a hub dataset id such as {SQUAD_HUB_DATASET}")
    return group_rows(load_records(None, source, None, split), f"{source}:{split}")


def load_passages(path):
    """A grouped JSON file of this setting (passages, or passages with completions), checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"passages file not found: {path}")
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return check_passages(items, str(path))


def select(items, seed=42, start=0, n=None):
    """SEAL's selection: shuffle a copy with `random.seed(seed)`, take items[start:start + n]
    (n=None: to the end). Asking for more than there is is an error, not a shorter list."""
    if start < 0 or (n is not None and n < 1):
        raise ValueError(f"need start >= 0 and n >= 1, got start={start}, n={n}")
    end = len(items) if n is None else start + n
    if end > len(items):
        raise ValueError(f"asked for passages {start}..{end - 1} but there are only {len(items)} passages")
    items = list(items)
    random.Random(seed).shuffle(items)  # the same permutation, without touching the global RNG
    return items[start:end]


def passage_key(item):
    """What makes two passages the same passage: title and text (whitespace aside)."""
    return (item["title"].strip(), " ".join(item["context"].split()))


def check_disjoint(selected, excluded, selected_name, excluded_name):
    """Raise ValueError if a passage of `selected` is also in `excluded` (e.g. the evaluation set)."""
    held_out = {passage_key(item) for item in excluded}
    shared = [item for item in selected if passage_key(item) in held_out]
    if shared:
        raise ValueError(f"{len(shared)} of the {len(selected)} passages selected from {selected_name} are also in "
                         f"{excluded_name} (first: {shared[0]['title']!r}, {shared[0]['context'][:60]!r}...): take them "
                         "from another split (SQuAD train for source passages) or another part of the shuffle (--start)")


def count_questions(items):
    return sum(len(item["questions"]) for item in items)
