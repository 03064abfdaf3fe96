"""Build a tiny Qwen2-style causal LM, locally and deterministically, for tests and the CPU demo.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on the spot with `tokenizers`
(ChatML special tokens and a chat template that renders identically turn by turn, as verl's
MultiTurnSFTDataset requires), and the model is a randomly initialised Qwen2 of ~0.5-1M
parameters with head_dim 64 (vLLM's CPU attention rejects smaller heads).

    python scripts/make_tiny_model.py checkpoints/tiny-qwen2                 # untied, one file
    python scripts/make_tiny_model.py OUT --tied                             # tied embeddings
    python scripts/make_tiny_model.py OUT --max_shard_size 300KB             # sharded + index
    python scripts/make_tiny_model.py OUT --legacy_bin                       # pytorch_model.bin
    python scripts/make_tiny_model.py OUT --corpus W/pretrain.jsonl W/passages.jsonl \
        --pretrain_corpus W/pretrain.jsonl                                   # pretrained on a world

--pretrain_corpus (LooGLE-format rows, e.g. prepare_data/world.py's pretrain.jsonl) trains the
model on the spot, on the CPU, before it is saved: each paragraph of every `input` as plain text,
and every QA pair as a chat turn, the closed-book solver prompt (prompts.solver_prompt, the
prompt the evaluation and GRPO use) answered by A, the loss on the answer. Such a model is
deeper (PRETRAINED_CONFIG) and its tokenizer also learns the prompts' fixed wording.

Tests import `build_tokenizer` / `build_model` from here (pytest puts scripts/ on sys.path).
"""

import argparse
import ast
import json
import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The tokenizer is trained on the shipped demo corpus only, so every machine builds the same model.
DEFAULT_CORPUS = REPO_ROOT / "demo" / "corpus.jsonl"

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# ChatML without an implicit system prompt: rendering each turn alone and concatenating gives
# exactly the rendering of the whole conversation, which verl's MultiTurnSFTDataset asserts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# head_dim = hidden_size / num_attention_heads = 64
TINY_CONFIG = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
)

# A model that must learn facts in pretraining needs more depth than the random test fixtures.
PRETRAINED_CONFIG = dict(TINY_CONFIG, num_hidden_layers=4, intermediate_size=512)


def corpus_texts(paths):
    """Yield the documents, questions and answers of LooGLE-format jsonl files."""
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                row = json.loads(line)
                yield row.get("title", "")
                yield row["input"]
                qa_pairs = row.get("qa_pairs") or "[]"
                if isinstance(qa_pairs, str):
                    qa_pairs = ast.literal_eval(qa_pairs)
                for qa in qa_pairs:
                    yield f"{qa.get('Q', '')} {qa.get('A', '')}"


def build_tokenizer(corpus_paths=None, vocab_size=2048, extra_texts=()):
    """Train a byte-level BPE tokenizer with ChatML tokens (on the corpus and `extra_texts`);
    returns a PreTrainedTokenizerFast."""
    import itertools

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus_paths = [DEFAULT_CORPUS] if corpus_paths is None else corpus_paths
    missing = [str(p) for p in corpus_paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"no corpus to train the tiny tokenizer on: {', '.join(missing)} not found "
                                "(pass --corpus FILE.jsonl in LooGLE format)")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(itertools.chain(corpus_texts(corpus_paths), extra_texts), trainer=trainer)
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=TINY_CONFIG["max_position_embeddings"],
    )
    hf_tokenizer.chat_template = CHAT_TEMPLATE
    return hf_tokenizer


