"""The one place the evaluation loads things and writes them: a passage's eval parquet, the
model (through generation.make_generator: vLLM on a GPU, transformers on a CPU), the prompts
(closed-book from the parquet, or the passage in context truncated to the model's window),
the answers file (resumable, one run at a time) and the result files (atomic writes).

Layout: data/passage{N}/eval.parquet -> an answers JSON -> eval_results/<model tag>/passage{N}/test_results.json
"""

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from prompts import context_solver_prompt
from utils import extract_answer, is_hub_id, write_json_atomic  # noqa: F401 (write_json_atomic: re-exported)

log = logging.getLogger("eval_loogle")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = "data"
DEFAULT_RESULTS_DIR = "eval_results"
RESULTS_FILE = "test_results.json"
ANSWERS_FILE = "answers.json"
BACKENDS = ("hf", "vllm", "openai")
# extra_info["loogle_split"] of an eval row: LooGLE's short- or long-dependency QA.
LOOGLE_SPLITS = ("shortdep", "longdep")

# Path parts that name a checkpoint's place in a run, not the model variant.
_NOT_VARIANT = re.compile(r"^(passage\d+|final|huggingface|hf_model|global_step_\d+)$")


# --- Files -------------------------------------------------------------------------------------


def model_tag_from_path(model_path):
    """The variant name results are filed under: the path inside checkpoints/ without the
    passage and `final` parts (checkpoints/passage3/stage2/final -> stage2,
    checkpoints/inherited/round1/passage3 -> inherited-round1), else the last path part
    (/models/Qwen2.5-7B-Instruct -> Qwen2.5-7B-Instruct)."""
    parts = [p for p in Path(str(model_path).rstrip("/")).parts if p not in ("", "/", ".", "..")]
    if "checkpoints" in parts:
        parts = parts[len(parts) - parts[::-1].index("checkpoints") :]
    else:
        parts = parts[-1:]
    tag = "-".join(p for p in parts if not _NOT_VARIANT.match(p))
    return tag or (parts[-1] if parts else "model")


def results_path(results_dir, model_tag, split):
    return Path(results_dir) / model_tag / split / RESULTS_FILE


