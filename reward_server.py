"""PaST judge server: decides whether a response answers a question the way the reference does.

GRPO calls it for every rollout (through reward_function.py) and the evaluations use it for
accuracy, so it is async end to end, bounds its backend calls, judges identical items once
(LRU cache + de-duplication of identical in-flight items) and retries a flaky backend.

    python reward_server.py --backend openai --judge_model gpt-4.1-mini
    python reward_server.py --backend vllm --base_url http://127.0.0.1:8000/v1 --judge_model MODEL
    python reward_server.py --backend lexical                  # offline tests only, see below
    python reward_server.py --backend exact_match              # one-word answers (the synthetic world)

Backends:
  openai   OpenAI chat completions with a judge model; key from OPENAI_API_KEY or a gitignored
           openai_api_key.txt in the repo root (never logged), sent to https://api.openai.com only:
           with another --base_url the key is VLLM_API_KEY's.
  vllm     any OpenAI-compatible server (`vllm serve`, `transformers serve`) at --base_url;
           sends VLLM_API_KEY as bearer token if that variable is set.
  lexical  offline, no model: SQuAD-style token F1 between the normalised reference and response
           (lower-case, no punctuation, no articles); score = F1, verdict = exact match or
           F1 >= 0.5. A cheap proxy for tests and the CPU quickstart, NOT a stand-in for an LLM
           judge: it rewards word overlap, not meaning. Used only when chosen by name.
  exact_match  offline, no model: the normalised response equals the normalised reference
           (score and verdict 1 or 0). The right grader where every answer is one exact word (the
           synthetic world of prepare_data/world.py); wrong for free-form answers. Only by name.
Without --backend: vllm if --base_url is given, else openai if a key is found; with neither
the server does not start (it says how to configure a judge).

Graders (a request's "grader"; prompts in prompts.py, verdict rules in judge.py): "loogle"
(default) and "squad" (SEAL's yes/no grader for the SQuAD setting). The cache keeps them apart.

The verdict budget --max_tokens (default 2048) is what the judge may generate, thinking
included: a reasoning judge (e.g. Qwen3 behind vLLM) thinks before its verdict, and a reply
cut inside its think block is no verdict. A plain judge stops after one word either way. The
per-call --timeout (default 180 s) leaves time to use the whole budget.

API (OpenAPI page at /docs):
  GET  /health    no auth: backend, judge model, graders, verdict budget
  POST /judge     {"grader": "loogle" | "squad" (optional), "items": [{"question", "reference", "response"}, ...]}
                  -> {"results": [{"score", "verdict", "cached", "parse_failed", "failure"}, ...]} same order
  GET  /metrics   counters (parse_failure_share among them) and latency percentiles
An item gets no verdict (score 0, parse_failed true, `failure` says why, not cached) when the
judge's reply is not a clear yes/no or was cut at --max_tokens, when the backend refuses that
one item (HTTP 400/413/422, e.g. a prompt beyond the judge's context), or when one of its
fields is over --max_chars: it is logged, and the other items are judged. An empty response is
wrong without a backend call.
Errors: 401 missing or wrong bearer token (when a token is set), 413 more than --max_items
items or a body over --max_request_mb (answered as soon as the Content-Length or the bytes
received are over, and after at most --max_items + 1 parsed objects), 422 malformed request (not
JSON, NaN/Infinity, nested too deep, wrong fields) or unknown grader, listing at most 20 problems
and never the input, 502 the backend refused the server itself (HTTP 401/403/404: key,
permission, model name or URL; 20 items in a row refused, which is the configuration, not the
items; or a reply that is not a chat completion with text content), 503 the backend is
unreachable or overloaded after retries (retry later; judged items are cached, so a retry only
pays for the rest). Backend error text is passed on with keys and bearer tokens redacted.
The cache keeps a 32-byte hash per item, so its memory is bounded by --cache_size entries.

A bearer token (every route but /health) comes from --auth_token_file, else the file env
JUDGE_TOKEN_FILE names, else env JUDGE_AUTH_TOKEN. A non-loopback --host needs one: the
server refuses to start without it, and with one under 16 characters; a token file that others
may read is warned about.

Importing this module starts nothing.
"""