def build_model(
    out_dir,
    *,
    tied=False,
    seed=0,
    dtype="bfloat16",
    max_shard_size=None,
    legacy_bin=False,
    tokenizer=None,
    corpus_paths=None,
    pretrain_corpus=None,
    pretrain_epochs=50,
):
    """Write a complete HF model dir (config, weights, generation config, tokenizer) to out_dir,
    pretrained on `pretrain_corpus` (LooGLE-format jsonl files) when it is given.

    The dir is written under a temporary name and renamed, so a half-built fixture never exists.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    if pretrain_corpus:
        _check_corpus(pretrain_corpus)
    if tokenizer is None:
        tokenizer = build_tokenizer(corpus_paths, extra_texts=_prompt_texts() if pretrain_corpus else ())
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        tie_word_embeddings=tied,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        **(PRETRAINED_CONFIG if pretrain_corpus else TINY_CONFIG),
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    if pretrain_corpus:
        pretrain(model, tokenizer, pretrain_corpus, pretrain_epochs, seed)
    model = model.to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(
        eos_token_id=[config.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tokenizer.pad_token_id,
    )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    save_kwargs = {}
    if max_shard_size is not None:
        save_kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(tmp_dir, **save_kwargs)
    if legacy_bin:
        _convert_to_legacy_bin(tmp_dir)
    tokenizer.save_pretrained(tmp_dir)
    os.replace(tmp_dir, out_dir)
    return out_dir


def _check_corpus(paths):
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"pretraining corpus not found: {', '.join(missing)} (write one with "
                                "`python -m prepare_data.world --output_dir DIR`, or pass LooGLE-format jsonl files)")


def _prompt_texts():
    """The fixed wording of every prompt template, so the tokenizer learns it as whole words."""
    import prompts

    return [v for k, v in vars(prompts).items() if k.endswith("_TEMPLATE") and isinstance(v, str)]


def pretraining_sequences(tokenizer, corpus_paths):
    """[(token ids, loss mask)]: every paragraph of every row's `input` (loss on all of it), and
    every QA pair as the solver prompt in the chat template answered by A (loss on the answer)."""
    from prepare_data.passages import load_passages
    from prompts import solver_prompt

    sequences, eos = [], tokenizer.eos_token_id
    for path in corpus_paths:
        for passage in load_passages(path):
            for paragraph in passage.text.split("\n"):
                if paragraph.strip():
                    ids = tokenizer(paragraph.strip())["input_ids"] + [eos]
                    sequences.append((ids, [1] * len(ids)))
            for qa in passage.qa_pairs:
                messages = [{"role": "user", "content": solver_prompt(passage.title, qa["Q"])}]
                prompt = tokenizer(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))["input_ids"]
                answer = tokenizer(qa["A"])["input_ids"] + [eos]
                sequences.append((prompt + answer, [0] * len(prompt) + [1] * len(answer)))
    if not sequences:
        raise ValueError(f"the pretraining corpus {', '.join(map(str, corpus_paths))} has no text")
    return sequences


def pretrain(model, tokenizer, corpus_paths, epochs, seed, lr=2e-3, batch_size=64):
    """Next-token training on the corpus, in float32 on the CPU (AdamW, warm-up then linear decay)."""
    import math
    import random

    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    sequences = pretraining_sequences(tokenizer, corpus_paths)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(sequences) / batch_size)
    total = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / 20) * (0.1 + 0.9 * (1 - k / total)))
    pad = tokenizer.pad_token_id
    model.train()
    bar = tqdm(total=total, desc=f"pretraining on {len(sequences)} sequences", unit="step", mininterval=2)
    for _ in range(epochs):
        order = list(range(len(sequences)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            batch = [sequences[i] for i in order[start:start + batch_size]]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad)
            loss_mask = torch.zeros(len(batch), width)
            for row, (ids, mask) in enumerate(batch):
                input_ids[row, :len(ids)] = torch.tensor(ids)
                loss_mask[row, :len(mask)] = torch.tensor(mask, dtype=torch.float)
            attention_mask = torch.zeros_like(input_ids)
            for row, (ids, _) in enumerate(batch):
                attention_mask[row, :len(ids)] = 1
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
            token_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1), reduction="none")
            weights = loss_mask[:, 1:].reshape(-1)
            loss = (token_loss * weights).sum() / weights.sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()


def _convert_to_legacy_bin(model_dir):
    """Replace the safetensors weights by one `pytorch_model.bin` (the pre-safetensors format)."""
    import torch
    from safetensors.torch import load_file

    state_dict = {}
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        state_dict.update(load_file(shard))
        shard.unlink()
    index = Path(model_dir) / "model.safetensors.index.json"
    if index.exists():
        index.unlink()
    torch.save(state_dict, Path(model_dir) / "pytorch_model.bin")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="model dir to write (must not exist unless --overwrite)")
    parser.add_argument("--tied", action="store_true", help="tie lm_head to the input embeddings")
    parser.add_argument("--seed", type=int, default=0, help="weight-init seed (default 0)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--max_shard_size", default=None, help="e.g. 300KB: shard the weights with an index")
    parser.add_argument("--legacy_bin", action="store_true", help="write pytorch_model.bin instead of safetensors")
    parser.add_argument("--corpus", nargs="+", default=None, help="LooGLE-format jsonl files to train the tokenizer on")
    parser.add_argument("--pretrain_corpus", nargs="+", default=None,
                        help="LooGLE-format jsonl files to pretrain on (see above; default: no training)")
    parser.add_argument("--pretrain_epochs", type=int, default=50,
                        help="epochs over the pretraining corpus (default 50: a world of 120 people is learnt by then)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing out_dir")
    args = parser.parse_args()

    out_dir = Path(args.out_dir)
    if out_dir.exists() and not args.overwrite:
        parser.error(f"{out_dir} exists; pass --overwrite to replace it")
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    build_model(
        out_dir,
        tied=args.tied,
        seed=args.seed,
        dtype=args.dtype,
        max_shard_size=args.max_shard_size,
        legacy_bin=args.legacy_bin,
        corpus_paths=args.corpus,
        pretrain_corpus=args.pretrain_corpus,
        pretrain_epochs=args.pretrain_epochs,
    )
    print(f"tiny model written to {out_dir}")


if __name__ == "__main__":
    main()
