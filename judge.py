"""The judge's logic apart from its server: the lexical judge, verdict parsing, and the one client
for the judge server's `POST /judge` (sync and async).

Imports only the standard library, httpx and utils.py (itself standard library only), so the
judge server (reward_server.py), the GRPO reward (reward_function.py, inside verl's workers) and
the evaluation (eval_loogle/) all use it without FastAPI or torch.

Graders (the `grader` of a request; their prompts are in prompts.py by the same names):
  loogle  the default: is the response the same answer as the gold answer? The verdict is the
          reply's only yes/no word; a reply with both or neither is no verdict.
  squad   SEAL's grader for the SQuAD setting: is the student answer correct based solely on the
          gold answer? The verdict is SEAL's rule: a whole-word "yes" and no whole-word "no"
          (case-insensitive); a reply with neither word is no verdict (wrong, as in SEAL).
For both, closed <think> blocks are dropped first, and a reply whose <think> block never closes
(cut while thinking) is no verdict, whatever it mentions.

The client's retry rule (the same for sync and async calls): a request is retried, with
exponential backoff (doubling from `retry_delay`, jittered, at most 30 s, longer if the server
sends Retry-After), after a connection error or timeout and after HTTP 429, 503 or 504 — the
answers that mean "busy or not up yet, try later" (the server's 503 says its backend is
unreachable or overloaded; what it judged meanwhile is cached, so a retry pays only for the
rest). Every other answer is final and raises JudgeRequestError: 401 (no or wrong token), 413
(request too large), 422 (malformed), 500 (a bug in the server: its log has the traceback), 502
(the backend refused the server's key or model), and so is a 200 that is not one result per
item with a true/false verdict and a score in [0, 1]. When the retries are used up it raises
JudgeUnavailableError. A call with more than `max_items` (1024, the server's default) items is
sent as several requests. Error texts have keys redacted (utils.redact).

The bearer token for a server that wants one: the file `token_file`, else the file named by env
JUDGE_TOKEN_FILE, else env JUDGE_AUTH_TOKEN. A file named by path is how the token reaches
processes on other nodes (a shared filesystem) without passing through a command line, a Hydra
override or Ray's runtime_env, which verl prints. The token is never logged, put into an error
message or shown by repr. The servers' token rules live here too, for the judge server and the
TTT server alike: a token file others may read is warned about, a server refuses a token under
16 characters, and a server off loopback refuses to start without a token.
"""

import asyncio
import collections
import ipaddress
import itertools
import logging
import os
import random
import re
import string
import time
from pathlib import Path

import httpx

from utils import THINK_BLOCK, UNCLOSED_THINK, redact

log = logging.getLogger("judge")

DEFAULT_JUDGE_URL = "http://127.0.0.1:8123"
DEFAULT_GRADER = "loogle"
DEFAULT_MAX_ITEMS = 1024  # items per POST /judge: the server's --max_items default and the client's chunk
RETRY_STATUS = frozenset({429, 503, 504})
CONNECT_TIMEOUT_S = 10.0  # an unreachable host fails fast instead of after the whole timeout
MAX_RETRY_DELAY_S = 30.0


def default_judge_url():
    """JUDGE_URL (the drivers' name), else JUDGE_SERVER_URL (the original release's), else loopback."""
    return os.environ.get("JUDGE_URL") or os.environ.get("JUDGE_SERVER_URL") or DEFAULT_JUDGE_URL


# --- Lexical judge -----------------------------------------------------------------------------

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


# --- Verdicts ----------------------------------------------------------------------------------

_VERDICT_WORD = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def _one_word_verdict(words):
    return (words == {"yes"}) if len(words) == 1 else None


def _seal_verdict(words):
    return (words == {"yes"}) if words else None


_VERDICT_RULES = {"loogle": _one_word_verdict, "squad": _seal_verdict}
GRADERS = tuple(_VERDICT_RULES)


def parse_verdict(text, grader=DEFAULT_GRADER):
    """The judge's yes/no as True/False under `grader`'s rule; None when the reply holds no
    verdict (empty, neither word, both words for loogle, or cut inside a <think> block)."""
    if grader not in _VERDICT_RULES:
        raise ValueError(f"unknown grader {grader!r}: known graders are {', '.join(GRADERS)}")
    # A reasoning judge may weigh both words while thinking; only what follows its thinking counts.
    text = THINK_BLOCK.sub("", text or "")
    if UNCLOSED_THINK.search(text):
        return None
    return _VERDICT_RULES[grader]({m.group(1).lower() for m in _VERDICT_WORD.finditer(text)})


