"""PaST judge server: decides whether a response answers a question the way the reference does.

GRPO calls it for every rollout (through reward_function.py) and the LooGLE evaluation uses it
for accuracy, so it is async end to end, bounds its backend calls, judges identical items once
(LRU cache + de-duplication of identical in-flight items) and retries a flaky backend.

    python reward_server.py                                    # lexical judge, http://127.0.0.1:8123
    python reward_server.py --backend openai --judge_model gpt-4.1-mini
    python reward_server.py --backend vllm --base_url http://127.0.0.1:8000/v1 --judge_model MODEL

Backends:
  lexical  offline, no model: SQuAD-style token F1 between the normalised reference and response
           (lower-case, no punctuation, no articles); score = F1, verdict = exact match or
           F1 >= LEXICAL_THRESHOLD. A cheap proxy for tests and the CPU quickstart, NOT a
           stand-in for an LLM judge: it rewards word overlap, not meaning.
  openai   OpenAI chat completions with a judge model; key from OPENAI_API_KEY or a gitignored
           openai_api_key.txt beside this file (never logged).
  vllm     any OpenAI-compatible server (`vllm serve`, `transformers serve`) at --base_url;
           sends VLLM_API_KEY as bearer token if that variable is set.
Without --backend: vllm if --base_url is given, else openai if a key is found, else lexical.

API (OpenAPI page at /docs):
  GET  /health    no auth
  POST /judge     {"items": [{"question", "reference", "response"}, ...]}
                  -> {"results": [{"score", "verdict", "cached", "parse_failed"}, ...]} same order
  GET  /metrics   counters and latency percentiles
Errors: 401 bad/missing bearer token (when --auth_token or JUDGE_AUTH_TOKEN is set), 413 too many
items or a field too long, 422 malformed request, 502 the backend rejected a call (e.g. bad key
or model name), 503 the backend is unreachable/overloaded after retries (retry later; judged
items are cached, so a retry only pays for the rest).

Importing this module starts nothing; the lexical judge is importable as pure functions
(normalize_answer, token_f1, exact_match, lexical_judge, LEXICAL_THRESHOLD).
"""

import argparse
import asyncio
import collections
import ipaddress
import json
import logging
import os
import random
import re
import secrets
import string
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from fastapi import FastAPI, HTTPException
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from prompts import judge_messages, parse_verdict

logger = logging.getLogger("reward_server")

REPO_DIR = Path(__file__).resolve().parent
API_KEY_FILE = REPO_DIR / "openai_api_key.txt"
OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_JUDGE_MODEL = "gpt-4.1-mini"

# --- Lexical judge (pure functions; eval_loogle reuses them) -------------------------------------

