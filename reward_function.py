"""verl 0.9.1 custom reward for PaST GRPO: a rollout's score is the judge server's verdict on it.

    reward.custom_reward_function.path=$PWD/reward_function.py
    +reward.custom_reward_function.reward_kwargs.judge_url=http://HEAD:8123       # else env JUDGE_URL / JUDGE_SERVER_URL
    +reward.custom_reward_function.reward_kwargs.grader=loogle                    # or squad (default loogle)
    +reward.custom_reward_function.reward_kwargs.judge_token_file=/shared/judge.token  # if the judge wants a token
    +reward.custom_reward_function.reward_kwargs.judge_timeout=300                # seconds per request
    +reward.custom_reward_function.reward_kwargs.judge_retries=5                  # then JudgeUnavailableError

verl calls `compute_score` once per rollout, many at a time, in each reward worker's event loop.
Calls that arrive together are sent as one POST /judge per grader (after a BATCH_WINDOW_S pause,
at most MAX_BATCH items), through one judge.JudgeClient per process, event loop and settings, so
a GRPO batch costs a few requests rather than one per rollout; the server judges identical items
once. Retries follow judge.py's one rule (connection errors, timeouts, HTTP 429/503/504). If the
judge stays unreachable, compute_score raises JudgeUnavailableError, and if it refuses the
request (token, key, model), JudgeRequestError: training on silent zeros is worse than stopping.

The bearer token: the file named by reward kwarg `judge_token_file`, else by env
JUDGE_TOKEN_FILE, else env JUDGE_AUTH_TOKEN. Name a file on a filesystem every node shares:
verl prints its config and Ray's runtime_env, so neither may carry the token itself.

Items without a verdict (the judge's reply unparsed or cut, or the item refused by the judge's
backend) score 0 and return judge_parse_failed = 1. verl 0.9.1 turns every key returned here
into validation metrics (`val-aux/<data_source>/judge_parse_failed/mean@N` is the share of
unparsed verdicts) but not into training-step metrics, so each request with such items is also
logged here with the worker's running share.

What is graded is utils.graded_response of the rollout: for grader squad the whole stripped
output, exactly what the SQuAD evaluation grades; for loogle the answer after a final "Answer:"
line, without <think> blocks.

Runs inside verl's workers, so it imports nothing heavy: judge.py (httpx) and utils.graded_response,
loaded from this file's folder whatever else on sys.path is called `judge` or `utils`.
"""

import asyncio
import collections
import importlib
import logging
import os
import sys
import time
import weakref

_HERE = os.path.dirname(os.path.abspath(__file__))


def _import_from_here(*names):
    """This folder's modules `names` (and their imports among them), whatever else on sys.path or
    in sys.modules has those names; sys.path and sys.modules are left as they were. verl loads this
    file by path under a hashed name inside its workers, where another `utils` may come first."""
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    sys.path.insert(0, _HERE)
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(_HERE)
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


_utils, _judge = _import_from_here("utils", "judge")
graded_response = _utils.graded_response
JudgeClient = _judge.JudgeClient
JudgeUnavailableError = _judge.JudgeUnavailableError
JudgeRequestError = _judge.JudgeRequestError

log = logging.getLogger("reward_function")

BATCH_WINDOW_S = 0.005  # how long a call waits for others to share its request
MAX_BATCH = 256  # items per request (the server's default limit is 1024)


class Batcher:
    """Micro-batcher over one JudgeClient in one event loop: concurrent calls -> few requests."""

    def __init__(self, client):
        self.client = client
        self.pending = {}  # grader -> [(item, future)] waiting for the next request
        self.flush_timers = {}  # grader -> timer handle
        self.sending = set()  # keeps request tasks alive until they finish
        self.judged = 0
        self.no_verdict = 0

    async def judge(self, grader, question, reference, response):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        pending = self.pending.setdefault(grader, [])
        pending.append(({"question": question, "reference": reference, "response": response}, future))
        if len(pending) >= MAX_BATCH:
            self._flush(grader)
        elif grader not in self.flush_timers:
            self.flush_timers[grader] = loop.call_later(BATCH_WINDOW_S, self._flush, grader)
        return await future

    def _flush(self, grader):
        timer = self.flush_timers.pop(grader, None)
        if timer is not None:
            timer.cancel()
        batch = self.pending.pop(grader, [])
        if batch:
            task = asyncio.ensure_future(self._send(grader, batch))
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)

    async def _send(self, grader, batch):
        try:
            results = await self.client.ajudge([item for item, _ in batch], grader)
        except Exception as e:  # every caller in the batch gets the error
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        self._report(results)
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)

    def _report(self, results):
        failures = [r.get("failure") or "no verdict" for r in results if r["parse_failed"]]
        self.judged += len(results)
        self.no_verdict += len(failures)
        if failures:
            reasons = ", ".join(f"{n}x {why}" for why, n in sorted(collections.Counter(failures).items()))
            log.warning("judge: %d of %d items in this request got no verdict (%s); %.1f%% of the %d judged "
                        "by this worker so far", len(failures), len(results), reasons,
                        100 * self.no_verdict / self.judged, self.judged)


# event loop -> {(url, token_file, timeout, retries): Batcher}; an httpx async client belongs to one loop.
_batchers = weakref.WeakKeyDictionary()


def _batcher(url, token_file, timeout, retries):
    per_loop = _batchers.setdefault(asyncio.get_running_loop(), {})
    key = (url, token_file, timeout, retries)
    if key not in per_loop:
        per_loop[key] = Batcher(JudgeClient(url, token_file=token_file, timeout=timeout, retries=retries))
    return per_loop[key]


async def compute_score(data_source, solution_str, ground_truth, extra_info=None, judge_url=None, grader="loogle",
                        judge_token_file=None, judge_timeout=300.0, judge_retries=5, **kwargs):
    """Judge one rollout: {"score" in [0, 1], "acc" (verdict), judge_cached, judge_parse_failed,
    judge_latency_s}. The question is extra_info["question"]; the judge grades
    utils.graded_response(solution_str, grader)."""
    question = (extra_info or {}).get("question")
    if not isinstance(question, str) or not question:
        raise ValueError(
            f"extra_info of a {data_source!r} row has no 'question' string (got keys {sorted(extra_info or {})}): "
            "build the GRPO parquet with prepare_data, which stores the question in extra_info"
        )
    if not isinstance(ground_truth, str):
        raise TypeError(f"ground_truth must be the reference answer as a string, got {type(ground_truth).__name__}")
    url = judge_url or _judge.default_judge_url()
    batcher = _batcher(url, judge_token_file, float(judge_timeout), int(judge_retries))
    start = time.perf_counter()
    result = await batcher.judge(grader, question, ground_truth, graded_response(solution_str, grader))
    return {
        "score": float(result["score"]),
        "acc": float(result["verdict"]),
        "judge_cached": float(result["cached"]),
        "judge_parse_failed": float(result["parse_failed"]),
        "judge_latency_s": time.perf_counter() - start,
    }
