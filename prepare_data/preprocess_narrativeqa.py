"""NarrativeQA -> verl RLHFDataset parquet: questions about a story, answered from its summary.

    python -m prepare_data.preprocess_narrativeqa --split train --output data/narrativeqa/train.parquet
    python -m prepare_data.preprocess_narrativeqa --input narrativeqa_test.parquet --output data/narrativeqa/test.parquet

Rows of deepmind/narrativeqa: document{id, summary{text, title}, ...}, question{text},
answers[{text}]. The prompt carries the story's summary (the standard summary setting; full
books do not fit a prompt); ground_truth is the first answer, extra_info keeps both.
"""

from prepare_data.passages import convert_dataset_main, rl_row
from prompts import context_solver_prompt


def convert(records, source):
    rows = []
    for i, record in enumerate(records):
        try:
            summary = record["document"]["summary"]["text"]
            question = record["question"]["text"]
            answers = [a["text"] for a in record["answers"] if a["text"].strip()]
        except (KeyError, TypeError, AttributeError):
            raise ValueError(f"{source} row {i}: need document.summary.text, question.text and answers[].text, got {record!r:.200}") from None
        if not (summary.strip() and question.strip() and answers):
            raise ValueError(f"{source} row {i}: empty summary, question or answers")
        rows.append(rl_row(
            "narrativeqa", "reading_comprehension", context_solver_prompt(summary, question), answers[0],
            index=i, question=question, answers=answers, document_id=str(record["document"].get("id", "")),
            title=str((record["document"]["summary"] or {}).get("title", "")),
        ))
    return rows


def main(argv=None):
    convert_dataset_main(argv, __doc__, "narrativeqa", "deepmind/narrativeqa", None, convert)


if __name__ == "__main__":
    main()
