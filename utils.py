"""Small helpers shared by several entry points.

Imports nothing heavy at module level: reward_function.py (which runs inside verl's workers)
imports `graded_response` from here.
"""

import ast
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

# Chat-template tails a decoded rollout may still carry (ChatML, Llama-3, generic EOS).
_TEMPLATE_TAIL = re.compile(r"(<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>|</s>|<\|end\|>).*\Z", re.DOTALL)
# <think> blocks of reasoning models; an unclosed one is a reply cut while thinking (judge.py too).
THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
UNCLOSED_THINK = re.compile(r"<think>.*\Z", re.DOTALL | re.IGNORECASE)
_ANSWER_PREFIX = re.compile(r"^\s*(?:\*\*)?(?:final\s+)?answer(?:\*\*)?\s*[:：]\s*", re.IGNORECASE)


def extract_answer(text):
    """The answer part of a model response: drops a chat-template tail, `<think>` blocks and an
    `Answer:` prefix (the last `Answer:` line wins when the model reasons first)."""
    text = _TEMPLATE_TAIL.sub("", text or "")
    text = THINK_BLOCK.sub("", text)
    text = UNCLOSED_THINK.sub("", text)
    matches = list(re.finditer(r"(?im)^\s*(?:\*\*)?(?:final\s+)?answer(?:\*\*)?\s*[:：]", text))
    if matches:
        text = text[matches[-1].start():]
    return _ANSWER_PREFIX.sub("", text).strip()


def graded_response(response, grader):
    """What the judge grades of a model response under `grader`: for squad the whole output,
    stripped, as SEAL grades it, in the evaluation and in the GRPO reward alike (a model that
    writes "Answer: X" after other text is graded on all of it); otherwise extract_answer's part."""
    return (response or "").strip() if grader == "squad" else extract_answer(response)


# --- Files and names ---------------------------------------------------------------------------


def write_json_atomic(path, obj):
    """Write `obj` as JSON to `path` through a temp file in the same folder, then rename: a reader
    (or a rerun after a crash) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_HUB_ID = re.compile(r"(?!.*(?:--|\.\.))[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
# First path parts that name this project's own outputs: `checkpoints/x` is a missing local
# folder, not a model on the hub.
_LOCAL_ROOTS = ("checkpoints", "data", "eval_results")


def is_hub_id(name):
    """True when `name` has the form of a Hugging Face hub id (`org/name`, e.g.
    Qwen/Qwen2.5-7B-Instruct). Callers check for a local folder first."""
    name = str(name)
    return bool(_HUB_ID.fullmatch(name)) and name.split("/")[0] not in _LOCAL_ROOTS


# --- Long-text chunking -----------------------------------------------------------------------

_SENTENCE_END = re.compile(r"""[.!?]["')\]]*\s*\Z|\n\s*\Z""")


@dataclass(frozen=True)
class Chunk:
    """A span of a text: `text == full_text[start_char:end_char]`, tokens [start_token, end_token)."""

    index: int
    text: str
    start_char: int
    end_char: int
    start_token: int
    end_token: int


