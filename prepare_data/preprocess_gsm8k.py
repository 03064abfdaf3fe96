"""GSM8K -> verl RLHFDataset parquet (a reasoning source domain for GRPO).

    python -m prepare_data.preprocess_gsm8k --split train --output data/gsm8k/train.parquet
    python -m prepare_data.preprocess_gsm8k --input gsm8k_test.jsonl --output data/gsm8k/test.parquet

Rows of openai/gsm8k ("main"): `question`, `answer` (worked solution ending "#### <number>").
The prompt asks for step-by-step work and a final "Answer:" line; ground_truth is the number.
"""

import re

from prepare_data.passages import convert_dataset_main, rl_row
from prompts import math_prompt

_FINAL = re.compile(r"####\s*(.+?)\s*\Z", re.DOTALL)


def convert(records, source):
    rows = []
    for i, record in enumerate(records):
        question, solution = record.get("question"), record.get("answer")
        final = _FINAL.search(solution or "")
        if not (isinstance(question, str) and question.strip() and final):
            raise ValueError(f"{source} row {i}: need `question` and an `answer` ending in '#### <number>', got {record!r:.200}")
        number = final.group(1).replace(",", "")
        rows.append(rl_row("gsm8k", "math", math_prompt(question), number, index=i, question=question, solution=solution))
    return rows


def main(argv=None):
    convert_dataset_main(argv, __doc__, "gsm8k", "openai/gsm8k", "main", convert)


if __name__ == "__main__":
    main()