import argparse
import asyncio
import collections
import hashlib
import json
import logging
import random
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from judge import (
    DEFAULT_GRADER, DEFAULT_MAX_ITEMS, GRADERS, LEXICAL_THRESHOLD, JudgeError, check_server_token, exact_match, lexical_judge,
    parse_verdict, read_auth_token, refuse_open_bind, retry_after_seconds,
)
from prompts import judge_messages
from utils import API_KEY_FILE, OPENAI_API_HOST, UNCLOSED_THINK, api_key_for, read_openai_key, redact

logger = logging.getLogger("reward_server")

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_JUDGE_MODEL = "gpt-4.1-mini"
DEFAULT_MAX_TOKENS = 2048
DEFAULT_MAX_REQUEST_MB = 64  # 1024 items of 20 KB each, three times over
MB = 1 << 20
MAX_ERRORS_SHOWN = 20  # a 422 lists this many problems (a million bad items must not give a million lines)
MAX_ERROR_CHARS = 300  # characters of one problem's message
DEFAULT_TIMEOUT_S = 180.0  # time for a reasoning judge to use its whole budget at ~12 tokens/s under load
BACKENDS = ("openai", "vllm", "lexical", "exact_match")
OFFLINE_BACKENDS = ("lexical", "exact_match")  # no model: rules on the answer's words, only when named
# Backend answers that are the server's own fault (key, permission, model or URL): fatal.
CONFIG_STATUS = frozenset({401, 402, 403, 404, 405})
# Backend answers that mean "busy, try later": retried.
RETRY_STATUS = frozenset({408, 409, 425, 429})
# This many items refused in a row (no success between) is the configuration, not the items.
REJECTIONS_IN_A_ROW_FATAL = 20

NO_JUDGE_CONFIGURED = (
    "no judge configured. For an LLM judge either set OPENAI_API_KEY (or write the key to "
    f"{API_KEY_FILE}, gitignored) and pass --backend openai [--judge_model gpt-4.1-mini], or serve a "
    "judge model (vllm serve MODEL) and pass --backend vllm --base_url http://HOST:8000/v1 --judge_model MODEL. "
    "Only for offline tests, choose the word-overlap judge by name: --backend lexical (it is not an LLM judge), or --backend exact_match for one-word answers."
)

# --- Settings ------------------------------------------------------------------------------------


