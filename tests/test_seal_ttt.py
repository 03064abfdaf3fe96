"""seal_squad.ttt: one fresh LoRA per passage with SEAL's recipe, on the tiny float32 model. Sizes
are small (3 epochs, sequences of at most 48 tokens); the recipe's defaults are SEAL's."""

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from seal_squad.ttt import IGNORE_INDEX, TTTRecipe, collate, prepare_tokenizer, sequence_loss, tokenize, train_adapter

SEQUENCES = [
    "Harbor Lighthouse\n1. The lighthouse was built in 1871.",
    "Harbor Lighthouse\n2. Its lamp first burned whale oil.",
    "Harbor Lighthouse\nThe Harbor Lighthouse was built in 1871 on a granite ledge at the mouth of the bay.",
]


def recipe(**overrides):
    return TTTRecipe(**{"finetune_epochs": 3, "max_seq_length": 48, **overrides})


@pytest.fixture(scope="module")
def tokenizer(tiny_model_fp32):
    return prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_model_fp32))


@pytest.fixture(scope="module")
def model(tiny_model_fp32):
    return AutoModelForCausalLM.from_pretrained(tiny_model_fp32, dtype=torch.float32)


def adapter_tensors(path):
    return load_file(path / "adapter_model.safetensors")


def with_adapter(model, path):
    """A separate copy of `model` with the saved adapter applied (the shared model stays plain)."""
    copy = AutoModelForCausalLM.from_pretrained(model.name_or_path, dtype=torch.float32)
    return PeftModel.from_pretrained(copy, str(path)).eval()


def test_recipe_defaults_are_seals():
    r = TTTRecipe()
    assert (r.lora_rank, r.lora_alpha, r.lora_dropout, r.finetune_epochs, r.finetune_lr, r.batch_size,
            r.gradient_accumulation_steps, r.max_seq_length, r.pads_in_loss) == (32, 64, 0.0, 10, 1e-3, 1, 1, 2048, True)
    for bad in ({"lora_rank": 0}, {"finetune_lr": -1}, {"batch_size": 1.5}, {"lora_dropout": 1.0}, {"seed": "x"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TTTRecipe(**bad)


@pytest.mark.slow
@pytest.mark.parametrize("pads_in_loss", [True, False])
def test_training_lowers_the_loss_and_leaves_the_model_plain(model, tokenizer, tmp_path, pads_in_loss):
    r = recipe(pads_in_loss=pads_in_loss)
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    before = sequence_loss(model, tokenizer, SEQUENCES, r)
    trained = train_adapter(model, tokenizer, SEQUENCES, r, tmp_path / "adapter")
    after = sequence_loss(with_adapter(model, tmp_path / "adapter"), tokenizer, SEQUENCES, r)
    assert after < before - 0.3, (before, after)
    assert trained["steps"] == 3 * len(SEQUENCES) and len(trained["epoch_losses"]) == 3
    assert trained["target_modules"] == ["q_proj", "v_proj"]  # peft's default for Qwen2, as in SEAL
    # The model is plain again: same tensors, no LoRA layers (the next request starts fresh).
    assert model.state_dict().keys() == before_state.keys()
    assert all(torch.equal(v, before_state[k]) for k, v in model.state_dict().items())
    assert not any("lora" in name for name, _ in model.named_modules())


@pytest.mark.slow
def test_identical_requests_give_identical_adapters(model, tokenizer, tmp_path):
    train_adapter(model, tokenizer, SEQUENCES, recipe(seed=5), tmp_path / "a")
    train_adapter(model, tokenizer, SEQUENCES, recipe(seed=5), tmp_path / "b")
    train_adapter(model, tokenizer, SEQUENCES, recipe(seed=6), tmp_path / "c")
    a, b, c = (adapter_tensors(tmp_path / x) for x in "abc")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)  # another seed: another init and order


@pytest.mark.slow
def test_pads_in_the_loss_versus_masked(model, tokenizer, tmp_path):
    text = SEQUENCES[0]
    ids = tokenizer(text)["input_ids"]
    # Tokenisation: SEAL pads every sequence to max_seq_length with EOS and trains on the pads.
    padded = tokenize(tokenizer, [text], recipe(pads_in_loss=True))[0]
    assert len(padded["input_ids"]) == 48 and padded["input_ids"][: len(ids)] == ids
    assert padded["labels"] == padded["input_ids"] and set(padded["input_ids"][len(ids):]) == {tokenizer.eos_token_id}
    masked = tokenize(tokenizer, [text], recipe(pads_in_loss=False))[0]
    assert masked["input_ids"] == ids and masked["labels"] == ids
    batch = collate([masked, tokenize(tokenizer, [SEQUENCES[2]], recipe(pads_in_loss=False))[0]], tokenizer.pad_token_id, "cpu")
    assert (batch["labels"][0, len(ids):] == IGNORE_INDEX).all()

    # Losses: masked = the plain LM loss of the text; with pads = the mean over every position,
    # each pad position predicting EOS.
    with torch.no_grad():
        plain = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
        batch = collate([padded], tokenizer.pad_token_id, "cpu")
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[0, :-1]
        by_hand = torch.nn.functional.cross_entropy(logits, batch["input_ids"][0, 1:]).item()
    assert sequence_loss(model, tokenizer, [text], recipe(pads_in_loss=False)) == pytest.approx(plain, rel=1e-6)
    assert sequence_loss(model, tokenizer, [text], recipe(pads_in_loss=True)) == pytest.approx(by_hand, rel=1e-6)

    # Training: masked does not depend on the padding length; with pads it does, and it teaches
    # the model to end the text with EOS.
    for pads in (True, False):
        for length in (48, 64):
            train_adapter(model, tokenizer, SEQUENCES, recipe(pads_in_loss=pads, max_seq_length=length), tmp_path / f"{pads}_{length}")
    same = lambda x, y: all(torch.allclose(x[k], y[k], atol=1e-6) for k in x)  # noqa: E731
    assert same(adapter_tensors(tmp_path / "False_48"), adapter_tensors(tmp_path / "False_64"))
    assert not same(adapter_tensors(tmp_path / "True_48"), adapter_tensors(tmp_path / "True_64"))

    def eos_logprob_after_text(m):
        with torch.no_grad():
            return torch.log_softmax(m(input_ids=torch.tensor([ids])).logits[0, -1], -1)[tokenizer.eos_token_id].item()

    untrained = eos_logprob_after_text(model)
    gain_with_pads = eos_logprob_after_text(with_adapter(model, tmp_path / "True_48")) - untrained
    gain_masked = eos_logprob_after_text(with_adapter(model, tmp_path / "False_48")) - untrained
    assert gain_with_pads > 0.5 and gain_with_pads > gain_masked + 0.5, (gain_with_pads, gain_masked)


def test_end_mask_substring_masks_the_loss_up_to_it(tokenizer):
    text = "Question: where?\nAnswer: the bay"
    example = tokenize(tokenizer, [text], recipe(pads_in_loss=False, end_mask_substring="Answer:"))[0]
    cut = len(tokenizer(text.split("Answer:")[0] + "Answer:")["input_ids"])
    assert example["labels"][:cut] == [IGNORE_INDEX] * cut
    assert example["labels"][cut:] == example["input_ids"][cut:]


def test_bad_sequences_are_refused(model, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="non-empty list of non-empty strings"):
        train_adapter(model, tokenizer, ["ok", ""], recipe(), tmp_path / "x")
    assert not (tmp_path / "x").exists()
