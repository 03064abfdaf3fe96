"""A source round's training data, from its passages' implications (make_implications.py):

    python SEAL/general-knowledge/make_source_data.py --implications ROUND/implications.json --output_dir ROUND/data

writes, for verl 0.9.1 (both read back by verl's own dataset classes):
  stage1_sft.parquet  knowledge SFT (scripts/train/sft.sh, STAGES=1, with
                      SFT_DATASET_CLASS=seal_squad.sft_dataset.RawTextSFTDataset): one raw text per
                      row (column `text`, with passage_id and title), the training sequences TTT uses
                      for each passage and completion (SEAL's rule, seal_squad.sequences), the passage
                      itself once
  grpo.parquet        GRPO (scripts/train/grpo.sh): RLHFDataset rows, one per question, the raw answer
                      prompt as the single user message (the pass-through chat template feeds it to
                      the model as is), ground_truth = the answer, extra_info = {index, passage_id,
                      title, question with its Topic line}
and manifest_stage1.json / manifest_grpo.json beside them (rows and counts, which the drivers'
preflight quotes when a file cannot be trained on). See seal_squad/source.py.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from prepare_data.passages import manifest_path, write_parquet  # noqa: E402
from prompts import ANSWER_FIELDS, SQUAD_ANSWER_TEMPLATE, load_prompt_template  # noqa: E402
from seal_squad.data import count_questions, load_passages  # noqa: E402
from seal_squad.source import grpo_rows, sft_rows  # noqa: E402
from utils import write_json_atomic  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--implications", required=True, help="the round's passages with completions (make_implications.py)")
    parser.add_argument("--output_dir", required=True, help="writes stage1_sft.parquet, grpo.parquet and their manifests")
    parser.add_argument("--no_split_newlines", dest="split_newlines", action="store_false",
                        help="one sequence per ---segment instead of one per line (TTT splits lines, as SEAL evaluates)")
    parser.add_argument("--answer_template", help="a text file with the answer prompt, {question} in it, the one "
                        "TTT_server.py gets (default: SEAL's, prompts.SQUAD_ANSWER_TEMPLATE)")
    args = parser.parse_args(argv)
    try:
        items = load_passages(args.implications)
        template = load_prompt_template(args.answer_template, ANSWER_FIELDS) if args.answer_template else SQUAD_ANSWER_TEMPLATE
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    if not all("completions" in item for item in items):
        parser.error(f"{args.implications} has passages without 'completions': make them with make_implications.py")
    sft, grpo = sft_rows(items, args.split_newlines), grpo_rows(items, template)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    completions = sum(len(item["completions"]) for item in items)
    for stage, name, rows, counts in (
            ("stage1", "stage1_sft.parquet", sft, {"passages": len(items), "completions": completions}),
            ("grpo", "grpo.parquet", grpo, {"passages": len(items), "questions": count_questions(items)})):
        write_parquet(rows, out / name, columns=None)  # the columns the row builders make
        write_json_atomic(manifest_path(out, stage), {"output": name, "rows": len(rows), "counts": counts, "skipped": {},
                                                      "source": str(args.implications)})
    print(f"{len(items)} passages: {len(sft)} SFT sequences -> {out / 'stage1_sft.parquet'}, {len(grpo)} GRPO prompts -> "
          f"{out / 'grpo.parquet'}")


if __name__ == "__main__":
    main()
