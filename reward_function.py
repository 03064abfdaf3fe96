"""verl 0.9.1 custom reward for PaST GRPO: a rollout's score is the judge server's verdict on it.

    reward.custom_reward_function.path=$PWD/reward_function.py
    +reward.custom_reward_function.reward_kwargs.judge_url=http://127.0.0.1:8123   # else env JUDGE_SERVER_URL
    +reward.custom_reward_function.reward_kwargs.judge_timeout=300                 # seconds per request
    +reward.custom_reward_function.reward_kwargs.judge_retries=5                   # then JudgeUnavailableError

verl calls `compute_score` once per rollout, many at a time, in each reward worker's event loop.
Calls that arrive together are sent as one POST /judge (after a BATCH_WINDOW_S pause, at most
MAX_BATCH items), over one pooled HTTP client per process and event loop, so a GRPO batch costs a
few requests rather than one per rollout; the server judges identical items once. If the judge
stays unreachable, compute_score raises JudgeUnavailableError: training on silent zeros is worse
than stopping. If the server needs a token, set JUDGE_AUTH_TOKEN (kept out of the Hydra config).

Runs inside verl's workers, so it imports nothing heavy: httpx and utils.extract_answer only.
"""

import asyncio
import os
import sys
import time
import weakref

import httpx

# verl loads this file by path under a hashed module name; make utils.py beside it importable.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)
from utils import extract_answer  # noqa: E402

DEFAULT_JUDGE_URL = "http://127.0.0.1:8123"
BATCH_WINDOW_S = 0.005  # how long a call waits for others to share its request
MAX_BATCH = 256  # items per request (the server's default limit is 1024)
RETRY_DELAY_S = 1.0  # first backoff; doubles per retry
RETRYABLE_STATUS = {429, 500, 503, 504}


class JudgeUnavailableError(RuntimeError):
    """The judge server could not be reached (or stayed overloaded) through every retry."""


class JudgeRequestError(RuntimeError):
    """The judge server refused the request (auth, size, backend rejected); retrying will not help."""


class JudgeClient:
    """Pooled HTTP client + micro-batcher for one judge URL in one event loop."""

    def __init__(self, url, timeout, retries):
        self.url = url.rstrip("/") + "/judge"
        self.retries = retries
        token = os.environ.get("JUDGE_AUTH_TOKEN")
        self.client = httpx.AsyncClient(
            timeout=timeout,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )
        self.pending = []  # (item, future) waiting for the next request
        self.flush_timer = None
        self.sending = set()  # keeps request tasks alive until they finish

    async def judge(self, question, reference, response):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append(({"question": question, "reference": reference, "response": response}, future))
        if len(self.pending) >= MAX_BATCH:
            self._flush()
        elif self.flush_timer is None:
            self.flush_timer = loop.call_later(BATCH_WINDOW_S, self._flush)
        return await future

    def _flush(self):
        if self.flush_timer is not None:
            self.flush_timer.cancel()
            self.flush_timer = None
        batch, self.pending = self.pending, []
        if batch:
            task = asyncio.ensure_future(self._send(batch))
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)

    async def _send(self, batch):
        try:
            results = await self._post([item for item, _ in batch])
        except Exception as e:  # every caller in the batch gets the error
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)

    async def _post(self, items):
        last_error = None
        for attempt in range(self.retries + 1):
            try:
                reply = await self.client.post(self.url, json={"items": items})
            except httpx.TransportError as e:  # connection refused/reset, timeouts
                last_error = f"{type(e).__name__}: {e}"
            else:
                if reply.status_code == 200:
                    results = reply.json()["results"]
                    if len(results) != len(items):
                        raise JudgeRequestError(f"judge at {self.url} returned {len(results)} results for {len(items)} items")
                    return results
                if reply.status_code not in RETRYABLE_STATUS:
                    raise JudgeRequestError(f"judge at {self.url} answered HTTP {reply.status_code}: {reply.text[:500]}")
                last_error = f"HTTP {reply.status_code}: {reply.text[:300]}"
            if attempt < self.retries:
                await asyncio.sleep(RETRY_DELAY_S * 2**attempt)
        raise JudgeUnavailableError(
            f"judge server at {self.url} failed {self.retries + 1} attempts (last: {last_error}). Start it with "
            "`bash scripts/train/start_judge_server.sh`, or point reward_kwargs.judge_url / JUDGE_SERVER_URL at it."
        )


# event loop -> {(url, timeout, retries): JudgeClient}; an httpx client belongs to one loop.
_clients = weakref.WeakKeyDictionary()


def _judge_client(url, timeout, retries):
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    key = (url, timeout, retries)
    if key not in per_loop:
        per_loop[key] = JudgeClient(url, timeout, retries)
    return per_loop[key]


async def compute_score(data_source, solution_str, ground_truth, extra_info=None, judge_url=None,
                        judge_timeout=300.0, judge_retries=5, **kwargs):
    """Judge one rollout: {"score" in [0, 1], "acc" (verdict), judge_cached, judge_parse_failed,
    judge_latency_s}. The question is extra_info["question"]; the answer is extracted from the
    rollout (chat-template tail, <think> blocks and an "Answer:" prefix removed)."""
    question = (extra_info or {}).get("question")
    if not isinstance(question, str) or not question:
        raise ValueError(
            f"extra_info of a {data_source!r} row has no 'question' string (got keys {sorted(extra_info or {})}): "
            "build the GRPO parquet with prepare_data, which stores the question in extra_info"
        )
    if not isinstance(ground_truth, str):
        raise TypeError(f"ground_truth must be the reference answer as a string, got {type(ground_truth).__name__}")
    url = judge_url or os.environ.get("JUDGE_SERVER_URL") or DEFAULT_JUDGE_URL
    client = _judge_client(url, float(judge_timeout), int(judge_retries))
    start = time.perf_counter()
    result = await client.judge(question, ground_truth, extract_answer(solution_str))
    return {
        "score": float(result["score"]),
        "acc": float(result["verdict"]),
        "judge_cached": float(result["cached"]),
        "judge_parse_failed": float(result["parse_failed"]),
        "judge_latency_s": time.perf_counter() - start,
    }
