r"""LooGLE passages -> per-passage evaluation sets in verl's RLHFDataset schema.

    python loogle-clean/clean_loogle.py        # once: LooGLE from the hub -> data/loogle/*.jsonl
    python -m prepare_data.loogle_to_parquet --input data/loogle/shortdep_qa.jsonl --passages 0-4
    python -m prepare_data.loogle_to_parquet --input demo/corpus.jsonl --output_dir data/demo

writes DATA/passage{N}/eval.parquet: one row per LooGLE QA pair of passage N, the question in
the closed-book solver prompt (the model must answer from what SFT taught it), the reference
answer as `reward_model.ground_truth`, and `extra_info` = index, passage_id, question, evidence,
title, qa_type, loogle_split.

--split (shortdep | longdep) says which LooGLE task the questions come from; the evaluation
gives long-dependency answers more room (LooGLE allows 300 new tokens for short-dependency QA,
500 for long-dependency QA). Default: the one the input file's name names (longdep_qa.jsonl ->
longdep), else shortdep. It is recorded in every row and in the manifest.
"""

import argparse
import logging
import time
from pathlib import Path

from prepare_data.passages import DEFAULT_LOOGLE_FILE, RL_COLUMNS, finish_stage, load_passages, parse_passage_ids, passage_dir, rl_row, start_stage
from prompts import solver_prompt

log = logging.getLogger("loogle_to_parquet")

DATA_SOURCE = "loogle"
ABILITY = "closed_book_qa"
SPLITS = ("shortdep", "longdep")


def split_of(input_file, split):
    """The LooGLE split of `input_file`: `split` if given (and not contradicted by the file's
    name), else the one its name names, else shortdep."""
    named = [s for s in SPLITS if s in Path(input_file).name.lower()]
    if split and named and named != [split]:
        raise ValueError(f"--split {split}, but the file name {Path(input_file).name!r} says {named[0]}: pass the matching file or --split")
    if split or named:
        return split or named[0]
    log.info("%s names no LooGLE split: using shortdep (pass --split longdep for long-dependency QA)", input_file)
    return "shortdep"


def eval_rows(passage, loogle_split):
    return [
        rl_row(
            DATA_SOURCE, ABILITY, solver_prompt(passage.title, qa["Q"]), qa["A"],
            index=index, passage_id=passage.passage_id, question=qa["Q"], evidence=qa.get("S") or "",
            title=passage.title, qa_type=qa.get("type") or "", loogle_split=loogle_split,
        )
        for index, qa in enumerate(passage.qa_pairs)
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=DEFAULT_LOOGLE_FILE, help=f"LooGLE jsonl (input, title, qa_pairs); default: {DEFAULT_LOOGLE_FILE}")
    parser.add_argument("--split", choices=SPLITS, help="the LooGLE split of --input (default: from its file name, else shortdep)")
    parser.add_argument("--output_dir", default="data", help="root of the per-passage folders (default: data)")
    parser.add_argument("--passages", default=None, help="passage ids: N, N-M or a comma list (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    try:
        loogle_split = split_of(args.input, args.split)
        ids = parse_passage_ids(args.passages) if args.passages is not None else None
        passages = load_passages(args.input, ids)
        for passage in passages:
            if not passage.qa_pairs:
                raise ValueError(f"{passage.source}: passage {passage.passage_id} has no QA pairs to evaluate on")
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    for passage in passages:
        start = time.time()
        out_dir = passage_dir(args.output_dir, passage.passage_id)
        start_stage(out_dir, "eval")
        rows = eval_rows(passage, loogle_split)
        settings = {"input": passage.source, "loogle_split": loogle_split}
        finish_stage(out_dir, "eval", passage, "eval.parquet", RL_COLUMNS, rows, {"qa": len(rows)}, {}, settings, time.time() - start)
        log.info("passage %d (%s): %d %s QA pairs -> %s", passage.passage_id, passage.title, len(rows), loogle_split, out_dir / "eval.parquet")


if __name__ == "__main__":
    main()
