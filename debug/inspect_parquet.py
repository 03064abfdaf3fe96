r"""Print a parquet's rows as the trainer will see them, through verl's own dataset classes.

    python debug/inspect_parquet.py data/passage0/stage2_sft.parquet --model Qwen/Qwen2.5-7B-Instruct
    python debug/inspect_parquet.py data/passage0/grpo.parquet --model checkpoints/passage0/stage2/final --rows 5

SFT data (a `messages` column: stage1_sft.parquet, stage2_sft.parquet): each row through
verl's MultiTurnSFTDataset as scripts/train/sft.sh sets it up (--max_length, cut on the right),
decoded token by token with the loss mask shown: text the loss is NOT computed on (the prompt,
the chat template's turn headers) is dimmed on a terminal and ⟦bracketed⟧ otherwise; the rest
is what SFT trains on. Each row also gets its token counts, and a warning when max_length cuts it.

RL and eval data (`prompt` and `reward_model` columns: grpo.parquet, eval.parquet): each row
through verl's RLHFDataset, the prompt rendered as the rollout renders it (chat template plus
generation prompt), its token count against --max_prompt_length and whether
data.filter_overlong_prompts drops it, the reference answer and extra_info; then how many of
all the rows verl keeps (counted by verl's own filter).

--model is any model dir or hub id whose tokenizer the trainer uses (the base model, or a
checkpoint: they share the tokenizer).
"""

import argparse
import contextlib
import itertools
import json
import sys
import tempfile
from pathlib import Path

DIM, RESET = "\033[2m", "\033[0m"


def data_kind(path):
    import pyarrow.parquet as pq

    columns = set(pq.read_schema(path).names)
    if "messages" in columns:
        return "sft"
    if {"prompt", "reward_model"} <= columns:
        return "rl"
    raise ValueError(f"{path}: neither SFT data (a `messages` column) nor RLHFDataset data (`prompt`, `reward_model`); columns: {sorted(columns)}")


def token_ids(encoded):
    """apply_chat_template's ids, whatever container this transformers version returns."""
    from verl.utils.tokenizer import normalize_token_ids

    return normalize_token_ids(encoded)


def with_loss_mask(tokenizer, input_ids, loss_mask, color):
    """The decoded tokens; those with loss_mask 0 dimmed (color) or ⟦bracketed⟧."""
    parts = []
    for trained, group in itertools.groupby(zip(input_ids, loss_mask), key=lambda pair: bool(pair[1])):
        text = tokenizer.decode([token for token, _ in group])
        parts.append(text if trained else (f"{DIM}{text}{RESET}" if color else f"⟦{text}⟧"))
    return "".join(parts)


def inspect_sft(path, tokenizer, args, color):
    from omegaconf import OmegaConf
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    config = OmegaConf.create({"max_length": args.max_length, "truncation": "right", "pad_mode": "no_padding"})
    with contextlib.redirect_stdout(sys.stderr):
        dataset = MultiTurnSFTDataset(str(path), tokenizer, config)
    print(f"{path}: {len(dataset)} SFT rows (verl MultiTurnSFTDataset, max_length {args.max_length}, truncation right)")
    print("⟦…⟧ or dimmed: no loss (loss_mask 0); the rest is trained on\n" if not color else f"{DIM}dimmed{RESET}: no loss (loss_mask 0); the rest is trained on\n")
    frame = dataset.dataframe
    for i in range(min(args.rows, len(dataset))):
        item = dataset[i]
        input_ids, loss_mask = item["input_ids"].tolist(), item["loss_mask"].tolist()
        full = len(token_ids(tokenizer.apply_chat_template(dataset.messages[i], tokenize=True, return_dict=True)))
        labels = " ".join(f"{key}={frame.iloc[i][key]}" for key in ("task", "passage_id", "chunk_index") if key in frame.columns)
        print(f"== row {i} of {len(dataset)} · {labels}")
        print(f"tokens: {len(input_ids)} (trained: {sum(loss_mask)})")
        if full > len(input_ids):
            print(f"CUT: the row has {full} tokens; the trainer keeps the first {len(input_ids)} (max_length {args.max_length})")
        if not any(loss_mask):
            print("NOTHING TRAINED: no token of this row has loss_mask 1 (the answer is cut off)")
        print(with_loss_mask(tokenizer, input_ids, loss_mask, color))
        print()


def inspect_rl(path, tokenizer, args):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    with tempfile.TemporaryDirectory() as cache, contextlib.redirect_stdout(sys.stderr):
        config = OmegaConf.create({"max_prompt_length": args.max_prompt_length, "filter_overlong_prompts": False, "cache_dir": cache})
        dataset = RLHFDataset(str(path), tokenizer, config)
        # verl's own filter, on all rows, for the count it will train or evaluate on
        dataset.filter_overlong_prompts = True
        kept = len(dataset.maybe_filter_out_long_prompts(dataset.dataframe))
    print(f"{path}: {len(dataset)} RL rows (verl RLHFDataset, max_prompt_length {args.max_prompt_length})\n")
    for i in range(min(args.rows, len(dataset))):
        item = dataset[i]
        # the length verl's filter_overlong_prompts measures
        n_tokens = len(token_ids(tokenizer.apply_chat_template(item["prompt"], add_generation_prompt=True, tokenize=True)))
        verdict = "kept" if n_tokens <= args.max_prompt_length else "DROPPED by data.filter_overlong_prompts"
        print(f"== row {i} of {len(dataset)} · data_source={item['data_source']} ability={item.get('ability')}")
        print(f"prompt: {n_tokens} tokens, max_prompt_length {args.max_prompt_length}: {verdict}")
        print(tokenizer.apply_chat_template(item["raw_prompt"], add_generation_prompt=True, tokenize=False))
        print(f"ground truth: {item['reward_model']['ground_truth']}")
        print(f"extra_info: {json.dumps(item['extra_info'], ensure_ascii=False, default=str)}")
        print()
    print(f"verl keeps {kept} of {len(dataset)} rows with max_prompt_length {args.max_prompt_length} "
          f"(data.filter_overlong_prompts drops {len(dataset) - kept})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parquet", help="a PaST parquet: stage1_sft / stage2_sft / grpo / eval .parquet")
    parser.add_argument("--model", required=True, help="model dir or hub id whose tokenizer (and chat template) the trainer uses")
    parser.add_argument("--rows", type=int, default=3, help="rows to print (default: 3)")
    parser.add_argument("--max_length", type=int, default=4096, help="SFT: data.max_length (sft.sh's MAX_LENGTH, default 4096)")
    parser.add_argument("--max_prompt_length", type=int, default=1024, help="RL: data.max_prompt_length (grpo.sh's MAX_PROMPT_LENGTH, default 1024)")
    args = parser.parse_args(argv)
    path = Path(args.parquet)
    try:
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        if args.rows < 1 or args.max_length < 1 or args.max_prompt_length < 1:
            raise ValueError("--rows, --max_length and --max_prompt_length must be >= 1")
        kind = data_kind(path)
    except ValueError as e:
        parser.error(str(e))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if kind == "sft":
        inspect_sft(path, tokenizer, args, color=sys.stdout.isatty())
    else:
        inspect_rl(path, tokenizer, args)


if __name__ == "__main__":
    main()
