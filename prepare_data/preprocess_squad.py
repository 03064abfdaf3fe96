"""SQuAD -> verl RLHFDataset parquet, one row per answerable question.

    python -m prepare_data.preprocess_squad --split train --output data/squad/train.parquet
    python -m prepare_data.preprocess_squad --input dev-v1.1.json --closed_book --output data/squad/dev_cb.parquet

Input: the hub's rajpurkar/squad rows (id, title, context, question, answers{text}) or the
original SQuAD JSON ({"data": [{title, paragraphs: [{context, qas}]}]}, v1.1 or v2.0;
unanswerable v2.0 questions are left out). The prompt carries the paragraph
(reading comprehension) or, with --closed_book, only the question (knowledge incorporation, as
for LooGLE). ground_truth is the first reference answer; extra_info keeps all of them.
"""

from prepare_data.passages import convert_dataset_main, rl_row
from prompts import context_solver_prompt, solver_prompt


def flatten(records):
    """Hub rows as they are; the original nested JSON to the same flat rows."""
    if isinstance(records, dict) and "data" in records:
        return [
            {"id": qa.get("id"), "title": article.get("title", ""), "context": paragraph["context"], "question": qa["question"],
             "answers": {"text": [a["text"] for a in qa.get("answers", [])]}}
            for article in records["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]
        ]
    return records


def convert(records, source, closed_book):
    rows = []
    for i, record in enumerate(flatten(records)):
        answers = record.get("answers") or {}
        texts = [t for t in (answers.get("text") if isinstance(answers, dict) else []) if isinstance(t, str) and t.strip()]
        if not all(isinstance(record.get(k), str) for k in ("context", "question")):
            raise ValueError(f"{source} row {i}: need string fields context and question, got {record!r:.200}")
        if not texts:
            continue  # SQuAD 2.0 unanswerable
        title = (record.get("title") or "").replace("_", " ")
        prompt = solver_prompt(title, record["question"]) if closed_book else context_solver_prompt(record["context"], record["question"])
        rows.append(rl_row(
            "squad", "closed_book_qa" if closed_book else "reading_comprehension", prompt, texts[0],
            index=i, question=record["question"], answers=list(texts), title=title, id=str(record.get("id") or ""),
        ))
    return rows


def main(argv=None):
    closed_book = ("--closed_book", {"action": "store_true", "help": "question only, no paragraph in the prompt"})
    convert_dataset_main(argv, __doc__, "squad", "rajpurkar/squad", None, convert, options=[closed_book])


if __name__ == "__main__":
    main()