@dataclass
class JudgeSettings:
    backend: str  # openai | vllm | lexical | exact_match
    base_url: str | None = None
    judge_model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_concurrency: int = 64
    timeout: float = DEFAULT_TIMEOUT_S
    max_retries: int = 4
    retry_delay: float = 0.5
    cache_size: int = 200_000
    max_items: int = DEFAULT_MAX_ITEMS
    max_chars: int = 32_000
    max_request_mb: float = DEFAULT_MAX_REQUEST_MB
    auth_token: str | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: choose {', '.join(BACKENDS)}")
        if self.backend == "openai":
            self.base_url = self.base_url or OPENAI_BASE_URL
            self.judge_model = self.judge_model or DEFAULT_OPENAI_JUDGE_MODEL
            if not self.api_key:
                raise ValueError(
                    f"backend openai needs an API key: set OPENAI_API_KEY or write it to {API_KEY_FILE} "
                    f"(gitignored; it is sent to {OPENAI_API_HOST} only: for another --base_url set VLLM_API_KEY "
                    "to that server's key), or use --backend vllm with a served judge model"
                )
        if self.backend == "vllm" and not (self.base_url and self.judge_model):
            raise ValueError(
                "backend vllm needs --base_url (e.g. http://127.0.0.1:8000/v1) and --judge_model "
                "(the model name the server serves)"
            )
        for name in ("max_tokens", "max_concurrency", "cache_size", "max_items", "max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.max_retries < 0 or self.retry_delay < 0 or self.timeout <= 0 or not self.max_request_mb > 0:
            raise ValueError("--max_retries and --retry_delay must be >= 0, --timeout and --max_request_mb > 0")


# --- Metrics -------------------------------------------------------------------------------------


class Metrics:
    """Counters and recent latencies (the last 10,000 requests / backend calls)."""

    COUNTERS = (
        "requests", "items", "cache_hits", "deduplicated", "judged", "backend_calls", "backend_retries",
        "parse_failures", "truncated_replies", "rejected_items", "failed_items", "rejected_requests", "error_responses",
    )

    def __init__(self):
        self.started = time.time()
        self.counts = dict.fromkeys(self.COUNTERS, 0)
        self.request_latency = collections.deque(maxlen=10_000)
        self.backend_latency = collections.deque(maxlen=10_000)

    def add(self, name, n=1):
        self.counts[name] += n

    @staticmethod
    def _percentiles(samples):
        if not samples:
            return {"count": 0}
        ordered = sorted(samples)
        pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 6)  # noqa: E731
        return {"count": len(ordered), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": round(ordered[-1], 6)}

    def snapshot(self):
        judged = self.counts["judged"]
        return {
            **self.counts,
            # items without a verdict among those judged (not cached): unparsed, cut, or refused
            "parse_failure_share": self.counts["parse_failures"] / judged if judged else 0.0,
            "uptime_s": round(time.time() - self.started, 3),
            "request_latency_s": self._percentiles(self.request_latency),
            "backend_latency_s": self._percentiles(self.backend_latency),
        }


# --- Backends ------------------------------------------------------------------------------------


class BackendUnavailable(Exception):
    """The backend kept failing with retryable errors (connection, timeout, 429, 5xx)."""


class BackendRejected(Exception):
    """The backend refused the server itself (key, permission, model, URL, or every item): fatal."""


class ItemRejected(Exception):
    """The backend refused this one item (e.g. a prompt beyond its context): no verdict for it."""


def no_verdict(failure):
    return {"score": 0.0, "verdict": False, "parse_failed": True, "failure": failure}


class ChatJudge:
    """Judge through an OpenAI-compatible /chat/completions endpoint, temperature 0."""

    def __init__(self, settings, metrics):
        self.settings = settings
        self.metrics = metrics
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        # aiohttp rather than httpx: at 64 concurrent calls httpx's pool measured 6-8x slower here.
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {},
            timeout=aiohttp.ClientTimeout(total=settings.timeout),
            connector=aiohttp.TCPConnector(limit=settings.max_concurrency),
        )
        self.semaphore = asyncio.Semaphore(settings.max_concurrency)
        self.rejections_in_a_row = 0

    async def aclose(self):
        await self.session.close()

    async def judge(self, grader, question, reference, response):
        payload = {
            "model": self.settings.judge_model,
            "messages": judge_messages(question, reference, response, grader),
            "temperature": 0.0,
            "max_tokens": self.settings.max_tokens,
        }
        try:
            reply, finish_reason = await self._complete(payload)
        except ItemRejected as e:
            self.metrics.add("rejected_items")
            logger.warning("no verdict for an item: %s", e)
            return no_verdict(str(e))
        verdict = parse_verdict(reply, grader)
        if verdict is None:
            # Not a verdict: counted and scored 0 rather than guessed; not cached, so a later call may do better.
            failure = self._why_no_verdict(reply, finish_reason)
            logger.warning("no verdict in the judge's reply (%s): %r", failure, reply[:200])
            return no_verdict(failure)
        return {"score": float(verdict), "verdict": verdict, "parse_failed": False, "failure": None}

    def _why_no_verdict(self, reply, finish_reason):
        if finish_reason == "length":
            self.metrics.add("truncated_replies")
            where = "inside its think block" if UNCLOSED_THINK.search(reply) else "before a verdict"
            return f"reply cut at --max_tokens {self.settings.max_tokens} {where}: raise --max_tokens"
        if UNCLOSED_THINK.search(reply):
            return "the reply's think block is not closed"
        return "the reply is not a yes/no verdict"

    async def _complete(self, payload):
        """(content, finish_reason) of one completion, retrying what a retry can fix."""
        s = self.settings
        last_error = None
        for attempt in range(s.max_retries + 1):
            retry_after = 0.0
            try:
                async with self.semaphore:
                    self.metrics.add("backend_calls")
                    start = time.perf_counter()
                    async with self.session.post(self.url, json=payload) as reply:
                        status, text = reply.status, await reply.text()
                        retry_after = retry_after_seconds(reply.headers.get("retry-after"))
                    self.metrics.backend_latency.append(time.perf_counter() - start)
                if status == 200:
                    content = self._content(text)
                    self.rejections_in_a_row = 0
                    return content
                detail = f"HTTP {status} from {s.base_url}: {redact(text, s.api_key)[:300]}"
                if status in CONFIG_STATUS:
                    raise BackendRejected(f"{detail} (check the key, --judge_model and --base_url)")
                if status < 500 and status not in RETRY_STATUS:
                    self.rejections_in_a_row += 1
                    if self.rejections_in_a_row >= REJECTIONS_IN_A_ROW_FATAL:
                        raise BackendRejected(
                            f"the backend refused {self.rejections_in_a_row} items in a row (last: {detail}): that is "
                            "the configuration (model, --max_tokens against its context length, ...), not the items"
                        )
                    raise ItemRejected(f"the backend refused the item: {detail}")
                last_error = detail
            except asyncio.TimeoutError:
                last_error = f"timeout after {s.timeout:g}s calling {s.base_url}"
            except aiohttp.ClientError as e:
                last_error = f"cannot reach {s.base_url}: {type(e).__name__}: {e}"
            if attempt < s.max_retries:
                self.metrics.add("backend_retries")
                backoff = s.retry_delay * 2**attempt * (0.5 + random.random())
                await asyncio.sleep(min(30.0, max(backoff, retry_after)))
        raise BackendUnavailable(f"judge backend failed {s.max_retries + 1} attempts; last error: {last_error}")

    def _content(self, text):
        try:
            choice = json.loads(text)["choices"][0]
            content = choice["message"]["content"] or ""
            if not isinstance(content, str):
                raise TypeError(f"its message content is a {type(content).__name__}, not text")
            return content, choice.get("finish_reason")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError) as e:
            raise BackendRejected(f"{self.settings.base_url} answered 200 but not a chat completion "
                                  f"({redact(e, self.settings.api_key)[:100]}): {redact(text, self.settings.api_key)[:300]}")


