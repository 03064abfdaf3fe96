"""What every prepare_data entry point shares: LooGLE passages (validated, by passage id),
passage-id ranges, the per-passage output folder, the row builders (SFT `messages` rows and verl
RLHFDataset rows), atomic parquet writes, the manifest that makes a rerun skip finished
passages, the generator options and per-passage loop of the generating entry points, and the
loader and command line of the other datasets' converters.

passage_id N is the 0-based index of the N-th non-blank row of the LooGLE jsonl.
Per passage, under DATA_DIR/passage{N}/: eval.parquet, stage1_sft.parquet, stage2_sft.parquet,
grpo.parquet, and a manifest_<stage>.json beside each, written last.
"""

import argparse
import ast
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from utils import check_chunk_sizes, is_hub_id, write_json_atomic

log = logging.getLogger("prepare_data")

# Column order of the parquet files (verl reads `messages`, or the RLHFDataset columns).
SFT_COLUMNS = ["messages", "task", "passage_id", "chunk_index"]
RL_COLUMNS = ["data_source", "prompt", "ability", "reward_model", "extra_info"]

# Where loogle-clean/clean_loogle.py writes LooGLE's short-dependency QA, cleaned.
DEFAULT_LOOGLE_FILE = "data/loogle/shortdep_qa.jsonl"


@dataclass
class Passage:
    passage_id: int
    title: str
    text: str
    qa_pairs: list = field(default_factory=list)  # [{Q, A, S[, type]}]: the LooGLE test QA
    source: str = ""  # "FILE line L", for error messages and manifests


def parse_passage_ids(spec):
    """'0-4' -> [0, 1, 2, 3, 4]; '0,2,5-7' -> [0, 2, 5, 6, 7]; '3' -> [3]."""
    ids = []
    for part in str(spec).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"bad passage range {spec!r}: use N, N-M or a comma list such as 0,2,5-7")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if last < first:
            raise ValueError(f"bad passage range {part!r} in {spec!r}: the end is before the start")
        ids.extend(range(first, last + 1))
    return sorted(set(ids))


def parse_loogle_row(row, where):
    """(title, text, qa_pairs) of one LooGLE row, validated; a ValueError naming `where` otherwise."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object with input, title, qa_pairs; got {type(row).__name__}")
    for key in ("input", "title"):
        if not isinstance(row.get(key), str):
            raise ValueError(f"{where}: missing or non-string field {key!r} (LooGLE rows have input, title, qa_pairs)")
    if not row["input"].strip():
        raise ValueError(f"{where}: the passage text ('input') is empty")
    qa_pairs = row.get("qa_pairs")
    if qa_pairs is None:
        raise ValueError(f"{where}: missing field 'qa_pairs'")
    if isinstance(qa_pairs, str):
        try:
            qa_pairs = ast.literal_eval(qa_pairs) if qa_pairs.strip() not in ("", "none") else []
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"{where}: 'qa_pairs' is not a Python literal list of {{Q, A, S}} ({e})") from None
    if not isinstance(qa_pairs, list):
        raise ValueError(f"{where}: 'qa_pairs' must be a list of {{Q, A, S}}, got {type(qa_pairs).__name__}")
    for j, qa in enumerate(qa_pairs):
        if not (isinstance(qa, dict) and isinstance(qa.get("Q"), str) and isinstance(qa.get("A"), str)):
            raise ValueError(f"{where}: qa_pairs[{j}] needs string fields Q and A, got {qa!r:.200}")
    return row["title"], row["input"], qa_pairs


def load_passages(path, passage_ids=None):
    """Passages of a LooGLE jsonl, validated. `passage_ids=None` loads all of them.

    Only the requested rows are parsed, so a broken row elsewhere does not stop the work;
    an id beyond the file is an error naming the file and its size.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"LooGLE file not found: {path} (write data/loogle/*.jsonl with `python loogle-clean/clean_loogle.py`, "
            "or pass --input FILE.jsonl)"
        )
    wanted = None if passage_ids is None else set(passage_ids)
    passages, n_rows = {}, 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            passage_id, n_rows = n_rows, n_rows + 1
            if wanted is not None and passage_id not in wanted:
                continue
            where = f"{path} line {line_no} (passage {passage_id})"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e})") from None
            title, text, qa_pairs = parse_loogle_row(row, where)
            passages[passage_id] = Passage(passage_id, title, text, qa_pairs, source=f"{path} line {line_no}")
    missing = sorted((wanted or set()) - set(passages))
    if missing:
        raise ValueError(f"passage id(s) {missing} out of range: {path} has {n_rows} passages (ids 0..{n_rows - 1})")
    return [passages[i] for i in sorted(passages)]


