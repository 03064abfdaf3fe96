"""SQuAD passages for the knowledge-incorporation setting, selected as SEAL selects them.

    python SEAL/general-knowledge/squad_data.py --output data/squad/squad_val_eval.json      # hub dev, SEAL's 200
    python SEAL/general-knowledge/squad_data.py --input squad_val.json --start 0 --n 200 --output OUT.json
    python SEAL/general-knowledge/squad_data.py --input rajpurkar/squad --split train --start 0 --n 50 \
        --exclude data/squad/squad_val_eval.json --output OUT.json          # source passages of a round

--input is SEAL's grouped JSON ([{title, context, questions: [{question, answer}]}]), a file of
raw SQuAD rows (.json/.jsonl/.parquet, or the original nested SQuAD JSON), or a hub dataset id
(default rajpurkar/squad; needs network). Raw rows are grouped by paragraph in order of first
appearance, answer = the first reference answer. Selection: random.seed(SEED);
random.shuffle(passages); passages[START:START+N]. With SQuAD v1.1 dev, --seed 42 --start 0
--n 200 is SEAL's evaluation set (200 passages, 974 questions). The output is the grouped schema,
each passage with `passage_id` = its position in the shuffle. --exclude FILE (grouped JSON, e.g.
the evaluation passages) refuses a selection that shares a passage with FILE.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from seal_squad.data import SQUAD_HUB_DATASET, check_disjoint, count_questions, load_passages, load_squad, select  # noqa: E402
from utils import write_json_atomic  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=SQUAD_HUB_DATASET, help=f"grouped JSON, raw SQuAD rows, or a hub id (default {SQUAD_HUB_DATASET})")
    parser.add_argument("--split", default="validation", help="hub split (default validation = SQuAD dev; train for source passages)")
    parser.add_argument("--seed", type=int, default=42, help="shuffle seed (default 42, SEAL's)")
    parser.add_argument("--start", type=int, default=0, help="first position in the shuffled list (default 0)")
    parser.add_argument("--n", type=int, default=None, help="number of passages (default: all from --start)")
    parser.add_argument("--exclude", help="grouped JSON of passages the selection must not contain (the evaluation set)")
    parser.add_argument("--output", required=True, help="grouped JSON to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = parser.parse_args(argv)
    if os.path.exists(args.output) and not args.overwrite:
        parser.error(f"{args.output} exists; pass --overwrite to replace it")
    try:
        passages = load_squad(args.input, args.split)
        selected = [{**p, "passage_id": args.start + i} for i, p in enumerate(select(passages, args.seed, args.start, args.n))]
        if args.exclude:
            check_disjoint(selected, load_passages(args.exclude), f"{args.input} ({args.split})", args.exclude)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    write_json_atomic(args.output, selected)
    print(f"{len(selected)} passages, {count_questions(selected)} questions (positions {args.start}.."
          f"{args.start + len(selected) - 1} of {len(passages)} shuffled with seed {args.seed}) -> {args.output}")


if __name__ == "__main__":
    main()
