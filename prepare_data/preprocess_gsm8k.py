"""GSM8K -> verl RLHFDataset parquet (a reasoning source domain for GRPO).

    python -m prepare_data.preprocess_gsm8k --split train --output data/gsm8k/train.parquet
    python -m prepare_data.preprocess_gsm8k --input gsm8k_test.jsonl --output data/gsm8k/test.parquet

Rows of openai/gsm8k ("main"): `question`, `answer` (worked solution ending "#### <number>").
The prompt asks for step-by-step work and a final "Answer:" line; ground_truth is the number.
"""

import argparse
import logging
import re

from prepare_data.passages import add_dataset_args, load_records, write_rl_dataset
from prompts import math_prompt

_FINAL = re.compile(r"####\s*(.+?)\s*\Z", re.DOTALL)


def convert(records, source):
    rows = []
    for i, record in enumerate(records):
        question, solution = record.get("question"), record.get("answer")
        final = _FINAL.search(solution or "")
        if not (isinstance(question, str) and question.strip() and final):
            raise ValueError(f"{source} row {i}: need `question` and an `answer` ending in '#### <number>', got {record!r:.200}")
        rows.append(
            {
                "data_source": "gsm8k",
                "prompt": [{"role": "user", "content": math_prompt(question)}],
                "ability": "math",
                "reward_model": {"style": "model", "ground_truth": final.group(1).replace(",", "")},
                "extra_info": {"index": i, "question": question, "solution": solution},
            }
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_args(parser, default_split="train")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        records = load_records(args.input, "openai/gsm8k", "main", args.split)
        write_rl_dataset(convert(records, args.input or f"openai/gsm8k:{args.split}"), args, "gsm8k")
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))


if __name__ == "__main__":
    main()
