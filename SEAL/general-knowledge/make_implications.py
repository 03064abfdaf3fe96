"""Self-edits ("implications") for SQuAD passages: k raw completions per passage from a base model
(SEAL's make_squad_data.py; renamed here, squad_data.py is the data itself).

    python SEAL/general-knowledge/make_implications.py --input data/squad/squad_val_eval.json \
        --output data/squad/implications_base.json --model Qwen/Qwen2.5-7B --backend vllm
    python SEAL/general-knowledge/make_implications.py ... --backend openai --base_url http://127.0.0.1:8001/v1
    python SEAL/general-knowledge/make_implications.py ... --prompt_file my_implications.txt   # another prompt

SEAL's settings are the defaults: k=5 samples, temperature 1.0, top_p 0.95, 8192 new tokens, no
stop string (a completion runs to EOS), no chat template, and SEAL's prompt: prompts.py's
IMPLICATIONS_TEMPLATES[--prompt] holds SEAL's prompts verbatim; --prompt_file gives another, a
text file with {title} and {context} in it. Output: the passages with `completions` (k strings) and `prompt`, in SEAL's
schema, and OUT.meta (model, temperature, top_p, max_tokens, n, k, ...). Base-model output
carries junk (trailing source lists and the like); it is kept, as in SEAL.

Passages are generated in chunks of --chunk_passages with seed --seed + the chunk's first
position, and each finished chunk is kept in OUT.partial.jsonl: a killed run, rerun with the same
settings, resumes after the last finished chunk and writes the same file an uninterrupted run
writes (given a deterministic backend).
"""

import argparse
import hashlib
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from tqdm import tqdm  # noqa: E402

from prepare_data.passages import add_backend_args, make_generator_from_args  # noqa: E402
from prompts import DEFAULT_IMPLICATIONS_PROMPT, IMPLICATIONS_FIELDS, IMPLICATIONS_TEMPLATES, implications_prompt, load_prompt_template  # noqa: E402
from seal_squad.data import load_passages  # noqa: E402
from seal_squad.partial import PartialFile  # noqa: E402
from utils import write_json_atomic  # noqa: E402

log = logging.getLogger("make_implications")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="passages JSON in SEAL's schema (squad_data.py)")
    p.add_argument("--output", required=True, help="implications JSON to write; OUT.meta is written beside it")
    p.add_argument("--model", required=True, help="the generator: a local HF dir or hub id (hf, vllm) or a served model name (openai)")
    p.add_argument("--backend", default="hf", choices=["hf", "vllm", "openai"], help="generation backend (default hf)")
    p.add_argument("--k", type=int, default=5, help="completions per passage (default 5)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--max_new_tokens", type=int, default=8192)
    p.add_argument("--prompt", default=DEFAULT_IMPLICATIONS_PROMPT, choices=list(IMPLICATIONS_TEMPLATES),
                   help=f"which of SEAL's prompts (prompts.IMPLICATIONS_TEMPLATES; default {DEFAULT_IMPLICATIONS_PROMPT})")
    p.add_argument("--prompt_file", help="a text file with another prompt instead, {title} and {context} in it")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of the first chunk (chunk at position i: seed + i)")
    p.add_argument("--chunk_passages", type=int, default=64, help="passages per generation call and per resume point (default 64)")
    add_backend_args(p, concurrency=64)
    p.add_argument("--overwrite", action="store_true", help="replace OUT, or start over instead of resuming")
    args = p.parse_args(argv)
    if min(args.k, args.max_new_tokens, args.chunk_passages) < 1:
        p.error("--k, --max_new_tokens and --chunk_passages must be >= 1")
    return p, args


def main(argv=None):
    parser, args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if os.path.exists(args.output) and not args.overwrite:
        parser.error(f"{args.output} exists; pass --overwrite to replace it")
    try:
        passages = load_passages(args.input)
        template = load_prompt_template(args.prompt_file, IMPLICATIONS_FIELDS) if args.prompt_file else IMPLICATIONS_TEMPLATES[args.prompt]
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    # SEAL's .meta keys first; what decides the output is also the resume header.
    settings = {
        "model": args.model, "dataset_in": str(args.input), "dataset_out": str(args.output),
        "temperature": args.temperature, "top_p": args.top_p, "max_tokens": args.max_new_tokens,
        "n": len(passages), "k": args.k,
        "backend": args.backend, "prompt": args.prompt_file or args.prompt,
        "prompt_sha256": hashlib.sha256(template.encode("utf-8")).hexdigest(),
        "seed": args.seed, "chunk_passages": args.chunk_passages,
    }
    try:
        partial = PartialFile(args.output, settings, args.overwrite)
    except ValueError as e:
        parser.error(str(e))
    # Only whole chunks count: a resumed run redoes a chunk with the very prompts and seed it had.
    done = len(partial.records)
    if done < len(passages):
        done -= done % args.chunk_passages
    partial.keep(done)
    if done:
        log.info("resuming %s: %d of %d passages done", partial.path, done, len(passages))
    generator = None
    chunks = range(done, len(passages), args.chunk_passages)
    for start in tqdm(chunks, desc="implications", unit="chunk", disable=not chunks):
        generator = generator or make_generator_from_args(args)
        chunk = passages[start : start + args.chunk_passages]
        prompts = [implications_prompt(p["title"], p["context"], template) for p in chunk]
        completions = generator.complete(prompts, args.max_new_tokens, args.temperature, args.top_p,
                                         seed=args.seed + start, n=args.k)
        partial.append([{**p, "completions": c, "prompt": prompt} for p, c, prompt in zip(chunk, completions, prompts)])
    write_json_atomic(str(args.output) + ".meta", {**settings, "timestamp": datetime.now(timezone.utc).isoformat()})
    write_json_atomic(args.output, partial.records)
    partial.remove()
    print(f"{len(partial.records)} passages x {args.k} completions -> {args.output} (+ .meta)")


if __name__ == "__main__":
    main()
