"""The SQuAD source stage's data and gate: squad_data.py --exclude and passage ids,
make_source_data.py's parquet read back by verl's own dataset code (the raw-text SFT class built
from its class path, as sft.sh names it; RLHFDataset for GRPO), the pass-through chat template
rendered the way verl's rollout renders it (from the config grpo.sh composes), and the knowledge
gate's decision on given accuracies."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import squad_fixture
from helpers import load_state
from prompts import squad_answer_prompt, squad_question
from seal_squad.sequences import training_sequences
from seal_squad.source import gate_decision, grpo_rows, macro_accuracy, sft_rows

REPO = Path(__file__).resolve().parent.parent
GK = REPO / "SEAL" / "general-knowledge"
TRAIN = REPO / "scripts" / "train"
COMPLETIONS = ["1. The lighthouse dates from 1871.\n2. Its lamp burned whale oil.", ""]


def python(script, *args):
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


def dry_run_overrides(driver, **settings):
    """The Hydra overrides a driver passes to verl under DRY_RUN=1 (its printed command line)."""
    env = {**os.environ, "PYTHON": sys.executable, "DRY_RUN": "1", "PAST_DEVICE": "cpu", **{k: str(v) for k, v in settings.items()}}
    done = subprocess.run(["bash", str(driver)], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("DRY_RUN [")]
    words = shlex.split(line.split("]: ", 1)[1])
    module = next(i for i, word in enumerate(words) if word.startswith("verl.trainer."))
    return words[module + 1:]


def compose(config_name, overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


@pytest.fixture(scope="module")
def implications(tmp_path_factory):
    root = tmp_path_factory.mktemp("source")
    items = [{**p, "passage_id": 10 + i, "completions": [c]} for i, (p, c) in enumerate(zip(squad_fixture.passages()[:2], COMPLETIONS))]
    path = root / "implications.json"
    path.write_text(json.dumps(items))
    return path


@pytest.fixture(scope="module")
def source_data(implications):
    out = implications.parent / "data"
    done = python(GK / "make_source_data.py", "--implications", implications, "--output_dir", out)
    assert done.returncode == 0, done.stderr
    return out


def test_squad_data_records_passage_ids_and_refuses_evaluation_passages(tmp_path):
    grouped = tmp_path / "train.json"
    grouped.write_text(json.dumps(squad_fixture.passages()))
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps(squad_fixture.passages()[3:4]))
    out = tmp_path / "round.json"
    done = python(GK / "squad_data.py", "--input", grouped, "--start", 1, "--n", 2, "--output", out)
    assert done.returncode == 0, done.stderr
    assert [p["passage_id"] for p in json.loads(out.read_text())] == [1, 2]
    # The seed-42 shuffle of all six passages puts passage 3 somewhere: a selection of all of them
    # must hit it, and is refused before anything is written.
    refused = python(GK / "squad_data.py", "--input", grouped, "--n", 6, "--exclude", evaluation, "--output", tmp_path / "x.json")
    assert refused.returncode == 2 and "1 of the 6 passages" in refused.stderr and "Copper Valley Railway" in refused.stderr
    assert not (tmp_path / "x.json").exists()


def test_sft_rows_are_ttts_sequences_with_the_passage_once():
    items = [{**squad_fixture.PASSAGES[0], "passage_id": 7, "completions": [COMPLETIONS[0], COMPLETIONS[0] + "\n3. It was automated."]}]
    rows = sft_rows(items)
    title, context = items[0]["title"], items[0]["context"]
    expected = training_sequences(title, context, COMPLETIONS[0])[:-1] + [f"{title}\n3. It was automated.", f"{title}\n{context}"]
    assert sorted(r["text"] for r in rows) == sorted(expected)
    assert [r["text"] for r in rows].count(f"{title}\n{context}") == 1
    assert {r["passage_id"] for r in rows} == {7}
    # No completion at all: the passage alone.
    assert [r["text"] for r in sft_rows([squad_fixture.PASSAGES[1]])] == [f"Marsh Orchid\n{squad_fixture.PASSAGES[1]['context']}"]


def test_grpo_rows_are_rlhf_rows_with_the_raw_answer_prompt():
    rows = grpo_rows([{**squad_fixture.PASSAGES[1], "passage_id": 3}])
    assert len(rows) == 2
    question = squad_question("Marsh Orchid", "When does the marsh orchid flower?")
    assert rows[0]["prompt"] == [{"role": "user", "content": squad_answer_prompt(question)}]
    assert rows[0]["reward_model"] == {"style": "model", "ground_truth": "late June"}
    assert rows[0]["extra_info"] == {"index": 0, "passage_id": 3, "title": "Marsh Orchid", "question": question}
    assert rows[1]["extra_info"]["index"] == 1 and rows[0]["data_source"] == "squad"


def test_make_source_data_writes_both_sets_and_manifests(source_data, implications):
    sft = pd.read_parquet(source_data / "stage1_sft.parquet")
    items = json.loads(implications.read_text())
    assert sft.text.tolist() == [r["text"] for r in sft_rows(items)]
    grpo = pd.read_parquet(source_data / "grpo.parquet")
    assert len(grpo) == sum(len(item["questions"]) for item in items) == 5
    manifest = json.loads((source_data / "manifest_grpo.json").read_text())
    assert manifest["output"] == "grpo.parquet" and manifest["rows"] == 5


def test_raw_text_dataset_built_by_verl_from_the_class_path(source_data, tiny_model_fp32, tmp_path):
    """verl's create_sft_dataset with the data config sft.sh composes (SFT_DATASET_CLASS): one
    item per row, the raw tokenization + EOS, the loss on every token but the first; verl's
    no-padding collator batches them."""
    from transformers import AutoTokenizer
    from verl.trainer.sft_trainer import create_sft_dataset
    from verl.utils.dataset.dataset_utils import SFTTensorCollator

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    os.symlink(source_data / "stage1_sft.parquet", data_dir / "stage1_sft.parquet")
    overrides = dry_run_overrides(TRAIN / "sft.sh", STAGES=1, MODEL=tiny_model_fp32, DATA_DIR=data_dir, CKPT_DIR=tmp_path / "ck",
                                  SFT_DATASET_CLASS="seal_squad.sft_dataset.RawTextSFTDataset", SFT_MAX_LENGTH=64)
    config = compose("sft_trainer_engine", overrides)
    assert (config.data.custom_cls.path, config.data.custom_cls.name) == ("pkg://seal_squad.sft_dataset", "RawTextSFTDataset")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_fp32)
    dataset = create_sft_dataset(config.data.train_files, config.data, tokenizer, None)
    texts = pd.read_parquet(source_data / "stage1_sft.parquet").text.tolist()
    assert type(dataset).__name__ == "RawTextSFTDataset" and len(dataset) == len(texts)
    for i, text in enumerate(texts):
        item = dataset[i]
        ids = (tokenizer(text)["input_ids"] + [tokenizer.eos_token_id])[:64]  # data.truncation=right at SFT_MAX_LENGTH
        assert item["input_ids"].tolist() == ids
        assert item["position_ids"].tolist() == list(range(len(ids)))
        assert item["loss_mask"].tolist() == [0] + [1] * (len(ids) - 1)
    batch = SFTTensorCollator(config.data.pad_mode)([dataset[0], dataset[1]])
    assert batch["input_ids"].is_nested and torch.equal(batch["input_ids"].values(), torch.cat([dataset[0]["input_ids"], dataset[1]["input_ids"]]))
    # data.truncation=error names the row that does not fit.
    config.data.truncation = "error"
    strict = create_sft_dataset(config.data.train_files, config.data, tokenizer, None)
    long_row = max(range(len(texts)), key=lambda i: len(tokenizer(texts[i])["input_ids"]))
    with pytest.raises(ValueError, match=f"row {long_row}: .* > data.max_length 64"):
        strict[long_row]


def test_pass_through_template_gives_the_raw_prompt_ids(source_data, tiny_model_fp32, tmp_path):
    """The config grpo.sh composes with CHAT_TEMPLATE=raw_prompt.jinja, turned into verl's model
    config (its tokenizer takes the template) and rendered by verl's rollout token builder: the
    prompt ids are exactly the raw tokenization of the answer prompt; RLHFDataset keeps every row."""
    from transformers import AutoTokenizer
    from verl.trainer.ppo.utils import create_rl_dataset
    from verl.utils.config import omega_conf_to_dataclass
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    template = (GK / "raw_prompt.jinja").read_text()
    overrides = dry_run_overrides(TRAIN / "grpo.sh", START_MODEL=tiny_model_fp32, GRPO_DIR=tmp_path / "grpo",
                                  GRPO_TRAIN_FILES=source_data / "grpo.parquet", GRPO_VAL_FILES=source_data / "grpo.parquet",
                                  CHAT_TEMPLATE=GK / "raw_prompt.jinja", GRADER="squad", MAX_RESPONSE_LENGTH=64)
    config = compose("ppo_trainer", overrides)
    assert config.actor_rollout_ref.model.custom_chat_template == template
    assert config.reward.custom_reward_function.reward_kwargs.grader == "squad"
    assert config.data.max_response_length == 64
    model = omega_conf_to_dataclass(config.actor_rollout_ref.model)
    assert model.tokenizer.chat_template == template
    builder = create_continuous_token_builder(model.tokenizer, hf_model_type=model.hf_config.model_type, processor=model.processor)
    raw = AutoTokenizer.from_pretrained(tiny_model_fp32)
    dataset = create_rl_dataset(config.data.train_files, config.data, model.tokenizer, model.processor, is_train=True)
    rows = pd.read_parquet(source_data / "grpo.parquet")
    assert len(dataset) == len(rows)
    for messages in rows.prompt:
        prompt = messages[0]["content"]
        assert builder.build_initial_tokens([dict(m) for m in messages]) == raw(prompt)["input_ids"]
    # The tokenizer's own (ChatML) template would have wrapped it.
    assert raw.apply_chat_template([dict(rows.prompt[0][0])], add_generation_prompt=True, tokenize=False) != rows.prompt[0][0]["content"]


@pytest.mark.slow
def test_lora_knowledge_sft_records_one_merged_model(source_data, tiny_model_fp32, tmp_path):
    """SFT_LORA_RANK > 0 on the raw-text set, real verl SFT on the CPU: the round's final model is a
    plain HF model (the base's tensor names and dtype, no adapter) in which the linear layers
    moved and nothing else did; the FSDP shards and the unmerged export are pruned."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    os.symlink(source_data / "stage1_sft.parquet", data_dir / "stage1_sft.parquet")
    env = {**os.environ, "PYTHON": sys.executable, "PAST_DEVICE": "cpu", "STAGES": "1", "MODEL": str(tiny_model_fp32),
           "DATA_DIR": str(data_dir), "CKPT_DIR": str(tmp_path / "ck"), "passage_id": "1", "LOG_DIR": str(tmp_path / "logs"),
           "SFT_DATASET_CLASS": "seal_squad.sft_dataset.RawTextSFTDataset", "SFT_LORA_RANK": "4", "SFT_EPOCHS": "2",
           "SFT_LR": "1e-2", "SFT_BATCH_SIZE": "2", "SFT_MICRO_BATCH_SIZE": "1", "SFT_MAX_LENGTH": "128"}
    done = subprocess.run(["bash", str(TRAIN / "sft.sh")], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    final = tmp_path / "ck" / "stage1" / "final"
    assert final.resolve().name == "huggingface_merged"
    base, merged = load_state(tiny_model_fp32), load_state(final)
    assert merged.keys() == base.keys()
    assert {t.dtype for t in merged.values()} == {torch.float32}   # the base's, not the merger's bfloat16
    moved = {name for name in base if not torch.equal(base[name], merged[name])}
    linear = {name for name in base if name.endswith("proj.weight")}
    assert moved == linear, sorted(moved ^ linear)
    assert not list((tmp_path / "ck" / "stage1").rglob("model_world_size_*.pt"))
    assert not list((tmp_path / "ck" / "stage1").rglob("lora_adapter"))


@pytest.mark.parametrize("sft, base, margin, passed", [(0.30, 0.20, 0.05, True), (0.24, 0.20, 0.05, False),
                                                       (0.25, 0.20, 0.05, True), (0.0, 0.0, 0.05, False),
                                                       (0.10, 0.20, 0.0, False)])
def test_gate_decision(sft, base, margin, passed):
    decided, message = gate_decision(sft, base, margin)
    assert decided is passed
    assert ("passed" if passed else "FAILED") in message and f"{100 * sft:.1f}%" in message
    assert passed or "GATE_OVERRIDE=1" in message


def test_macro_accuracy_is_the_mean_of_passage_means():
    assert macro_accuracy([[1, 0, 0], [1, 1, 0, 0]]) == pytest.approx((1 / 3 + 1 / 2) / 2)
    with pytest.raises(ValueError):
        macro_accuracy([])


def write_answers(path, model, accuracy, passages="p.json"):
    path.write_text(json.dumps({"model": model, "passages": passages, "n_questions": 4, "accuracy": accuracy}))
    return path


@pytest.mark.parametrize("sft_accuracy, override, returncode", [(0.5, False, 0), (0.25, False, 3), (0.25, True, 0)])
def test_gate_cli_records_and_stops_unless_overridden(tmp_path, sft_accuracy, override, returncode):
    base, sft = write_answers(tmp_path / "base.json", "base", 0.25), write_answers(tmp_path / "sft.json", "sft", sft_accuracy)
    done = python(GK / "knowledge_gate.py", "decide", "--base", base, "--sft", sft, "--output", tmp_path / "gate.json",
                  *(["--override"] if override else []))
    assert done.returncode == returncode, done.stderr
    gate = json.loads((tmp_path / "gate.json").read_text())
    assert gate["passed"] is (sft_accuracy == 0.5) and gate["overridden"] is override
    assert gate["gain"] == pytest.approx(sft_accuracy - 0.25) and gate["margin"] == 0.05
    if override:
        assert "OVERRIDDEN" in done.stdout and "OVERRIDDEN" in done.stderr
    # Answers to other questions are not compared.
    other = write_answers(tmp_path / "other.json", "sft", 0.5, passages="q.json")
    assert python(GK / "knowledge_gate.py", "decide", "--base", base, "--sft", other, "--output", tmp_path / "g2.json").returncode != 0


def test_the_readme_table_of_source_sft_against_ttt_states_the_defaults_the_code_runs():
    """README_GRPO_DELTA.md compares the source SFT with the target's TTT; each value it states is
    the default of the code that runs it (source_round.sh's SFT settings, seal_squad.ttt.TTTRecipe,
    verl's optimizer config), so a changed default fails here until the README says so."""
    import re

    import yaml
    import verl

    from seal_squad.ttt import TTTRecipe

    readme = (GK / "README_GRPO_DELTA.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in readme.splitlines()
            if line.startswith("| ") and line.count("|") == 4}
    script = (GK / "source_round.sh").read_text()
    sft = {name: re.search(rf"{name}=\$\{{{name}:-([^}}]+)\}}", script).group(1) for name in ("SFT_LR", "SFT_EPOCHS", "SFT_BATCH_SIZE")}
    optim = yaml.safe_load((Path(verl.__file__).parent / "trainer" / "config" / "optim" / "fsdp.yaml").read_text())
    ttt = TTTRecipe()
    assert f"`SFT_LR` {sft['SFT_LR']}" in rows["optimizer"] and f"weight decay {optim['weight_decay']}" in rows["optimizer"]
    assert optim["lr_scheduler_type"] == "constant" and "constant" in rows["optimizer"]
    assert ttt.finetune_lr == 1e-3 and "lr 1e-3 with linear decay" in rows["optimizer"]
    assert f"`SFT_EPOCHS` {sft['SFT_EPOCHS']}, `SFT_BATCH_SIZE` {sft['SFT_BATCH_SIZE']}" in rows["epochs, batch"]
    assert f"{ttt.finetune_epochs} epochs, batch {ttt.batch_size}" in rows["epochs, batch"]
    assert f"LoRA r {ttt.lora_rank}, α {ttt.lora_alpha:g}, on q_proj and v_proj" in rows["what is trained"]
    assert ttt.pads_in_loss and f"padded to {ttt.max_seq_length} tokens with EOS, the pads in the loss" in rows["padding and loss"]