def token_starts(text, tokenizer):
    """Character offset at which each token of `text` starts (the tokenizer's own offsets)."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    starts = [start for start, _ in encoding["offset_mapping"]]
    if starts:
        starts[0] = 0  # leading characters a tokenizer trims still belong to the first chunk
    return starts


def _is_cut(starts, i):
    # A character split over several byte-level tokens is never cut: those tokens share an offset.
    return i == len(starts) or starts[i] > starts[i - 1]


def check_chunk_sizes(chunk_tokens, overlap_tokens):
    """The chunk sizes chunk_text accepts, checked before any work starts."""
    if chunk_tokens < 1 or overlap_tokens < 0 or 2 * overlap_tokens >= chunk_tokens:
        raise ValueError(
            "need --chunk_tokens >= 1 and 0 <= --overlap_tokens < chunk_tokens/2, "
            f"got chunk_tokens={chunk_tokens}, overlap_tokens={overlap_tokens}"
        )


def chunk_text(text, tokenizer, chunk_tokens, overlap_tokens=0):
    """Split `text` into chunks of at most `chunk_tokens` tokens that cover it in order, each
    starting `overlap_tokens` tokens before the previous one ends. Cuts fall on token
    boundaries; a chunk ends at a sentence end when one lies in its second half."""
    check_chunk_sizes(chunk_tokens, overlap_tokens)
    starts = token_starts(text, tokenizer)
    n = len(starts)
    if n == 0:
        return []

    def char_at(i):
        return len(text) if i == n else starts[i]

    chunks, start = [], 0
    while True:
        end = min(start + chunk_tokens, n)
        if end < n:
            shortest = start + max(overlap_tokens + 1, chunk_tokens // 2)
            candidates = [e for e in range(end, shortest - 1, -1) if _is_cut(starts, e)]
            sentence_ends = [e for e in candidates if _SENTENCE_END.search(text[char_at(start) : char_at(e)])]
            end = (sentence_ends or candidates or [end])[0]
        chunks.append(Chunk(len(chunks), text[char_at(start) : char_at(end)], char_at(start), char_at(end), start, end))
        if end == n:
            return chunks
        previous, start = start, end - overlap_tokens
        while start > previous and not _is_cut(starts, start):
            start -= 1
        if start == previous:  # a character split over tokens sits there: share a few tokens less
            start = end - overlap_tokens
            while start < end and not _is_cut(starts, start):
                start += 1


def split_continuation(text, tokenizer, prefix_fraction=0.5):
    """(prefix, continuation) with `prefix + continuation == text`, cut at a token boundary,
    at a sentence end near `prefix_fraction` of the tokens when there is one."""
    starts = token_starts(text, tokenizer)
    n = len(starts)
    if n < 2:
        raise ValueError(f"cannot split a text of {n} token(s) into prefix and continuation")
    target = min(max(1, round(n * prefix_fraction)), n - 1)
    lo, hi = max(1, round(n * prefix_fraction * 0.5)), min(n - 1, round(n * (1 + prefix_fraction) / 2))
    cuts = sorted((i for i in range(lo, hi + 1) if _is_cut(starts, i)), key=lambda i: abs(i - target))
    sentence_cuts = [i for i in cuts if _SENTENCE_END.search(text[: starts[i]])]
    cut = starts[(sentence_cuts or cuts or [target])[0]]
    return text[:cut], text[cut:]


# --- Parsing model outputs --------------------------------------------------------------------

_CODE_FENCE = re.compile(r"^\s*```[\w-]*\s*$", re.MULTILINE)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_QUESTION_KEYS = ("question", "q", "query")
_ANSWER_KEYS = ("answer", "a", "ans")
_LIST_KEYS = ("qa_pairs", "pairs", "questions", "qas", "qa", "items", "data")
# "Q:", "Q1.", "1. Q:", "**Question 2:**", "Question:" ... and the same for answers.
_QA_MARKER = re.compile(
    r"^\s*(?:[-*•]\s*)?(?:\d+\s*[.)]\s*)?(?:\*\*|__)?(?P<kind>q(?:uestion)?|a(?:nswer)?)\s*\d*\s*(?:\*\*|__)?\s*[:.)]\s*(?:\*\*|__)?\s*",
    re.IGNORECASE,
)
_INLINE_ANSWER = re.compile(r"\s(?:\*\*|__)?a(?:nswer)?\s*(?:\*\*|__)?\s*:\s*(?:\*\*|__)?\s*", re.IGNORECASE)


@dataclass
class QAParse:
    pairs: list  # [{"question": str, "answer": str}]
    invalid: int  # items (or whole outputs) that could not be used


def strip_model_text(text):
    """A model output without chat-template tails or <think> blocks."""
    text = _TEMPLATE_TAIL.sub("", text or "")
    text = THINK_BLOCK.sub("", text)
    return UNCLOSED_THINK.sub("", text).strip()


def _field(item, keys):
    lowered = {str(k).strip().lower(): v for k, v in item.items()}
    for key in keys:
        value = lowered.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _qa_from_items(items):
    pairs, invalid = [], 0
    for item in items:
        if isinstance(item, dict):
            question, answer = _field(item, _QUESTION_KEYS), _field(item, _ANSWER_KEYS)
            if question and answer:
                pairs.append({"question": question, "answer": answer})
                continue
        invalid += 1
    return pairs, invalid


def _load_literal(text):
    """JSON, JSON with trailing commas, or a Python literal; None when none of them parses."""
    for candidate in (text, _TRAILING_COMMA.sub(r"\1", text)):
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def _balanced_spans(text, open_char, close_char):
    """Top-level (open ... close) spans, string-aware; an unclosed last span is left out."""
    spans, depth, start, in_string, quote, escaped = [], 0, None, False, "", False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                in_string = False
        elif ch in "\"'" and depth > 0 and not (ch == "'" and text[i - 1 : i].isalnum()):
            in_string, quote = True, ch
        elif ch == open_char:
            if depth == 0:
                start = i
            depth += 1
        elif ch == close_char and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append(text[start : i + 1])
    return spans


def _items_from_structure(value):
    if isinstance(value, dict):
        for key, inner in value.items():
            if str(key).lower() in _LIST_KEYS and isinstance(inner, list):
                return inner
        return [value]
    if isinstance(value, list):
        return value
    return None


def _parse_json_qa(text):
    for span in _balanced_spans(text, "[", "]"):
        items = _items_from_structure(_load_literal(span))
        if items is not None and any(isinstance(item, dict) for item in items):
            return _qa_from_items(items)
    # A truncated list or loose objects: take every complete {...} on its own.
    objects = []
    for span in _balanced_spans(text, "{", "}"):
        value = _load_literal(span)
        inner = _items_from_structure(value) if isinstance(value, dict) else None
        objects.extend(inner if inner is not None else [value])
    if objects:
        return _qa_from_items(objects)
    return None


def _parse_marked_qa(text):
    pairs, invalid, question, answer, current = [], 0, None, None, None

    def close():
        nonlocal invalid
        if question is None:
            return
        q, a = " ".join(question).strip(), " ".join(answer or []).strip()
        if q and a:
            pairs.append({"question": q, "answer": a})
        else:
            invalid += 1

    for line in text.splitlines():
        marker = _QA_MARKER.match(line)
        if marker and marker.group("kind").lower().startswith("q"):
            close()
            rest = line[marker.end() :]
            inline = _INLINE_ANSWER.search(rest)
            question, answer, current = [rest[: inline.start()] if inline else rest], None, "q"
            if inline:
                answer, current = [rest[inline.end() :]], "a"
        elif marker and question is not None:
            answer, current = [line[marker.end() :]], "a"
        elif line.strip() and current == "q":
            question.append(line.strip())
        elif line.strip() and current == "a":
            answer.append(line.strip())
    close()
    return (pairs, invalid) if pairs or invalid else None


def parse_qa_pairs(text):
    """Question-answer pairs from a proposer's output, tolerating what models really write:
    a JSON list (in code fences, after prose, with trailing commas, single-quoted, wrapped in
    {"qa_pairs": [...]}, or cut off mid-item) or numbered "Q:/A:" lines. Items without both a
    question and an answer are counted in `invalid`; an output with nothing usable counts 1."""
    text = _CODE_FENCE.sub("", strip_model_text(text))
    for parse in (_parse_json_qa, _parse_marked_qa):
        result = parse(text)
        if result is not None and (result[0] or result[1]):
            return QAParse(*result)
    return QAParse([], 1)


_SUMMARY_PREFIX = re.compile(r"^\s*(?:\*\*)?(?:summary|here is (?:a|the) summary[^:\n]*)(?:\*\*)?\s*:\s*(?:\*\*)?\s*", re.IGNORECASE)


def parse_summary(text):
    """The summary in a model output (no template tail, <think> block or "Summary:" label);
    None when nothing is left."""
    text = _SUMMARY_PREFIX.sub("", _CODE_FENCE.sub("", strip_model_text(text))).strip()
    return text or None


_LIST_MARKER = re.compile(r"^\s*(?:[-*•]\s*|\d+\s*[.):]\s*|(?:\*\*|__)?q(?:uestion)?\s*\d*\s*(?:\*\*|__)?\s*[:.)]\s*(?:\*\*|__)?)+", re.IGNORECASE)


def parse_questions(text, limit=None):
    """Questions from a one-per-line reply: list markers ("1.", "-", "Q2:") and blank lines
    dropped, at most `limit`. A preamble line ending in ":" ("Here are 3 questions:") is not one."""
    questions = []
    for line in _CODE_FENCE.sub("", strip_model_text(text)).splitlines():
        question = _LIST_MARKER.sub("", line).strip().strip("*_").strip()
        if question and not question.endswith(":") and question not in questions:
            questions.append(question)
    return questions[:limit] if limit else questions


def normalize_question(text):
    """Lower-case words only: two questions that differ in case, spacing or punctuation match."""
    return " ".join(re.findall(r"\w+", text.lower()))


# --- API key -----------------------------------------------------------------------------------

API_KEY_FILE = Path(__file__).resolve().parent / "openai_api_key.txt"  # gitignored


def read_openai_key():
    """env OPENAI_API_KEY, else the first line of the gitignored openai_api_key.txt in the repo
    root, else None. The judge server and the openai generation backend read it here; never logged."""
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if not key and API_KEY_FILE.is_file():
        key = API_KEY_FILE.read_text(encoding="utf-8").strip()
    return key or None


# The OpenAI key goes to OpenAI's own API only: a base URL pointing anywhere else (a local vLLM, a
# proxy, a mistyped host) gets the key named for it (api_key=, env VLLM_API_KEY) or none.
OPENAI_API_HOST = "api.openai.com"


def api_key_for(base_url, api_key=None):
    """The key to send to the OpenAI-compatible server at `base_url`: `api_key` if given, else the
    OpenAI key (read_openai_key) when the URL is https on api.openai.com, else env VLLM_API_KEY
    (the key a `vllm serve --api-key` expects), else None."""
    from urllib.parse import urlsplit

    if api_key:
        return api_key
    url = urlsplit(base_url)
    if url.scheme == "https" and url.hostname == OPENAI_API_HOST:
        return read_openai_key()
    return os.environ.get("VLLM_API_KEY", "").strip() or None


# API-key shapes (OpenAI's sk-..., bearer headers echoed back) and the keys this process holds.
_SECRET_PATTERN = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}|(?<=Bearer )[^\s\"',;]+", re.IGNORECASE)


def redact(text, *secrets):
    """`text` with the OpenAI and vLLM keys, the given `secrets` and anything shaped like an API key
    or a bearer token replaced by [redacted]: for backend error text on its way to logs, replies
    and result files (a server may echo the key it was sent)."""
    text = str(text)
    known = {read_openai_key(), os.environ.get("VLLM_API_KEY", "").strip(), *secrets}
    for secret in sorted((s for s in known if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return _SECRET_PATTERN.sub("[redacted]", text)