def load_answers(path):
    """An answers file written by generate_answers.py, checked; a clear error when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"answers file not found: {path} (write it with python -m eval_loogle.generate_answers)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8") or "null")
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON ({e}); regenerate it with python -m eval_loogle.generate_answers") from None
    if not isinstance(doc, dict) or not doc.get("answers"):
        raise ValueError(f"{path} holds no answers; regenerate it with python -m eval_loogle.generate_answers")
    missing = {"model_tag", "model_path", "split", "data_file", "generation"} - set(doc)
    if missing:
        raise ValueError(f"{path} lacks {sorted(missing)}: not an answers file from eval_loogle.generate_answers")
    return doc


# --- Evaluation questions ----------------------------------------------------------------------


@dataclass
class EvalSet:
    split: str  # the folder results go in: passage{N}, or e.g. gsm8k
    data_file: str
    data_source: str
    passage_id: int | None
    title: str | None
    questions: list  # [{index, question, reference, prompt, loogle_split}], prompt = chat messages


def available_passages(data_dir):
    found = sorted(int(m.group(1)) for p in Path(data_dir).glob("passage*/eval.parquet") if (m := re.fullmatch(r"passage(\d+)", p.parent.name)))
    return found


def load_eval_set(passage_idx=None, data_file=None, data_dir=DEFAULT_DATA_DIR):
    """The questions of passage N (data_dir/passage{N}/eval.parquet) or of any RLHFDataset-schema
    parquet (`data_file`, e.g. GSM8K's test split; its folder name becomes the split name)."""
    import pandas as pd

    if (passage_idx is None) == (data_file is None):
        raise ValueError("give exactly one of --passage_idx N or --data_file FILE.parquet")
    if passage_idx is not None:
        if passage_idx < 0:
            raise ValueError(f"passage index must be >= 0, got {passage_idx}")
        path = Path(data_dir) / f"passage{passage_idx}" / "eval.parquet"
        if not path.is_file():
            have = available_passages(data_dir)
            raise FileNotFoundError(
                f"no eval set for passage {passage_idx}: {path} does not exist "
                f"(passages with an eval set in {data_dir}/: {have or 'none'}). Make it with "
                f"`python -m prepare_data.loogle_to_parquet --input LOOGLE.jsonl --output_dir {data_dir} --passages {passage_idx}`."
            )
        split = f"passage{passage_idx}"
    else:
        path = Path(data_file)
        if not path.is_file():
            raise FileNotFoundError(f"eval data file not found: {path}")
        split = path.parent.name or path.stem
    frame = pd.read_parquet(path)
    missing = {"data_source", "prompt", "reward_model"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}: expected verl's RLHFDataset schema (data_source, prompt, reward_model, extra_info)")
    if frame.empty:
        raise ValueError(f"{path} has no rows: nothing to evaluate")
    questions, titles = [], set()
    for row_no, row in enumerate(frame.to_dict("records")):
        extra = row.get("extra_info") or {}
        prompt = [{"role": m["role"], "content": m["content"]} for m in row["prompt"]]
        question = extra.get("question") or prompt[-1]["content"]
        loogle_split = extra.get("loogle_split")  # None: an eval set made before the field existed
        if loogle_split not in (None, *LOOGLE_SPLITS):
            raise ValueError(f"{path} row {row_no}: extra_info.loogle_split is {loogle_split!r}, expected one of {LOOGLE_SPLITS}")
        questions.append(
            {
                "index": int(extra.get("index", row_no)),
                "question": question,
                "reference": str(row["reward_model"]["ground_truth"]),
                "prompt": prompt,
                "loogle_split": loogle_split,
            }
        )
        if extra.get("title"):
            titles.add(extra["title"])
    return EvalSet(
        split=split,
        data_file=str(path),
        data_source=str(frame["data_source"].iloc[0]),
        passage_id=passage_idx,
        title=titles.pop() if len(titles) == 1 else None,
        questions=questions,
    )


# --- Model ---------------------------------------------------------------------------------------


def default_backend():
    """vllm on a GPU node that has it, else transformers."""
    import importlib.util

    import torch

    return "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "hf"


def check_model_path(model_path, backend):
    """hf/vllm need a local HF model folder (or a hub id `org/name`, which they download); say
    so before anything loads."""
    if backend == "openai":
        return
    path = Path(model_path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{model_path} has no config.json: not a Hugging Face model folder")
        return
    if is_hub_id(model_path):
        return
    raise FileNotFoundError(
        f"model path not found: {model_path} (a local Hugging Face model folder with config.json, "
        "e.g. checkpoints/passage0/stage2/final, or a hub id such as Qwen/Qwen2.5-7B-Instruct)"
    )


def load_generator(model_path, backend, batch_size=8, base_url=None, **vllm_options):
    """A generation.py generator for the model (the only way eval code loads one);
    `vllm_options` go to `vllm.LLM` (e.g. worker_extension_cls for in-place weight updates)."""
    from generation import make_generator

    check_model_path(model_path, backend)
    log.info("loading %s with the %s backend", model_path, backend)
    if backend == "hf":
        return make_generator("hf", model_path, batch_size=batch_size)
    if backend == "vllm":
        return make_generator("vllm", model_path, **vllm_options)
    return make_generator("openai", model_path, base_url=base_url)


def model_context_length(model_path):
    """The model's position limit (max_position_embeddings in its config)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    config = getattr(config, "text_config", None) or config
    for key in ("max_position_embeddings", "max_sequence_length", "seq_length"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    raise ValueError(f"the config of {model_path} names no context length; pass --max_context_tokens")


def context_conversations(eval_set, passage_text, tokenizer, max_prompt_tokens):
    """Each question with the passage in front of it (prompts.context_solver_prompt), the
    passage cut in the middle (head and tail kept, as LooGLE does) so that the rendered chat
    prompt fits `max_prompt_tokens` tokens. Returns (conversations, passage tokens kept)."""
    from generation import render_chat

    def render(context, question):
        return [{"role": "user", "content": context_solver_prompt(context, question)}]

    passage_ids = tokenizer(passage_text, add_special_tokens=False)["input_ids"]
    conversations, kept = [], []
    for q in eval_set.questions:
        budget = max_prompt_tokens - len(render_chat(tokenizer, render("", q["question"])))
        if budget <= 0:
            raise ValueError(f"max prompt length {max_prompt_tokens} leaves no room for the passage (question {q['index']})")
        n = min(len(passage_ids), budget)
        # Decoding and re-encoding a cut can merge tokens differently: shrink until it fits.
        while True:
            if n >= len(passage_ids):
                context = passage_text
            else:
                head = n // 2
                context = tokenizer.decode(passage_ids[:head]) + tokenizer.decode(passage_ids[len(passage_ids) - (n - head) :])
            conversation = render(context, q["question"])
            overflow = len(render_chat(tokenizer, conversation)) - max_prompt_tokens
            if overflow <= 0:
                break
            n -= max(overflow, 1)
        conversations.append(conversation)
        kept.append(min(n, len(passage_ids)))
    return conversations, kept


# --- Generation ---------------------------------------------------------------------------------


def finished_runs(answers_file, header, n_questions, n_runs):
    """Answers of the runs already complete in `answers_file` (runs < n_runs), or [] when there
    is no file; an error when the file was made with another model, data or settings."""
    answers_file = Path(answers_file)
    if not answers_file.exists():
        return []
    previous = load_answers(answers_file)
    keys = ("model_path", "split", "data_file", "sweep")  # sweep: the weights of a λ-sweep point
    same_source = all(previous.get(k) == header.get(k) for k in keys)
    def settings(generation):  # what must match: not the run count, nor what was derived from the model
        return {k: v for k, v in generation.items() if k not in ("n_runs", "passage_tokens_kept")}

    if not same_source or settings(previous["generation"]) != settings(header["generation"]):
        raise ValueError(
            f"{answers_file} holds answers from another model, data file or generation settings; "
            "use another --output_file or delete it to start over"
        )
    per_run = {}
    for answer in previous["answers"]:
        per_run.setdefault(answer["run"], []).append(answer)
    done = [a for run, answers in sorted(per_run.items()) if run < n_runs and len(answers) == n_questions for a in answers]
    if done:
        log.info("%s: runs %s already answered, resuming", answers_file, sorted({a["run"] for a in done}))
    return done


def generate_runs(eval_set, conversations, generator, answers_file, header, done, n_runs, base_seed, sampling, budgets):
    """Answer every question once per run (seed base_seed + run) for the runs not in `done`,
    rewriting the answers file after each run. `header`: model_tag, model_path, generation
    settings...; `sampling`: temperature, top_p; `budgets`: max new tokens per question
    (questions with the same budget are generated together). Returns the answers document."""
    from tqdm import tqdm

    groups = {}
    for i, budget in enumerate(budgets):
        groups.setdefault(budget, []).append(i)
    runs_done = {a["run"] for a in done}
    doc = {**header, "answers": list(done)}
    for run in tqdm([r for r in range(n_runs) if r not in runs_done], desc="runs", unit="run"):
        seed = base_seed + run
        responses = [None] * len(conversations)
        for budget, members in groups.items():
            completions = generator.generate([conversations[i] for i in members], seed=seed, n=1, max_new_tokens=budget, **sampling)
            for i, (response,) in zip(members, completions, strict=True):
                responses[i] = response
        for q, response in zip(eval_set.questions, responses, strict=True):
            doc["answers"].append(
                {
                    "index": q["index"],
                    "run": run,
                    "seed": seed,
                    "question": q["question"],
                    "reference": q["reference"],
                    "response": response,
                    "answer": extract_answer(response),
                }
            )
        doc["answers"].sort(key=lambda a: (a["run"], a["index"]))
        write_json_atomic(answers_file, doc)
    return doc