# --- Client for POST /judge --------------------------------------------------------------------


class JudgeError(RuntimeError):
    """The judge server cannot be used as configured (e.g. an unreadable token file)."""


class JudgeUnavailableError(JudgeError):
    """The judge server could not be reached, or stayed busy, through every retry."""


class JudgeRequestError(JudgeError):
    """The judge server refused the request (token, size, shape, its backend's key or model)."""


# A token is the one thing between the network and a server (the judge's backend key, the TTT
# server's GPU): one that is short enough to guess is refused. secrets.token_urlsafe(32) gives 43.
MIN_TOKEN_CHARS = 16
MAKE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE; chmod 600 FILE"


def read_token_file(path, what):
    """The token in file `path` (`what` names it in errors: "the judge token file"). Refuses an
    unreadable or empty file and several words; warns when group or others may read it. Errors
    name the file, never its content."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as e:
        raise JudgeError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or type(e).__name__}") from None
    if not token or any(c.isspace() for c in token):
        raise JudgeError(f"{what} {path} must hold one token on one line (it is empty or holds several words)")
    if mode & 0o077:
        log.warning("%s %s may be read by other users (mode %o): chmod 600 %s", what, path, mode & 0o777, path)
    return token


def check_server_token(token, server):
    """A server refuses to start with a token short enough to guess (clients send what they are given)."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise JudgeError(f"the {server}'s token has {len(token)} characters; it needs at least {MIN_TOKEN_CHARS} "
                         f"(write a new one: {MAKE_TOKEN})")
    return token


def read_auth_token(token_file=None):
    """The judge's bearer token: from `token_file`, else from the file env JUDGE_TOKEN_FILE names,
    else env JUDGE_AUTH_TOKEN; None when none is given."""
    path = token_file or os.environ.get("JUDGE_TOKEN_FILE")
    if path:
        return read_token_file(path, "the judge token file")
    return os.environ.get("JUDGE_AUTH_TOKEN", "").strip() or None


def is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def refuse_open_bind(host, token, server, token_option, token_name="token"):
    """None, or why `server` must not listen on `host`: anything but loopback needs a token (the
    judge server and the TTT server both refuse to start without one)."""
    if token or is_loopback(host):
        return None
    return (f"refusing to listen on {host} without a {token_name}: anyone who reaches it could use the {server}. "
            f"Write a token to a file only you can read ({MAKE_TOKEN}) and pass {token_option} FILE")