# Verdict threshold on token F1: at least half of the words agree (precision and recall together).
LEXICAL_THRESHOLD = 0.5

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(s):
    """SQuAD normalisation: lower-case, drop punctuation and articles, collapse whitespace."""
    s = (s or "").lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def token_f1(reference, response):
    """SQuAD token F1 of the normalised strings (1.0 if both are empty, 0.0 if only one is)."""
    ref_tokens = normalize_answer(reference).split()
    resp_tokens = normalize_answer(response).split()
    if not ref_tokens or not resp_tokens:
        return float(ref_tokens == resp_tokens)
    common = collections.Counter(ref_tokens) & collections.Counter(resp_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(resp_tokens)
    recall = overlap / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(reference, response):
    return normalize_answer(reference) == normalize_answer(response)


def lexical_judge(reference, response):
    """{"score": token F1, "verdict": exact match or F1 >= LEXICAL_THRESHOLD}."""
    score = token_f1(reference, response)
    return {"score": score, "verdict": exact_match(reference, response) or score >= LEXICAL_THRESHOLD}


# --- Settings ------------------------------------------------------------------------------------


@dataclass
class JudgeSettings:
    backend: str = "lexical"  # lexical | openai | vllm
    base_url: str | None = None
    judge_model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    max_tokens: int = 16
    max_concurrency: int = 64
    timeout: float = 60.0
    max_retries: int = 4
    retry_delay: float = 0.5
    cache_size: int = 200_000
    max_items: int = 1024
    max_chars: int = 32_000
    auth_token: str | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.backend not in ("lexical", "openai", "vllm"):
            raise ValueError(f"unknown backend {self.backend!r}: choose lexical, openai or vllm")
        if self.backend == "openai":
            self.base_url = self.base_url or OPENAI_BASE_URL
            self.judge_model = self.judge_model or DEFAULT_OPENAI_JUDGE_MODEL
            if not self.api_key:
                raise ValueError(
                    f"backend openai needs an API key: set OPENAI_API_KEY or write it to {API_KEY_FILE} "
                    "(gitignored), or use --backend lexical"
                )
        if self.backend == "vllm" and not (self.base_url and self.judge_model):
            raise ValueError(
                "backend vllm needs --base_url (e.g. http://127.0.0.1:8000/v1) and --judge_model "
                "(the model name the server serves)"
            )
        for name in ("max_tokens", "max_concurrency", "cache_size", "max_items", "max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.max_retries < 0 or self.retry_delay < 0 or self.timeout <= 0:
            raise ValueError("--max_retries and --retry_delay must be >= 0 and --timeout > 0")


def read_openai_key():
    """OPENAI_API_KEY, else the first line of openai_api_key.txt beside this file, else None."""
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if not key and API_KEY_FILE.exists():
        key = API_KEY_FILE.read_text().strip()
    return key or None


# --- Metrics -------------------------------------------------------------------------------------


class Metrics:
    """Counters and recent latencies (the last 10,000 requests / backend calls)."""

    COUNTERS = (
        "requests", "items", "cache_hits", "deduplicated", "backend_calls", "backend_retries",
        "parse_failures", "failed_items", "rejected_requests", "error_responses",
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
        return {
            **self.counts,
            "uptime_s": round(time.time() - self.started, 3),
            "request_latency_s": self._percentiles(self.request_latency),
            "backend_latency_s": self._percentiles(self.backend_latency),
        }


# --- Backends ------------------------------------------------------------------------------------


class BackendUnavailable(Exception):
    """The backend kept failing with retryable errors (connection, timeout, 429, 5xx)."""


class BackendRejected(Exception):
    """The backend refused the call in a way a retry will not fix (4xx other than 429, bad reply)."""


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

    async def aclose(self):
        await self.session.close()

    async def judge(self, question, reference, response):
        payload = {
            "model": self.settings.judge_model,
            "messages": judge_messages(question, reference, response),
            "temperature": 0.0,
            "max_tokens": self.settings.max_tokens,
        }
        reply = await self._complete(payload)
        verdict = parse_verdict(reply)
        if verdict is None:
            # Not a verdict: count it and score 0 rather than guess; not cached, so a later call may do better.
            self.metrics.add("parse_failures")
            logger.warning("judge reply is not a yes/no verdict: %r", reply[:200])
            return {"score": 0.0, "verdict": False, "parse_failed": True}
        return {"score": float(verdict), "verdict": verdict, "parse_failed": False}

    async def _complete(self, payload):
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
                        retry_after = _retry_after_seconds(reply.headers.get("retry-after"))
                    self.metrics.backend_latency.append(time.perf_counter() - start)
                if status == 200:
                    return self._content(text)
                detail = f"HTTP {status} from {s.base_url}: {text[:300]}"
                if status != 429 and status < 500:
                    raise BackendRejected(detail)
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
            return json.loads(text)["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise BackendRejected(f"{self.settings.base_url} answered 200 but not a chat completion: {text[:300]}")


def _retry_after_seconds(value):
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 0.0


class LexicalJudge:
    async def judge(self, question, reference, response):
        return {**lexical_judge(reference, response), "parse_failed": False}

    async def aclose(self):
        pass


# --- Cache + de-duplication ----------------------------------------------------------------------


class JudgeService:
    """Judges items through the backend once per distinct (question, reference, response)."""

    def __init__(self, settings, metrics):
        self.settings = settings
        self.metrics = metrics
        self.backend = LexicalJudge() if settings.backend == "lexical" else ChatJudge(settings, metrics)
        self.cache = collections.OrderedDict()
        self.in_flight = {}

    async def judge_items(self, items):
        """One result per item, same order. Raises BackendUnavailable / BackendRejected if any
        item could not be judged (the others are cached by then)."""
        results = [None] * len(items)
        waiting = []  # (index, task, is_new)
        for i, item in enumerate(items):
            key = (item.question, item.reference, item.response)
            hit = self.cache.get(key)
            if hit is not None:
                self.cache.move_to_end(key)
                self.metrics.add("cache_hits")
                results[i] = {**hit, "cached": True}
                continue
            task = self.in_flight.get(key)
            is_new = task is None
            if is_new:
                task = asyncio.ensure_future(self._judge_new(key))
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

    async def _judge_new(self, key):
        question, reference, response = key
        if not response.strip():
            result = {"score": 0.0, "verdict": False, "parse_failed": False}  # empty answer: wrong, no call
        else:
            result = await self.backend.judge(question, reference, response)
        if not result["parse_failed"]:
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
    items: list[JudgeItem] = Field(min_length=1, description="items to judge; results keep this order")


class JudgeResult(BaseModel):
    score: float = Field(ge=0.0, le=1.0, description="1/0 for LLM judges; token F1 for lexical")
    verdict: bool = Field(description="the judge says the response is correct")
    cached: bool = Field(description="answered from the cache or by an identical in-flight item")
    parse_failed: bool = Field(description="the LLM reply was not a clear yes/no (score 0, not cached)")


class JudgeResponse(BaseModel):
    results: list[JudgeResult]


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
                    {"detail": "missing or wrong bearer token: send 'Authorization: Bearer <JUDGE_AUTH_TOKEN>'"},
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
        service = JudgeService(settings, metrics)
        logger.info("judge ready: %s", describe(settings))
        yield
        await service.backend.aclose()

    app = FastAPI(
        title="PaST judge server",
        description="Judges (question, reference, response) items; see reward_server.py's docstring.",
        lifespan=lifespan,
    )
    if settings.auth_token:
        app.add_middleware(BearerAuth, token=settings.auth_token)

    @app.exception_handler(RequestValidationError)
    async def on_invalid_request(request, exc):
        metrics.add("rejected_requests")
        return await request_validation_exception_handler(request, exc)

    @app.get("/health")
    async def health():
        return {"status": "ok", "backend": settings.backend, "judge_model": settings.judge_model}

    @app.get("/metrics")
    async def get_metrics():
        return {"backend": settings.backend, "judge_model": settings.judge_model, **metrics.snapshot()}

    @app.post("/judge", response_model=JudgeResponse)
    async def judge(request: JudgeRequest):
        start = time.perf_counter()
        metrics.add("requests")
        problem = _size_problem(request.items, settings)
        if problem:
            metrics.add("rejected_requests")
            raise HTTPException(status_code=413, detail=problem)
        metrics.add("items", len(request.items))
        try:
            results = await service.judge_items(request.items)
        except BackendRejected as e:
            metrics.add("error_responses")
            raise HTTPException(status_code=502, detail=f"judge backend rejected the call: {e}")
        except BackendUnavailable as e:
            metrics.add("error_responses")
            raise HTTPException(status_code=503, detail=f"judge backend unavailable, retry later: {e}")
        metrics.request_latency.append(time.perf_counter() - start)
        return {"results": results}

    return app


def _size_problem(items, settings):
    if len(items) > settings.max_items:
        return f"{len(items)} items in one request; the limit is {settings.max_items} (--max_items): split the request"
    for i, item in enumerate(items):
        for name in ("question", "reference", "response"):
            n = len(getattr(item, name))
            if n > settings.max_chars:
                return (
                    f"items[{i}].{name} has {n} characters; the limit is {settings.max_chars} (--max_chars): "
                    "truncate it or raise the limit"
                )
    return None


def describe(settings):
    if settings.backend == "lexical":
        return f"lexical (token F1, verdict at F1 >= {LEXICAL_THRESHOLD}; offline, not an LLM judge)"
    return (
        f"{settings.backend} judge_model={settings.judge_model} base_url={settings.base_url} "
        f"max_concurrency={settings.max_concurrency}"
    )


def resolve_backend(backend, base_url, openai_key):
    """The backend to use and why (the explicit choice, else what is configured)."""
    if backend:
        return backend, "chosen with --backend"
    if base_url:
        return "vllm", "--base_url is set"
    if openai_key:
        return "openai", "an OpenAI key was found (pass --backend lexical for the offline judge)"
    return "lexical", "no --base_url and no OpenAI key"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["openai", "vllm", "lexical"], default=None,
                        help="judge backend (default: vllm if --base_url, else openai if a key is found, else lexical)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback; use a token if you open it)")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--base_url", default=None, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--judge_model", default=None,
                        help=f"judge model name (openai default {DEFAULT_OPENAI_JUDGE_MODEL}; required for vllm)")
    parser.add_argument("--max_tokens", type=int, default=16, help="tokens the judge may reply with")
    parser.add_argument("--max_concurrency", type=int, default=64, help="concurrent backend calls at most")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per backend call")
    parser.add_argument("--max_retries", type=int, default=4, help="retries on 429/5xx/timeouts/connection errors")
    parser.add_argument("--retry_delay", type=float, default=0.5, help="first backoff in seconds (doubles per retry)")
    parser.add_argument("--cache_size", type=int, default=200_000, help="judged items kept in the LRU cache")
    parser.add_argument("--max_items", type=int, default=1024, help="items per request at most (else 413)")
    parser.add_argument("--max_chars", type=int, default=32_000, help="characters per field at most (else 413)")
    parser.add_argument("--auth_token", default=os.environ.get("JUDGE_AUTH_TOKEN"),
                        help="require 'Authorization: Bearer TOKEN' on every route but /health (default env JUDGE_AUTH_TOKEN)")
    parser.add_argument("--log_level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")

    openai_key = read_openai_key()
    backend, why = resolve_backend(args.backend, args.base_url, openai_key)
    api_key = openai_key if backend == "openai" else os.environ.get("VLLM_API_KEY") or None
    try:
        settings = JudgeSettings(
            backend=backend, base_url=args.base_url, judge_model=args.judge_model, api_key=api_key,
            max_tokens=args.max_tokens, max_concurrency=args.max_concurrency, timeout=args.timeout,
            max_retries=args.max_retries, retry_delay=args.retry_delay, cache_size=args.cache_size,
            max_items=args.max_items, max_chars=args.max_chars, auth_token=args.auth_token,
        )
    except ValueError as e:
        parser.error(str(e))
    logger.info("backend %s (%s)", backend, why)
    if not settings.auth_token and not _is_loopback(args.host):
        logger.warning("listening on %s without --auth_token: anyone who can reach it can use the judge", args.host)

    import uvicorn

    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level, access_log=False)


def _is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


if __name__ == "__main__":
    main()