def passage_dir(data_dir, passage_id):
    return Path(data_dir) / f"passage{passage_id}"


def sft_row(task, passage, chunk, prompt, response):
    """One SFT row: a user prompt and the assistant turn to learn (verl MultiTurnSFTDataset)."""
    return {
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
        "task": task,
        "passage_id": passage.passage_id,
        "chunk_index": chunk.index,
    }


def rl_row(data_source, ability, prompt, ground_truth, **extra_info):
    """One row of verl's RLHFDataset schema: the user prompt as a one-turn chat, the reference the
    reward compares with, and `extra_info` (index, question, ... for the reward and the logs)."""
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": prompt}],
        "ability": ability,
        "reward_model": {"style": "model", "ground_truth": ground_truth},
        "extra_info": extra_info,
    }


def write_parquet(rows, path, columns):
    """Write rows (dicts with `columns`) to `path` atomically: a temp file in the same folder,
    then rename, so an interrupted run never leaves a file that looks complete."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        pd.DataFrame(rows, columns=columns).to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def manifest_path(out_dir, stage):
    return Path(out_dir) / f"manifest_{stage}.json"


def is_complete(out_dir, stage, output_name, settings):
    """True when `out_dir` holds a finished `output_name` made with exactly `settings`."""
    import pyarrow.parquet as pq

    manifest_file, output = manifest_path(out_dir, stage), Path(out_dir) / output_name
    if not (manifest_file.is_file() and output.is_file()):
        return False
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        same_settings = manifest.get("settings") == json.loads(json.dumps(settings))
        return same_settings and pq.ParquetFile(output).metadata.num_rows == manifest.get("rows")
    except (json.JSONDecodeError, OSError, ValueError):
        return False


def start_stage(out_dir, stage):
    """Drop an old manifest before rewriting outputs, so a crash cannot leave a stale one that
    vouches for new, unfinished files."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    manifest_path(out_dir, stage).unlink(missing_ok=True)


def finish_stage(out_dir, stage, passage, output_name, columns, rows, counts, skipped, settings, seconds):
    """Write the outputs' parquet, then the manifest (last: its presence means complete)."""
    if not rows:
        log.warning("passage %d: no usable rows for %s (skipped: %s); see its manifest", passage.passage_id, output_name, skipped)
    write_parquet(rows, Path(out_dir) / output_name, columns)
    manifest = {
        "stage": stage,
        "passage_id": passage.passage_id,
        "title": passage.title,
        "source": passage.source,
        "output": output_name,
        "rows": len(rows),
        "counts": counts,
        "skipped": skipped,
        "settings": settings,
        "seconds": round(seconds, 2),
    }
    write_json_atomic(manifest_path(out_dir, stage), manifest)
    return manifest


# --- Command-line options shared by the entry points that generate -----------------------------


