"""The tiny fixture checkpoints are real HF models: they load, generate, and their chat template
survives verl's MultiTurnSFTDataset (which renders each turn alone and asserts equality)."""

import json

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from make_tiny_model import build_model, build_tokenizer


@pytest.mark.parametrize("variant", ["tiny_model", "tiny_model_tied", "tiny_model_sharded", "tiny_model_bin"])
def test_variant_loads_and_generates(variant, request):
    model_dir = request.getfixturevalue(variant)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    n_params = sum(p.numel() for p in model.parameters())
    assert 400_000 <= n_params <= 1_000_000
    assert model.config.hidden_size // model.config.num_attention_heads == 64
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Who wrote the report?"}], add_generation_prompt=True, tokenize=False
    )
    inputs = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False, min_new_tokens=5)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5


def test_variant_files(tiny_model, tiny_model_tied, tiny_model_sharded, tiny_model_bin):
    assert (tiny_model / "model.safetensors").exists()
    assert (tiny_model / "chat_template.jinja").exists() or "chat_template" in json.loads(
        (tiny_model / "tokenizer_config.json").read_text()
    )
    index = json.loads((tiny_model_sharded / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) >= 2 and all((tiny_model_sharded / s).exists() for s in shards)
    assert (tiny_model_bin / "pytorch_model.bin").exists()
    assert not list(tiny_model_bin.glob("*.safetensors"))
    from safetensors import safe_open

    with safe_open(tiny_model_tied / "model.safetensors", "pt") as f:
        assert "lm_head.weight" not in f.keys()
    with safe_open(tiny_model / "model.safetensors", "pt") as f:
        assert "lm_head.weight" in f.keys()


def test_build_is_deterministic(tmp_path, tiny_model):
    again = build_model(tmp_path / "again", tokenizer=build_tokenizer())
    assert (again / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()
    assert (again / "tokenizer.json").read_text() == (tiny_model / "tokenizer.json").read_text()


def test_chat_template_round_trips_through_verl_multiturn_dataset(tmp_path, tiny_model):
    from omegaconf import OmegaConf
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    conversation = [
        {"role": "user", "content": "What did the committee decide in 1998?"},
        {"role": "assistant", "content": "It approved the new charter."},
        {"role": "user", "content": "Who chaired it?"},
        {"role": "assistant", "content": "The mayor of the town."},
    ]
    parquet = tmp_path / "sft.parquet"
    pd.DataFrame({"messages": [conversation]}).to_parquet(parquet)
    config = OmegaConf.create({"max_length": 256, "truncation": "error", "messages_key": "messages"})
    dataset = MultiTurnSFTDataset(parquet_files=str(parquet), tokenizer=tokenizer, config=config)
    item = dataset[0]
    input_ids = item["input_ids"]
    loss_mask = item["loss_mask"]
    if item.get("attention_mask") is not None and item["attention_mask"].dim() == 1:
        input_ids = input_ids[item["attention_mask"].bool()]
        loss_mask = loss_mask[item["attention_mask"].bool()]
    whole = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert tokenizer.decode(input_ids) == whole
    # The loss covers exactly the assistant answers (and their end-of-turn tokens).
    trained = tokenizer.decode(input_ids[loss_mask.bool()])
    assert "It approved the new charter." in trained and "The mayor of the town." in trained
    assert "committee" not in trained and "Who chaired" not in trained
    assert torch.equal(input_ids, input_ids)


@pytest.mark.slow
def test_pretraining_on_a_world_teaches_its_questions_and_nothing_else(tmp_path):
    """--pretrain_corpus: the model answers the corpus's own questions (known kinds) closed-book,
    in the solver prompt the evaluation uses; its config is the deeper PRETRAINED_CONFIG."""
    from make_tiny_model import PRETRAINED_CONFIG
    from prepare_data import world
    from prompts import solver_prompt

    world.main(["--output_dir", str(tmp_path / "w"), "--passages", "1", "--people_per_passage", "6", "--pretrain_people", "6"])
    corpus = tmp_path / "w" / "pretrain.jsonl"
    build_model(tmp_path / "m", tied=True, dtype="float32", corpus_paths=[corpus], pretrain_corpus=[corpus], pretrain_epochs=150)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert model.config.num_hidden_layers == PRETRAINED_CONFIG["num_hidden_layers"]
    row = json.loads(corpus.read_text().splitlines()[0])
    right = 0
    for qa in row["qa_pairs"]:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": solver_prompt(row["title"], qa["Q"])}],
                                               add_generation_prompt=True, tokenize=False)
        inputs = tokenizer(prompt, return_tensors="pt")
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        right += tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip() == qa["A"]
    assert right >= 0.8 * len(row["qa_pairs"]), f"{right} of {len(row['qa_pairs'])} pretraining questions answered"


def test_pretraining_corpus_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare_data.world"):
        build_model(tmp_path / "m", pretrain_corpus=[tmp_path / "nope.jsonl"])
    assert not (tmp_path / "m").exists()
