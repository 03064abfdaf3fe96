"""NarrativeQA -> verl RLHFDataset parquet: questions about a story, answered from its summary.

    python -m prepare_data.preprocess_narrativeqa --split train --output data/narrativeqa/train.parquet
    python -m prepare_data.preprocess_narrativeqa --input narrativeqa_test.parquet --output data/narrativeqa/test.parquet

Rows of deepmind/narrativeqa: document{id, summary{text, title}, ...}, question{text},
answers[{text}]. The prompt carries the story's summary (the standard summary setting; full
books do not fit a prompt); ground_truth is the first answer, extra_info keeps both.
"""

import argparse
import logging

from prepare_data.passages import add_dataset_args, load_records, write_rl_dataset
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
        rows.append(
            {
                "data_source": "narrativeqa",
                "prompt": [{"role": "user", "content": context_solver_prompt(summary, question)}],
                "ability": "reading_comprehension",
                "reward_model": {"style": "model", "ground_truth": answers[0]},
                "extra_info": {
                    "index": i, "question": question, "answers": answers,
                    "document_id": str(record["document"].get("id", "")),
                    "title": str((record["document"]["summary"] or {}).get("title", "")),
                },
            }
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_args(parser, default_split="train")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        records = load_records(args.input, "deepmind/narrativeqa", None, args.split)
        write_rl_dataset(convert(records, args.input or f"deepmind/narrativeqa:{args.split}"), args, "narrativeqa")
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))


if __name__ == "__main__":
    main()