def generation_cli(argv, doc, max_new_tokens, options, check):
    """The command line of a generating entry point: the shared options below, plus `options`
    ((flag, argparse kwargs) pairs); `check(args)` raises ValueError for bad values. Returns
    (args, passages); bad input is a usage error before anything is loaded or written."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_generation_args(parser, max_new_tokens)
    for flag, kwargs in options:
        parser.add_argument(flag, **kwargs)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        check_generation_args(args)
        check(args)
        passages = load_passages(args.input, parse_passage_ids(args.passages))
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    return args, passages


def add_generation_args(parser, max_new_tokens):
    """Input/output, chunking and generator options (sizes small enough for the CPU demo)."""
    parser.add_argument("--input", required=True, help=f"LooGLE jsonl (input, title, qa_pairs), e.g. {DEFAULT_LOOGLE_FILE} or demo/corpus.jsonl")
    parser.add_argument("--passages", required=True, help="passage ids: N, N-M or a comma list such as 0,2,5-7")
    parser.add_argument("--output_dir", default="data", help="root of the per-passage folders (default: data)")
    parser.add_argument("--model", required=True, help="generator: a local HF model dir (hf, vllm) or a served model name (openai)")
    parser.add_argument("--backend", default="hf", choices=["hf", "vllm", "openai"], help="generation backend (default: hf)")
    parser.add_argument("--tokenizer", help="HF tokenizer dir used to chunk the passage (default: --model)")
    parser.add_argument("--chunk_tokens", type=int, default=512, help="tokens per chunk (default: 512)")
    parser.add_argument("--overlap_tokens", type=int, default=64, help="tokens shared by consecutive chunks (default: 64)")
    parser.add_argument("--max_chunks", type=int, default=0, help="use only the first N chunks of each passage; 0 = all")
    parser.add_argument("--max_new_tokens", type=int, default=max_new_tokens, help=f"generation budget (default: {max_new_tokens})")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); >0 samples, seeded")
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed; a rerun with the same seed reproduces the data")
    add_backend_args(parser, concurrency=16)
    parser.add_argument("--overwrite", action="store_true", help="redo passages even when their outputs are complete")


def check_generation_args(args):
    check_chunk_sizes(args.chunk_tokens, args.overlap_tokens)
    if args.max_chunks < 0 or args.max_new_tokens < 1:
        raise ValueError("--max_chunks must be >= 0 and --max_new_tokens >= 1")
    if args.backend == "openai" and not args.tokenizer and not Path(args.model).is_dir():
        raise ValueError(f"--backend openai serves {args.model!r} remotely: pass --tokenizer DIR (a local HF tokenizer) for chunking")
    if args.backend != "openai" and not Path(args.model).is_dir() and not is_hub_id(args.model):
        raise ValueError(f"--model {args.model!r} is neither a local model directory nor a hub id such as Qwen/Qwen2.5-7B-Instruct")


def load_tokenizer(args):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(args.tokenizer or args.model)


def add_backend_args(parser, concurrency):
    """The per-backend options that make_generator_from_args reads."""
    parser.add_argument("--batch_size", type=int, default=8, help="hf backend: prompts per forward batch")
    parser.add_argument("--base_url", help="openai backend: OpenAI-compatible URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--concurrency", type=int, default=concurrency, help=f"openai backend: requests in flight (default: {concurrency})")
    parser.add_argument("--tensor_parallel_size", type=int, default=1, help="vllm backend: GPUs per model")
    parser.add_argument("--max_model_len", type=int, help="vllm backend: context length to reserve")


def make_generator_from_args(args):
    from generation import make_generator

    if args.backend == "hf":
        options = {"batch_size": args.batch_size}
    elif args.backend == "vllm":
        options = {"tensor_parallel_size": args.tensor_parallel_size, "seed": args.seed}
        if args.max_model_len:
            options["max_model_len"] = args.max_model_len
    else:
        options = {"base_url": args.base_url, "concurrency": args.concurrency}
    return make_generator(args.backend, args.model, **options)


def generation_settings(args, passage, extra):
    """What determines a passage's generated data; a manifest with other settings is redone."""
    return {
        "backend": args.backend,
        "model": str(args.model),
        "tokenizer": str(args.tokenizer or args.model),
        "chunk_tokens": args.chunk_tokens,
        "overlap_tokens": args.overlap_tokens,
        "max_chunks": args.max_chunks,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
        "text_sha256": hashlib.sha256(passage.text.encode("utf-8")).hexdigest(),
        **extra,
    }


def generate_per_prompt(generator, args, prompts, n=1):
    """`n` completions for each user prompt, with the sampling settings of `args`."""
    conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
    return generator.generate(conversations, args.max_new_tokens, args.temperature, args.top_p, args.seed, n)


def templates_sha256(*templates):
    """Fingerprint of the prompt templates a stage uses: editing one invalidates old outputs."""
    return hashlib.sha256("\n\0".join(templates).encode("utf-8")).hexdigest()