class LexicalJudge:
    async def judge(self, grader, question, reference, response):
        return {**lexical_judge(reference, response), "parse_failed": False, "failure": None}

    async def aclose(self):
        pass


class ExactMatchJudge(LexicalJudge):
    async def judge(self, grader, question, reference, response):
        verdict = exact_match(reference, response)
        return {"score": float(verdict), "verdict": verdict, "parse_failed": False, "failure": None}


# --- Cache + de-duplication ----------------------------------------------------------------------


def cache_key(grader, question, reference, response):
    """32 bytes per item, whatever its size: the cache's memory is bounded by --cache_size entries,
    not by what clients send (an item is up to 3 x --max_chars characters)."""
    return hashlib.sha256(json.dumps([grader, question, reference, response]).encode()).digest()


class JudgeService:
    """Judges items through the backend once per distinct (grader, question, reference, response),
    cached by its cache_key."""

    def __init__(self, settings, metrics):
        self.settings = settings
        self.metrics = metrics
        offline = {"lexical": LexicalJudge, "exact_match": ExactMatchJudge}
        self.backend = offline[settings.backend]() if settings.backend in offline else ChatJudge(settings, metrics)
        self.cache = collections.OrderedDict()
        self.in_flight = {}

    async def judge_items(self, grader, items):
        """One result per item, same order. Raises BackendUnavailable / BackendRejected if any
        item could not be judged (the others are cached by then)."""
        results = [None] * len(items)
        waiting = []  # (index, task, is_new)
        for i, item in enumerate(items):
            too_long = oversized_field(item, self.settings.max_chars)
            if too_long:  # one over-long rollout must not fail the others (nor a GRPO run)
                results[i] = {**no_verdict(too_long), "cached": False}
                for name in ("judged", "parse_failures", "rejected_items"):
                    self.metrics.add(name)
                logger.warning("no verdict for an item: %s", too_long)
                continue
            fields = (grader, item.question, item.reference, item.response.strip())
            key = cache_key(*fields)
            hit = self.cache.get(key)
            if hit is not None:
                self.cache.move_to_end(key)
                self.metrics.add("cache_hits")
                results[i] = {**hit, "cached": True}
                continue
            task = self.in_flight.get(key)
            is_new = task is None
            if is_new:
                task = asyncio.ensure_future(self._judge_new(key, *fields))
                self.in_flight[key] = task
                task.add_done_callback(lambda t, key=key: self._forget(key, t))
            else:
                self.metrics.add("deduplicated")
            waiting.append((i, task, is_new))
        # shield: a client that disconnects must not cancel a judgement other requests share.
        outcomes = await asyncio.gather(*(asyncio.shield(t) for _, t, _ in waiting), return_exceptions=True)
        failures = []
        for (i, _, is_new), outcome in zip(waiting, outcomes):
            if isinstance(outcome, BaseException):
                failures.append(outcome)
            else:
                results[i] = {**outcome, "cached": not is_new}
        if failures:
            self.metrics.add("failed_items", len(failures))
            rejected = [f for f in failures if isinstance(f, BackendRejected)]
            raise (rejected or failures)[0]
        return results

    async def _judge_new(self, key, grader, question, reference, response):
        if not response:
            result = {"score": 0.0, "verdict": False, "parse_failed": False, "failure": None}  # empty: wrong, no call
        else:
            result = await self.backend.judge(grader, question, reference, response)
        self.metrics.add("judged")
        if result["parse_failed"]:
            self.metrics.add("parse_failures")
        else:
            self.cache[key] = result
            if len(self.cache) > self.settings.cache_size:
                self.cache.popitem(last=False)
        return result

    def _forget(self, key, task):
        self.in_flight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here so asyncio does not warn about it


