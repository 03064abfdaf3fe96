r"""Stage-1 SFT data for LooGLE passages: the passage's knowledge, in three task types.

    python -m prepare_data.generate_mixed_data --input data/loogle/shortdep_qa.jsonl \
        --passages 0-4 --model Qwen/Qwen2.5-7B-Instruct --backend vllm
    python -m prepare_data.generate_mixed_data --input demo/corpus.jsonl --passages 0-2 \
        --model checkpoints/tiny-qwen2 --backend hf --output_dir data/demo

Each passage is cut into overlapping token chunks (the tokenizer of --tokenizer or --model);
for every chunk:
  summary   the generator summarises the chunk (outputs with nothing left after cleaning are
            skipped and counted in the manifest)
  recall    "recite part k of n of <title>" -> the chunk, verbatim (no model)
  continue  the chunk's first part -> its rest, verbatim (no model)
Writes DATA/passage{N}/stage1_sft.parquet (column `messages`, for verl's MultiTurnSFTDataset;
also task, passage_id, chunk_index) and then manifest_stage1.json. A rerun skips passages
whose output is complete with the same settings; --overwrite redoes them.
"""

from prepare_data.passages import SFT_COLUMNS, generate_per_prompt, generation_cli, run_per_passage, sft_row, templates_sha256
from prompts import CONTINUE_TEMPLATE, RECALL_TEMPLATE, SUMMARY_TEMPLATE, continue_prompt, recall_prompt, summary_prompt
from utils import parse_summary, split_continuation

TASKS = ("summary", "recall", "continue")


def task_list(args):
    return [t.strip() for t in args.tasks.split(",") if t.strip()]


def main(argv=None):
    options = [
        ("--tasks", {"default": ",".join(TASKS), "help": "comma list of task types to build (default: all three)"}),
        ("--summaries_per_chunk", {"type": int, "default": 1, "help": "summaries sampled per chunk (>1 needs --temperature > 0)"}),
    ]

    def check(args):
        unknown = sorted(set(task_list(args)) - set(TASKS))
        if unknown or not task_list(args):
            raise ValueError(f"--tasks: unknown or no task types {unknown}; choose from {', '.join(TASKS)}")
        if args.summaries_per_chunk < 1:
            raise ValueError("--summaries_per_chunk must be >= 1")

    args, passages = generation_cli(argv, __doc__, 512, options, check)
    tasks = task_list(args)

    def build_rows(passage, chunks, n_chunks, tokenizer, get_generator):
        summaries = [[] for _ in chunks]
        skipped = {"summary_empty": 0, "summary_duplicate": 0, "continue_too_short": 0}
        if "summary" in tasks:
            prompts = [summary_prompt(passage.title, c.text) for c in chunks]
            outputs = generate_per_prompt(get_generator(), args, prompts, args.summaries_per_chunk)
            for k, completions in enumerate(outputs):
                for text in completions:
                    summary = parse_summary(text)
                    if summary is None:
                        skipped["summary_empty"] += 1
                    elif summary in summaries[k]:
                        skipped["summary_duplicate"] += 1
                    else:
                        summaries[k].append(summary)
        rows = []
        for k, chunk in enumerate(chunks):
            for summary in summaries[k]:
                rows.append(sft_row("summary", passage, chunk, summary_prompt(passage.title, chunk.text), summary))
            if "recall" in tasks:
                rows.append(sft_row("recall", passage, chunk, recall_prompt(passage.title, chunk.index + 1, n_chunks), chunk.text))
            if "continue" in tasks and chunk.end_token - chunk.start_token < 2:
                skipped["continue_too_short"] += 1
            elif "continue" in tasks:
                prefix, rest = split_continuation(chunk.text, tokenizer)
                rows.append(sft_row("continue", passage, chunk, continue_prompt(passage.title, prefix), rest))
        counts = {task: sum(r["task"] == task for r in rows) for task in tasks}
        return rows, counts, skipped

    settings = {
        "tasks": tasks,
        "summaries_per_chunk": args.summaries_per_chunk,
        "templates_sha256": templates_sha256(SUMMARY_TEMPLATE, RECALL_TEMPLATE, CONTINUE_TEMPLATE),
    }
    run_per_passage(args, passages, "stage1", "stage1_sft.parquet", SFT_COLUMNS, settings, build_rows)


if __name__ == "__main__":
    main()
