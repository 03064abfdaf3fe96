"""debug/inspect_parquet.py and debug/generate.py, run as files the way a researcher runs them:
the rows printed are the ones verl's own dataset classes produce (tokens, loss mask, prompt
lengths and what filter_overlong_prompts keeps), and the completions are generation.py's."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from prepare_data import generate_qa

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CORPUS = REPO_ROOT / "demo" / "corpus.jsonl"
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "HF_HUB_OFFLINE": "1"}


def run_debug(script, *args, tmp_path):
    done = subprocess.run([sys.executable, str(REPO_ROOT / "debug" / script), *map(str, args)],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    return done


@pytest.fixture(scope="module")
def demo_data(tiny_tokenizer, tmp_path_factory):
    """Stage-2 and GRPO parquet of demo passage 0 (cloze proposer), and a tokenizer-only model dir."""
    root = tmp_path_factory.mktemp("debug_data")
    tiny_tokenizer.save_pretrained(root / "tokenizer")
    for fmt in ("sft", "grpo"):
        generate_qa.main(["--input", str(DEMO_CORPUS), "--passages", "0", "--output_dir", str(root), "--model", str(root / "tokenizer"),
                          "--proposer", "cloze", "--format", fmt, "--chunk_tokens", "96", "--overlap_tokens", "16"])
    return root


def rows_of(stdout):
    return re.split(r"^== row \d+ of \d+ .*$", stdout, flags=re.MULTILINE)[1:]


def test_inspect_sft_shows_the_loss_mask_verl_computes(demo_data, tiny_tokenizer, tmp_path):
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    parquet = demo_data / "passage0" / "stage2_sft.parquet"
    done = run_debug("inspect_parquet.py", parquet, "--model", demo_data / "tokenizer", "--rows", 2, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    dataset = MultiTurnSFTDataset(str(parquet), tiny_tokenizer, OmegaConf.create({"max_length": 4096, "truncation": "right", "pad_mode": "no_padding"}))
    rows = rows_of(done.stdout)
    assert len(rows) == 2
    for i, text in enumerate(rows):
        item, messages = dataset[i], dataset.messages[i]
        assert f"tokens: {len(item['input_ids'])} (trained: {int(item['loss_mask'].sum())})" in text
        assert "CUT" not in text
        shown = text.split("\n", 2)[2]
        # outside the brackets: exactly the tokens verl trains on (the answer and its end-of-turn)
        trained = re.sub(r"⟦.*?⟧", "", shown, flags=re.DOTALL).strip()
        mask = item["loss_mask"].bool()
        assert trained == tiny_tokenizer.decode(item["input_ids"][mask].tolist()).strip()
        assert trained.startswith(messages[1]["content"])
        assert messages[0]["content"] in "".join(re.findall(r"⟦(.*?)⟧", shown, flags=re.DOTALL))


def test_inspect_sft_warns_when_max_length_cuts_the_answer(demo_data, tmp_path):
    done = run_debug("inspect_parquet.py", demo_data / "passage0" / "stage2_sft.parquet", "--model", demo_data / "tokenizer",
                     "--rows", 1, "--max_length", 40, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.search(r"CUT: the row has \d+ tokens; the trainer keeps the first 40", done.stdout)
    assert "NOTHING TRAINED" in done.stdout and "tokens: 40 (trained: 0)" in done.stdout


def test_inspect_rl_counts_what_filter_overlong_prompts_keeps(demo_data, tiny_tokenizer, tmp_path):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    parquet = demo_data / "passage0" / "grpo.parquet"
    lengths = [len(tiny_tokenizer.apply_chat_template(item, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
               for item in pd.read_parquet(parquet)["prompt"].map(list)]
    limit = sorted(lengths)[len(lengths) // 2]  # about half the prompts fit
    done = run_debug("inspect_parquet.py", parquet, "--model", demo_data / "tokenizer", "--rows", len(lengths),
                     "--max_prompt_length", limit, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    verl_kept = RLHFDataset(str(parquet), tiny_tokenizer, OmegaConf.create({"max_prompt_length": limit, "cache_dir": str(tmp_path / "c")}))
    assert 0 < len(verl_kept) < len(lengths)
    assert f"verl keeps {len(verl_kept)} of {len(lengths)} rows with max_prompt_length {limit}" in done.stdout
    rows = rows_of(done.stdout)
    assert [int(re.search(r"prompt: (\d+) tokens", r).group(1)) for r in rows] == lengths
    assert [("kept" in r.split("\n")[1]) for r in rows] == [n <= limit for n in lengths]
    kept_questions = {verl_kept[i]["extra_info"]["question"] for i in range(len(verl_kept))}
    for text in rows:
        assert "<|im_start|>user\n" in text and text.count("<|im_start|>assistant") == 1  # the rollout's rendering
        question = re.search(r'"question": "(.*?)", "chunk_index"', text).group(1).replace('\\"', '"')
        assert (question in kept_questions) == ("kept" in text.split("\n")[1])


def test_inspect_refuses_other_files_clearly(tmp_path, demo_data):
    other = tmp_path / "other.parquet"
    pd.DataFrame({"text": ["x"]}).to_parquet(other)
    done = run_debug("inspect_parquet.py", other, "--model", demo_data / "tokenizer", tmp_path=tmp_path)
    assert done.returncode == 2 and "neither SFT data" in done.stderr and "['text']" in done.stderr
    done = run_debug("inspect_parquet.py", tmp_path / "missing.parquet", "--model", demo_data / "tokenizer", tmp_path=tmp_path)
    assert done.returncode == 2 and "no such file" in done.stderr
    assert run_debug("inspect_parquet.py", "--help", tmp_path=tmp_path).stdout.count("--max_prompt_length") >= 1


def test_generate_prints_what_generation_py_generates(tiny_model, tmp_path):
    from generation import make_generator
    from prompts import solver_prompt

    prompts = ["Who was the first keeper of the Varrow lighthouse?", "What is quillfeather made of?"]
    args = ["--model", tiny_model, "--max_new_tokens", 8, "--title", "Varrow"]
    done = run_debug("generate.py", *args, *[a for p in prompts for a in ("--prompt", p)], tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    expected = make_generator("hf", str(tiny_model)).generate([[{"role": "user", "content": solver_prompt("Varrow", p)}] for p in prompts], 8)
    blocks = done.stdout.split("### prompt ")[1:]
    assert len(blocks) == 2
    for block, prompt, (completion,) in zip(blocks, prompts, expected):
        assert solver_prompt("Varrow", prompt) in block
        assert block.split("--- completion 0\n", 1)[1].rstrip("\n") == completion.rstrip("\n")
    bad = run_debug("generate.py", "--model", tmp_path / "nope", "--prompt", "x", tmp_path=tmp_path)
    assert bad.returncode == 2 and "neither a local model directory nor a hub id" in bad.stderr
    assert "--prompt" in run_debug("generate.py", "--help", tmp_path=tmp_path).stdout