class JudgeClient:
    """Client for one judge server: `judge` (sync) and `ajudge` (async) send one POST /judge each,
    with the retry rule of this module's docstring. An async client belongs to the event loop it
    was first used in (httpx's rule): keep one JudgeClient per loop."""

    def __init__(self, url=None, token_file=None, timeout=300.0, retries=5, retry_delay=1.0, max_items=DEFAULT_MAX_ITEMS):
        self.url = (url or default_judge_url()).rstrip("/")
        self.max_items = max_items
        self.retries = retries
        self.retry_delay = retry_delay
        token = read_auth_token(token_file)
        self._client_options = {
            "base_url": self.url,
            "headers": {"Authorization": f"Bearer {token}"} if token else {},
            "timeout": httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S)),
        }
        self._sync = None
        self._async = None

    def __repr__(self):
        return f"JudgeClient({self.url!r}, token={'yes' if self._client_options['headers'] else 'no'})"

    # sync

    def health(self):
        """GET /health (backend, judge model, graders); JudgeUnavailableError with the fix if it is not up."""
        try:
            reply = self._sync_client().get("/health")
            reply.raise_for_status()
            return reply.json()
        except (httpx.HTTPError, ValueError) as e:
            raise JudgeUnavailableError(
                f"judge server not reachable at {self.url} ({type(e).__name__}: {e}). Start one with "
                "`bash scripts/train/start_judge_server.sh`, or point the judge URL (JUDGE_SERVER_URL) at a running one."
            ) from None

    def judge(self, items, grader=DEFAULT_GRADER):
        """[{question, reference, response}] -> the server's results, same order (one request per
        `max_items` items)."""
        return [r for chunk in self._chunks(items) for r in self._judge_chunk(chunk, grader)]

    def _judge_chunk(self, items, grader):
        body = _request_body(items, grader)
        for attempt in itertools.count():
            results, delay = self._attempt_outcome(attempt, len(items), *_call(self._sync_client().post, body))
            if results is not None:
                return results
            time.sleep(delay)

    def close(self):
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    # async

    async def ajudge(self, items, grader=DEFAULT_GRADER):
        """Async `judge`."""
        return [r for chunk in self._chunks(items) for r in await self._ajudge_chunk(chunk, grader)]

    async def _ajudge_chunk(self, items, grader):
        body = _request_body(items, grader)
        for attempt in itertools.count():
            results, delay = self._attempt_outcome(attempt, len(items), *await _acall(self._async_client().post, body))
            if results is not None:
                return results
            await asyncio.sleep(delay)

    async def aclose(self):
        if self._async is not None:
            await self._async.aclose()
            self._async = None

    # internals

    def _chunks(self, items):
        return [items[start : start + self.max_items] for start in range(0, len(items), self.max_items)]

    def _sync_client(self):
        if self._sync is None:
            self._sync = httpx.Client(**self._client_options)
        return self._sync

    def _async_client(self):
        if self._async is None:
            limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
            self._async = httpx.AsyncClient(limits=limits, **self._client_options)
        return self._async

    def _attempt_outcome(self, attempt, n_items, reply, error):
        """(results, None) for a good reply, else (None, seconds to wait before the next attempt);
        raises when the reply is final or the retries are used up."""
        if reply is not None and reply.status_code == 200:
            results = _results(reply, n_items)
            if results is None:
                raise JudgeRequestError(f"judge at {self.url} answered {redact(reply.text[:300])!r} for {n_items} items: "
                                        "not a judge server's results (is the judge URL right?)")
            return results, None
        if reply is not None and reply.status_code not in RETRY_STATUS:
            hint = (": the server wants a bearer token; name its file with reward kwarg judge_token_file or "
                    "env JUDGE_TOKEN_FILE") if reply.status_code == 401 else ""
            raise JudgeRequestError(
                f"judge at {self.url} refused the request with HTTP {reply.status_code}: {redact(reply.text[:500])}{hint}")
        problem = f"HTTP {reply.status_code}: {redact(reply.text[:300])}" if reply is not None else f"{type(error).__name__}: {error}"
        if attempt >= self.retries:
            raise JudgeUnavailableError(
                f"judge server at {self.url} failed {attempt + 1} attempts (last: {problem}). Start it with "
                "`bash scripts/train/start_judge_server.sh`, or point the judge URL (reward kwarg judge_url, env "
                "JUDGE_SERVER_URL) at it."
            )
        delay = min(MAX_RETRY_DELAY_S, self.retry_delay * 2**attempt) * random.uniform(0.5, 1.5)
        if reply is not None:
            delay = max(delay, min(MAX_RETRY_DELAY_S, retry_after_seconds(reply.headers.get("retry-after"))))
        log.warning("judge at %s: %s; retry %d of %d in %.1f s", self.url, problem, attempt + 1, self.retries, delay)
        return None, delay


def _results(reply, n_items):
    """The reply's n_items results, each with a bool verdict and a score in [0, 1]; None when the
    reply is anything else (not JSON, not an object, other counts, a verdict like "maybe")."""
    try:
        results = reply.json()["results"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(results, list) or len(results) != n_items:
        return None
    for r in results:
        score = r.get("score") if isinstance(r, dict) else None
        if not (isinstance(r, dict) and isinstance(r.get("verdict"), bool) and isinstance(score, (int, float))
                and not isinstance(score, bool) and 0.0 <= score <= 1.0):
            return None
    return results


def _request_body(items, grader):
    return {"grader": grader, "items": [{k: item[k] for k in ("question", "reference", "response")} for item in items]}


def _call(post, body):
    try:
        return post("/judge", json=body), None
    except httpx.TransportError as e:  # connection refused or reset, timeouts
        return None, e


async def _acall(post, body):
    try:
        return await post("/judge", json=body), None
    except httpx.TransportError as e:
        return None, e


def retry_after_seconds(value):
    """A Retry-After header in seconds (0 when absent or not a number of seconds)."""
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 0.0