# --- HTTP app ------------------------------------------------------------------------------------


class JudgeItem(BaseModel):
    question: str = Field(description="the question asked")
    reference: str = Field(description="the gold answer")
    response: str = Field(description="the answer to judge (already extracted from the rollout)")


class JudgeRequest(BaseModel):
    grader: str = Field(default=DEFAULT_GRADER, description=f"the grader: {', '.join(GRADERS)}")
    items: list[JudgeItem] = Field(min_length=1, description="items to judge; results keep this order")

    @field_validator("grader")
    @classmethod
    def known_grader(cls, grader):
        if grader not in GRADERS:
            raise ValueError(f"unknown grader {grader[:60]!r}: known graders are {', '.join(GRADERS)}")
        return grader


class JudgeResult(BaseModel):
    score: float = Field(ge=0.0, le=1.0, description="1/0 for LLM judges and exact_match; token F1 for lexical")
    verdict: bool = Field(description="the judge says the response is correct")
    cached: bool = Field(description="answered from the cache or by an identical in-flight item")
    parse_failed: bool = Field(description="no verdict for this item (score 0, not cached); `failure` says why")
    failure: str | None = Field(description="why there is no verdict: unparsed or cut reply, item refused by the backend")


class JudgeResponse(BaseModel):
    results: list[JudgeResult]


def json_safe(text, limit=MAX_ERROR_CHARS):
    """`text` cut to `limit` characters, lone surrogates escaped: always encodable as JSON."""
    return str(text)[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def invalid_request(problems):
    """The 422 reply for a list of pydantic-style problems: type, loc and msg of the first
    MAX_ERRORS_SHOWN, never the input (it may be megabytes, NaN or not encodable)."""
    detail = [{"type": json_safe(p.get("type", "")), "loc": [x if isinstance(x, int) else json_safe(x, 80) for x in p.get("loc", ())][:8],
               "msg": json_safe(p.get("msg", ""))} for p in problems[:MAX_ERRORS_SHOWN]]
    if len(problems) > MAX_ERRORS_SHOWN:
        detail.append({"type": "more", "loc": [], "msg": f"and {len(problems) - MAX_ERRORS_SHOWN} more problems"})
    return JSONResponse({"detail": detail}, status_code=422)


def too_large(detail):
    return JSONResponse({"detail": detail}, status_code=413)


class _TooManyObjects(Exception):
    pass


def body_problem(body, max_items):
    """None, or the reply to a /judge body that is not JSON (nesting too deep, NaN or Infinity
    included) or holds more than max_items items. Parsing stops at the object after the last one
    allowed, so a million items cost what max_items do."""
    objects = 0

    def count(obj):
        nonlocal objects
        objects += 1
        if objects > max_items + 1:  # the items, then the request object itself
            raise _TooManyObjects
        return obj

    def no_constant(name):
        raise ValueError(f"{name} is not a JSON number")

    try:
        request = json.loads(body, object_hook=count, parse_constant=no_constant)
    except _TooManyObjects:
        return too_large(f"more than {max_items} items in one request; the limit is {max_items} (--max_items): split the request")
    except RecursionError:
        return invalid_request([{"type": "json_invalid", "loc": ["body"], "msg": "the body nests deeper than a judge request"}])
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity
        return invalid_request([{"type": "json_invalid", "loc": ["body"], "msg": f"the body is not JSON: {e}"}])
    items = request.get("items") if isinstance(request, dict) else None
    if isinstance(items, list) and len(items) > max_items:  # items that are not objects
        return too_large(f"{len(items)} items in one request; the limit is {max_items} (--max_items): split the request")
    return None


class RequestLimits:
    """ASGI middleware for POST /judge: reads the body up to --max_request_mb (413 as soon as the
    Content-Length or the bytes received so far are over) and checks it with body_problem before
    FastAPI parses it, so a hostile body costs at most that many bytes and --max_items objects."""

    def __init__(self, app, settings, metrics):
        self.app = app
        self.max_bytes = int(settings.max_request_mb * MB)
        self.settings = settings
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/judge" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        over = (f"the request body is over {self.settings.max_request_mb:g} MB (--max_request_mb): "
                f"send fewer or shorter items per request")
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(too_large(over), scope, receive, send)
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await self._refuse(too_large(over), scope, receive, send)
            more = message.get("more_body", False)
        problem = body_problem(body, self.settings.max_items)
        if problem is not None:
            return await self._refuse(problem, scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, reply, scope, receive, send):
        self.metrics.add("requests")
        self.metrics.add("rejected_requests")
        await reply(scope, receive, send)


