r"""LooGLE passages -> per-passage evaluation sets in verl's RLHFDataset schema.

    python -m prepare_data.loogle_to_parquet --input ../shared/data/loogle-sample/shortdep_qa.jsonl \
        --output_dir data --passages 0-4

writes DATA/passage{N}/eval.parquet: one row per LooGLE QA pair of passage N, the question in
the closed-book solver prompt (the model must answer from what SFT taught it), the reference
answer as `reward_model.ground_truth`, and `extra_info` = index, passage_id, question, evidence,
title, qa_type. Without --input the passages come from the Hugging Face hub (online only).
"""

import argparse
import logging
import time

from prepare_data.passages import RL_COLUMNS, finish_stage, load_hub_passages, load_passages, parse_passage_ids, passage_dir, start_stage
from prompts import solver_prompt

log = logging.getLogger("loogle_to_parquet")

DATA_SOURCE = "loogle"
ABILITY = "closed_book_qa"


def eval_rows(passage):
    rows = []
    for index, qa in enumerate(passage.qa_pairs):
        rows.append(
            {
                "data_source": DATA_SOURCE,
                "prompt": [{"role": "user", "content": solver_prompt(passage.title, qa["Q"])}],
                "ability": ABILITY,
                "reward_model": {"style": "model", "ground_truth": qa["A"]},
                "extra_info": {
                    "index": index,
                    "passage_id": passage.passage_id,
                    "question": qa["Q"],
                    "evidence": qa.get("S") or "",
                    "title": passage.title,
                    "qa_type": qa.get("type") or "",
                },
            }
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="LooGLE jsonl (input, title, qa_pairs); omit to download shortdep_qa from the hub")
    parser.add_argument("--output_dir", default="data", help="root of the per-passage folders (default: data)")
    parser.add_argument("--passages", default=None, help="passage ids: N, N-M or a comma list (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    try:
        ids = parse_passage_ids(args.passages) if args.passages is not None else None
        passages = load_passages(args.input, ids) if args.input else load_hub_passages(ids)
        for passage in passages:
            if not passage.qa_pairs:
                raise ValueError(f"{passage.source}: passage {passage.passage_id} has no QA pairs to evaluate on")
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    for passage in passages:
        start = time.time()
        out_dir = passage_dir(args.output_dir, passage.passage_id)
        start_stage(out_dir, "eval")
        rows = eval_rows(passage)
        finish_stage(out_dir, "eval", passage, "eval.parquet", RL_COLUMNS, rows, {"qa": len(rows)}, {}, {"input": passage.source}, time.time() - start)
        log.info("passage %d (%s): %d QA pairs -> %s", passage.passage_id, passage.title, len(rows), out_dir / "eval.parquet")


if __name__ == "__main__":
    main()