def run_per_passage(args, passages, stage, output_name, columns, extra_settings, build_rows):
    """The loop every generating entry point runs: for each requested passage, skip it when
    its output is complete with the same settings, else chunk it, call
    `build_rows(passage, chunks, n_chunks, tokenizer, get_generator) -> (rows, counts, skipped)`
    (chunks: the ones to use, n_chunks: how many the passage has) and write the parquet,
    then the manifest. The generator (a `generation` object) is loaded only if a passage needs it."""
    from tqdm import tqdm

    from utils import chunk_text

    tokenizer = load_tokenizer(args)
    generator = None

    def get_generator():
        nonlocal generator
        if generator is None:
            log.info("loading generator %s (%s backend)", args.model, args.backend)
            generator = make_generator_from_args(args)
        return generator

    manifests = []
    for passage in tqdm(passages, desc=stage, unit="passage"):
        out_dir = passage_dir(args.output_dir, passage.passage_id)
        settings = generation_settings(args, passage, extra_settings)
        if not args.overwrite and is_complete(out_dir, stage, output_name, settings):
            log.info("passage %d: %s/%s is complete, skipping", passage.passage_id, out_dir, output_name)
            manifests.append(json.loads(manifest_path(out_dir, stage).read_text(encoding="utf-8")))
            continue
        log.info("passage %d (%s): generating %s", passage.passage_id, passage.title, output_name)
        start = time.time()
        start_stage(out_dir, stage)
        chunks = chunk_text(passage.text, tokenizer, args.chunk_tokens, args.overlap_tokens)
        used = chunks[: args.max_chunks] if args.max_chunks else chunks
        rows, counts, skipped = build_rows(passage, used, len(chunks), tokenizer, get_generator)
        counts = {"chunks": len(used), **counts}
        manifest = finish_stage(out_dir, stage, passage, output_name, columns, rows, counts, skipped, settings, time.time() - start)
        log.info("passage %d: %d rows %s, skipped %s (%.1f s)", passage.passage_id, len(rows), counts, skipped, manifest["seconds"])
        manifests.append(manifest)
    return manifests


# --- Other datasets (SQuAD, NarrativeQA, GSM8K) ---------------------------------------------------


def load_records(path, hub_dataset, hub_config, split):
    """Rows of a local .jsonl / .json / .parquet file, or of a hub dataset split when `path` is
    None (online only). A .json file may hold a list of rows or SQuAD's nested {"data": ...}."""
    if path is None:
        from datasets import load_dataset

        return list(load_dataset(hub_dataset, hub_config, split=split))
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    if path.suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path} line {line_no}: not valid JSON ({e})") from None
        return rows
    if path.suffix == ".json":
        text = path.read_text(encoding="utf-8")
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            try:  # LooGLE's own .json files hold one object per line
                return [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError:
                raise ValueError(f"{path}: not valid JSON, nor one JSON object per line ({e})") from None
    raise ValueError(f"{path}: expected a .jsonl, .json or .parquet file")


def convert_dataset_main(argv, doc, name, hub_dataset, hub_config, convert, options=()):
    """The command line every dataset converter shares: rows of --input (or of the hub split) ->
    `convert(records, source, **options) -> RLHFDataset rows` -> --output, indexed; bad input is
    a usage error before anything is written. `options`: (flag, argparse kwargs) pairs whose
    values go to `convert` by name."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="local file (.jsonl/.json/.parquet); omit to download from the hub")
    parser.add_argument("--split", default="train", help="hub split (default: train)")
    parser.add_argument("--output", required=True, help="the parquet to write (verl RLHFDataset schema)")
    parser.add_argument("--max_rows", type=int, default=0, help="keep only the first N rows; 0 = all")
    for flag, kwargs in options:
        parser.add_argument(flag, **kwargs)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        records = load_records(args.input, hub_dataset, hub_config, args.split)
        values = {flag.lstrip("-"): getattr(args, flag.lstrip("-")) for flag, _ in options}
        rows = convert(records, args.input or f"{hub_dataset}:{args.split}", **values)
        rows = rows[: args.max_rows] if args.max_rows else rows
        if not rows:
            raise ValueError(f"no {name} rows to write (check --input / --split)")
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    except KeyError as e:
        parser.error(f"KeyError: {e}")
    for index, row in enumerate(rows):
        row["extra_info"]["index"] = index
    write_parquet(rows, Path(args.output), RL_COLUMNS)
    log.info("%d %s rows -> %s", len(rows), name, args.output)
