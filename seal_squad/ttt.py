"""Test-time training (TTT): one fresh peft LoRA per passage, trained on its sequences with SEAL's
recipe, then saved for vLLM to load.

SEAL's recipe (`TTTRecipe` defaults): LoRA r 32, alpha 64, dropout 0, peft's default target
modules for the architecture (q_proj and v_proj for Qwen2), 10 epochs, lr 1e-3, batch 1, no
gradient accumulation; AdamW (weight decay 0) with a linear decay to 0 and no warmup, gradient
norm clipped at 1.0, the sequences reshuffled every epoch — the HF Trainer defaults SEAL runs.

Tokenisation (SEAL's, it affects results): every sequence is tokenized as plain text, cut at
`max_seq_length` and padded to exactly `max_seq_length` with the pad token (= EOS, as SEAL sets
it), with labels = input ids, so the pad positions are in the loss: the adapter also learns to
predict EOS after the text, hundreds of times per sequence. `pads_in_loss=False` masks them
(labels -100) and pads only to the longest sequence of a batch; its loss is then the plain LM
loss of the text, whatever `max_seq_length` is.

Every adapter starts fresh from `seed` (LoRA init and shuffling), so the same request on the
same model gives the same adapter. The model passed in is left as it was (`train_adapter`
removes the LoRA layers again before returning).
"""

import math
from dataclasses import dataclass

import torch

from generation import raw_prompt_ids

IGNORE_INDEX = -100


@dataclass
class TTTRecipe:
    lora_rank: int = 32
    lora_alpha: int = 64
    lora_dropout: float = 0.0
    finetune_epochs: int = 10
    finetune_lr: float = 1e-3
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_seq_length: int = 2048
    pads_in_loss: bool = True
    end_mask_substring: str = ""  # SEAL's option: no loss up to and including its first occurrence
    seed: int = 0

    def __post_init__(self):
        for name in ("lora_rank", "finetune_epochs", "batch_size", "gradient_accumulation_steps", "max_seq_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("lora_alpha", "finetune_lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        if not isinstance(self.lora_dropout, (int, float)) or not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if not isinstance(self.end_mask_substring, str):
            raise ValueError(f"end_mask_substring must be a string, got {self.end_mask_substring!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")


def prepare_tokenizer(tokenizer):
    """SEAL trains with pad = EOS (for Qwen2.5 base, <|endoftext|>)."""
    tokenizer.pad_token = tokenizer.eos_token or tokenizer.pad_token
    return tokenizer


def tokenize(tokenizer, sequences, recipe):
    """One {input_ids, labels} example per sequence (lists; padding per `recipe.pads_in_loss`)."""
    mask_ids = tokenizer(recipe.end_mask_substring, add_special_tokens=False)["input_ids"] if recipe.end_mask_substring else []
    examples = []
    for text in sequences:
        ids = raw_prompt_ids(tokenizer, text)[: recipe.max_seq_length]
        labels = list(ids)
        if mask_ids:
            m = len(mask_ids)
            for i in range(len(ids) - m + 1):
                if ids[i : i + m] == mask_ids:
                    labels[: i + m] = [IGNORE_INDEX] * (i + m)
                    break
        n_pad = recipe.max_seq_length - len(ids) if recipe.pads_in_loss else 0
        examples.append({
            "input_ids": ids + [tokenizer.pad_token_id] * n_pad,
            "attention_mask": [1] * len(ids) + [0] * n_pad,
            "labels": labels + [tokenizer.pad_token_id] * n_pad,
        })
    return examples


def collate(examples, pad_id, device):
    """Right-pad a batch to its longest example; the added positions are out of the loss."""
    width = max(len(e["input_ids"]) for e in examples)
    batch = {
        "input_ids": [e["input_ids"] + [pad_id] * (width - len(e["input_ids"])) for e in examples],
        "attention_mask": [e["attention_mask"] + [0] * (width - len(e["attention_mask"])) for e in examples],
        "labels": [e["labels"] + [IGNORE_INDEX] * (width - len(e["labels"])) for e in examples],
    }
    return {k: torch.tensor(v, device=device) for k, v in batch.items()}


@torch.no_grad()
def sequence_loss(model, tokenizer, sequences, recipe):
    """Mean LM loss of `model` on the sequences, tokenized as training tokenizes them."""
    model.eval()
    device = next(model.parameters()).device
    losses = [model(**collate([e], tokenizer.pad_token_id, device)).loss.item() for e in tokenize(tokenizer, sequences, recipe)]
    return sum(losses) / len(losses)


def train_adapter(model, tokenizer, sequences, recipe, adapter_dir):
    """Train a fresh LoRA on `sequences`, save it to `adapter_dir` (peft format, what vLLM loads)
    and return {"epoch_losses": [...], "steps": n, "target_modules": [...]}. `model` is returned
    to its state without LoRA layers, also when training fails."""
    from peft import LoraConfig, get_peft_model

    if not sequences or not all(isinstance(s, str) and s for s in sequences):
        raise ValueError("train_sequences must be a non-empty list of non-empty strings")
    device = next(model.parameters()).device
    examples = tokenize(tokenizer, sequences, recipe)
    torch.manual_seed(recipe.seed)  # the LoRA init
    order = torch.Generator().manual_seed(recipe.seed)  # the shuffling
    config = LoraConfig(r=recipe.lora_rank, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    try:
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=recipe.finetune_lr, weight_decay=0.0)
        batches_per_epoch = math.ceil(len(examples) / recipe.batch_size)
        steps_per_epoch = math.ceil(batches_per_epoch / recipe.gradient_accumulation_steps)
        total_steps = recipe.finetune_epochs * steps_per_epoch
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total_steps))
        peft_model.train()
        epoch_losses = []
        for _ in range(recipe.finetune_epochs):
            permutation = torch.randperm(len(examples), generator=order).tolist()
            batches = [permutation[i : i + recipe.batch_size] for i in range(0, len(examples), recipe.batch_size)]
            losses = []
            for b, batch in enumerate(batches):
                loss = peft_model(**collate([examples[i] for i in batch], tokenizer.pad_token_id, device)).loss
                (loss / recipe.gradient_accumulation_steps).backward()
                losses.append(loss.item())
                if (b + 1) % recipe.gradient_accumulation_steps == 0 or b + 1 == len(batches):
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    optimizer.step()
                    schedule.step()
                    optimizer.zero_grad(set_to_none=True)
            epoch_losses.append(sum(losses) / len(losses))
        peft_model.eval()
        peft_model.save_pretrained(str(adapter_dir))
        targets = sorted(peft_model.peft_config["default"].target_modules)
        return {"epoch_losses": epoch_losses, "steps": total_steps, "target_modules": targets}
    finally:
        peft_model.unload()  # the LoRA layers out again: `model` is the plain model