class BearerAuth:
    """ASGI middleware: every path but /health needs `Authorization: Bearer <token>`."""

    def __init__(self, app, token):
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] != "/health":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not secrets.compare_digest(given, self.expected):
                reply = JSONResponse(
                    {"detail": "missing or wrong bearer token: send 'Authorization: Bearer <token>' with the "
                               "token of the server's --auth_token_file (clients: judge_token_file / JUDGE_TOKEN_FILE)"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                return await reply(scope, receive, send)
        await self.app(scope, receive, send)


def create_app(settings):
    """The FastAPI app for these settings; nothing runs until a server (uvicorn) serves it."""
    metrics = Metrics()
    service = None

    @asynccontextmanager
    async def lifespan(app):
        nonlocal service
        service = app.state.service = JudgeService(settings, metrics)
        logger.info("judge ready: %s", describe(settings))
        yield
        await service.backend.aclose()

    app = FastAPI(
        title="PaST judge server",
        description="Judges (question, reference, response) items; see reward_server.py's docstring.",
        lifespan=lifespan,
    )
    app.add_middleware(RequestLimits, settings=settings, metrics=metrics)
    if settings.auth_token:  # added last, so it runs first: no body is read for a client without the token
        app.add_middleware(BearerAuth, token=settings.auth_token)

    @app.exception_handler(RequestValidationError)
    async def on_invalid_request(request, exc):
        metrics.add("rejected_requests")
        return invalid_request(exc.errors())

    @app.get("/health")
    async def health():
        return {"status": "ok", **info(settings)}

    @app.get("/metrics")
    async def get_metrics():
        return {**info(settings), **metrics.snapshot()}

    @app.post("/judge", response_model=JudgeResponse)
    async def judge(request: JudgeRequest):
        start = time.perf_counter()
        metrics.add("requests")
        if len(request.items) > settings.max_items:
            metrics.add("rejected_requests")
            raise HTTPException(status_code=413, detail=(
                f"{len(request.items)} items in one request; the limit is {settings.max_items} (--max_items): split the request"))
        metrics.add("items", len(request.items))
        try:
            results = await service.judge_items(request.grader, request.items)
        except BackendRejected as e:
            metrics.add("error_responses")
            raise HTTPException(status_code=502, detail=f"judge backend refused the server: {e}")
        except BackendUnavailable as e:
            metrics.add("error_responses")
            raise HTTPException(status_code=503, detail=f"judge backend unavailable, retry later: {e}")
        metrics.request_latency.append(time.perf_counter() - start)
        return {"results": results}

    return app


def info(settings):
    """What /health and /metrics say about the judge."""
    llm = settings.backend not in OFFLINE_BACKENDS
    return {
        "backend": settings.backend,
        "judge_model": settings.judge_model,
        "graders": list(GRADERS),
        "max_tokens": settings.max_tokens if llm else None,
        "max_items": settings.max_items,
    }


def oversized_field(item, max_chars):
    """Why `item` is too long to judge (a field over --max_chars), else None."""
    for name in ("question", "reference", "response"):
        n = len(getattr(item, name))
        if n > max_chars:
            return f"the item's {name} has {n} characters; the limit is {max_chars} (--max_chars)"
    return None


def describe(settings):
    if settings.backend == "lexical":
        return f"lexical (token F1, verdict at F1 >= {LEXICAL_THRESHOLD}; offline, NOT an LLM judge)"
    if settings.backend == "exact_match":
        return "exact_match (normalised response == normalised reference; offline, for one-word answers, NOT an LLM judge)"
    return (
        f"{settings.backend} judge_model={settings.judge_model} base_url={settings.base_url} "
        f"max_tokens={settings.max_tokens} max_concurrency={settings.max_concurrency}"
    )


def resolve_backend(backend, base_url, openai_key):
    """The backend to use and why (the explicit choice, else what is configured); ValueError
    saying how to configure a judge when nothing is."""
    if backend:
        return backend, "chosen with --backend"
    if base_url:
        return "vllm", "--base_url is set"
    if openai_key:
        return "openai", "an OpenAI key was found"
    raise ValueError(NO_JUDGE_CONFIGURED)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="judge backend (default: vllm if --base_url, else openai if a key is found; lexical and exact_match only by name)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="bind address (default loopback; any other address needs a token, see --auth_token_file)")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--base_url", default=None, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--judge_model", default=None,
                        help=f"judge model name (openai default {DEFAULT_OPENAI_JUDGE_MODEL}; required for vllm)")
    parser.add_argument("--max_tokens", type=int, default=DEFAULT_MAX_TOKENS,
                        help="verdict budget: tokens the judge may generate, thinking included (default %(default)s)")
    parser.add_argument("--max_concurrency", type=int, default=64, help="concurrent backend calls at most")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds per backend call (default %(default)s: room for the whole verdict budget)")
    parser.add_argument("--max_retries", type=int, default=4, help="retries on 408/409/425/429/5xx/timeouts/connection errors")
    parser.add_argument("--retry_delay", type=float, default=0.5, help="first backoff in seconds (doubles per retry)")
    parser.add_argument("--cache_size", type=int, default=200_000, help="judged items kept in the LRU cache")
    parser.add_argument("--max_items", type=int, default=DEFAULT_MAX_ITEMS, help="items per request at most (else 413)")
    parser.add_argument("--max_request_mb", type=float, default=DEFAULT_MAX_REQUEST_MB,
                        help="request body size at most, in MB (else 413, before the body is parsed; default %(default)s)")
    parser.add_argument("--max_chars", type=int, default=32_000, help="characters per field at most (a longer item gets no verdict)")
    parser.add_argument("--auth_token_file", default=None,
                        help="file holding the bearer token every route but /health requires (default: the file env "
                             "JUDGE_TOKEN_FILE names, else env JUDGE_AUTH_TOKEN; required for a non-loopback --host)")
    parser.add_argument("--log_level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")

    openai_key = read_openai_key()
    try:
        backend, why = resolve_backend(args.backend, args.base_url, openai_key)
        api_key = api_key_for(args.base_url or OPENAI_BASE_URL) if backend not in OFFLINE_BACKENDS else None
        settings = JudgeSettings(
            backend=backend, base_url=args.base_url, judge_model=args.judge_model, api_key=api_key,
            max_tokens=args.max_tokens, max_concurrency=args.max_concurrency, timeout=args.timeout,
            max_retries=args.max_retries, retry_delay=args.retry_delay, cache_size=args.cache_size,
            max_items=args.max_items, max_chars=args.max_chars, max_request_mb=args.max_request_mb,
            auth_token=check_server_token(read_auth_token(args.auth_token_file), "judge server"),
        )
    except (ValueError, JudgeError) as e:
        parser.error(str(e))
    refused = refuse_open_bind(args.host, settings.auth_token, "judge", "--auth_token_file", "bearer token")
    if refused:
        parser.error(f"{refused} (or env JUDGE_TOKEN_FILE); give the reward workers the same file with reward kwarg judge_token_file")
    logger.info("backend %s (%s)", backend, why)
    if backend == "lexical":
        logger.warning("lexical judge: token F1 word overlap, NOT an LLM judge; for offline tests and the CPU quickstart")
    if backend == "exact_match":
        logger.warning("exact_match judge: the normalised answer must equal the reference, NOT an LLM judge; for one-word answers")
    if settings.auth_token:
        logger.info("bearer token required on every route but /health")

    import uvicorn

    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
