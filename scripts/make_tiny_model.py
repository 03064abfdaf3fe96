"""Build a tiny Qwen2-style causal LM, locally and deterministically, for tests and the CPU demo.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on the spot with `tokenizers`
(ChatML special tokens and a chat template that renders identically turn by turn, as verl's
MultiTurnSFTDataset requires), and the model is a randomly initialised Qwen2 of ~0.5-1M
parameters with head_dim 64 (vLLM's CPU attention rejects smaller heads).

    python scripts/make_tiny_model.py checkpoints/tiny-qwen2                 # untied, one file
    python scripts/make_tiny_model.py OUT --tied                             # tied embeddings
    python scripts/make_tiny_model.py OUT --max_shard_size 300KB             # sharded + index
    python scripts/make_tiny_model.py OUT --legacy_bin                       # pytorch_model.bin

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


def build_tokenizer(corpus_paths=None, vocab_size=2048):
    """Train a byte-level BPE tokenizer with ChatML tokens; returns a PreTrainedTokenizerFast."""
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
    tokenizer.train_from_iterator(corpus_texts(corpus_paths), trainer=trainer)
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
):
    """Write a complete HF model dir (config, weights, generation config, tokenizer) to out_dir.

    The dir is written under a temporary name and renamed, so a half-built fixture never exists.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    if tokenizer is None:
        tokenizer = build_tokenizer(corpus_paths)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        tie_word_embeddings=tied,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        **TINY_CONFIG,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(getattr(torch, dtype))
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
    )
    print(f"tiny model written to {out_dir}")


if __name__ == "__main__":
    main()
