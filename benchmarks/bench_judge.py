"""Load benchmark of the judge path GRPO uses: compute_score -> reward_server -> judge backend.

    python benchmarks/bench_judge.py                      # 256 prompts x 8 rollouts, 200 ms backend
    python benchmarks/bench_judge.py --runs 5 --max_concurrency 128

Starts, on loopback, benchmarks/slow_openai_server.py (an OpenAI-compatible endpoint that sleeps
--latency_ms per call) and reward_server.py --backend vllm in front of it. Then:
1. GRPO-shaped batch: --prompts x --rollouts rollouts, drawn per group from 4 candidate answers
   (so duplicates inside groups), scored through reward_function.compute_score the way verl 0.9.1
   does it: --workers reward-loop processes, each gathering all of its samples at once. Median
   wall time of --runs runs, each on fresh questions (a cold cache), against
   - ideal: unique items x latency / max_concurrency,
   - sequential: one compute_score call at a time (measured on --sequential_prompts prompts and
     extrapolated per sample to the full batch; the full run would take minutes).
   Every score is checked against the known verdict (lost or mis-ordered results are counted),
   and backend calls against the number of unique items.
2. --burst separate POST /judge requests at once (distinct items), counting non-200 replies.
"""

import argparse
import asyncio
import importlib.util
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from utils import extract_answer  # noqa: E402

N_CANDIDATES = 4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_reward_function():
    """Load reward_function.py by file path under a private name, as verl does."""
    spec = importlib.util.spec_from_file_location("bench_reward_function", REPO_ROOT / "reward_function.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grpo_batch(n_prompts, n_rollouts, salt, seed=0):
    """[(question, reference, rollout text, expected score)] in rollout order, groups contiguous."""
    rng = random.Random(seed)
    samples = []
    for p in range(n_prompts):
        question = f"[{salt}] What did passage item {p} record?"
        reference = f"item {p} recorded value {p * 7 % 1000}"
        candidates = [
            f"<think>recalling item {p}</think>\nAnswer: {reference}",  # correct once extracted
            f"item {p} recorded value {(p * 7 + 1) % 1000}",
            f"item {p + 1} recorded value {p * 7 % 1000}",
            "I do not know",
        ]
        for _ in range(n_rollouts):
            k = rng.randrange(N_CANDIDATES)
            samples.append((question, reference, candidates[k], 1.0 if k == 0 else 0.0))
    return samples


def unique_items(samples, extract_answer):
    return len({(q, ref, extract_answer(text)) for q, ref, text, _ in samples})


def wait_for(url, proc, what, timeout_s=60):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer {url} within {timeout_s}s")


# --- reward-loop worker processes (one event loop each, like verl's RewardLoopWorker) ----------------


def reward_worker(conn, judge_url):
    """Scores each chunk it receives with asyncio.gather over compute_score, on one long-lived loop."""
    compute_score = load_reward_function().compute_score
    loop = asyncio.new_event_loop()

    async def score(chunk):
        calls = [compute_score("bench", text, ref, {"question": q}, judge_url=judge_url) for q, ref, text, _ in chunk]
        return [r["score"] for r in await asyncio.gather(*calls)]

    while (chunk := conn.recv()) is not None:
        conn.send(loop.run_until_complete(score(chunk)))


class RewardWorkers:
    def __init__(self, n_workers, judge_url):
        ctx = multiprocessing.get_context("spawn")
        self.conns, self.procs = [], []
        for _ in range(n_workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=reward_worker, args=(child, judge_url), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def score(self, samples):
        size = -(-len(samples) // len(self.conns))
        chunks = [samples[i * size: (i + 1) * size] for i in range(len(self.conns))]
        for conn, chunk in zip(self.conns, chunks):
            conn.send(chunk)
        return [s for conn in self.conns for s in conn.recv()]

    def close(self):
        for conn in self.conns:
            conn.send(None)
        for proc in self.procs:
            proc.join(timeout=30)


def run_concurrent(workers, samples):
    start = time.perf_counter()
    scores = workers.score(samples)
    return time.perf_counter() - start, scores


def run_sequential(reward_function, samples, judge_url):
    async def run():
        scores = []
        for q, ref, text, _ in samples:
            scores.append((await reward_function.compute_score("bench", text, ref, {"question": q}, judge_url=judge_url))["score"])
        return scores

    start = time.perf_counter()
    scores = asyncio.run(run())
    return time.perf_counter() - start, scores


async def burst(judge_url, n_requests, salt):
    """n_requests single-item POST /judge at once. aiohttp, not httpx: with a thousand open
    connections httpx's pool was 5x slower here (9.2 s vs 1.8 s) and would measure the client."""
    items = [{"question": f"[{salt}] burst {i}?", "reference": f"answer {i}",
              "response": f"answer {i}" if i % 2 == 0 else "no idea"} for i in range(n_requests)]

    async def post(session, item):
        async with session.post(f"{judge_url}/judge", json={"items": [item]}) as reply:
            return reply.status, (await reply.json())["results"][0]["score"] if reply.status == 200 else None

    connector = aiohttp.TCPConnector(limit=n_requests)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        start = time.perf_counter()
        replies = await asyncio.gather(*(post(session, item) for item in items), return_exceptions=True)
        wall = time.perf_counter() - start
    errors = sum(1 for r in replies if isinstance(r, BaseException) or r[0] != 200)
    wrong = sum(1 for i, r in enumerate(replies)
                if not isinstance(r, BaseException) and r[0] == 200 and r[1] != (1.0 if i % 2 == 0 else 0.0))
    return wall, errors, wrong


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--latency_ms", type=float, default=200.0, help="backend latency per call")
    parser.add_argument("--max_concurrency", type=int, default=64, help="reward_server --max_concurrency")
    parser.add_argument("--workers", type=int, default=8, help="reward-loop processes (verl's reward.num_workers)")
    parser.add_argument("--runs", type=int, default=3, help="runs of the concurrent batch (median reported)")
    parser.add_argument("--sequential_prompts", type=int, default=8, help="prompts in the sequential sample")
    parser.add_argument("--sequential_runs", type=int, default=3)
    parser.add_argument("--burst", type=int, default=1000, help="concurrent single-item requests")
    args = parser.parse_args()

    backend_port, judge_port = free_port(), free_port()
    backend_url, judge_url = f"http://127.0.0.1:{backend_port}", f"http://127.0.0.1:{judge_port}"
    procs = []
    try:
        procs.append(subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "benchmarks" / "slow_openai_server.py"),
             "--port", str(backend_port), "--latency_ms", str(args.latency_ms)]))
        procs.append(subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "reward_server.py"), "--backend", "vllm",
             "--base_url", f"{backend_url}/v1", "--judge_model", "slow", "--port", str(judge_port),
             "--max_concurrency", str(args.max_concurrency), "--log_level", "warning"]))
        wait_for(f"{backend_url}/stats", procs[0], "slow_openai_server.py")
        wait_for(f"{judge_url}/health", procs[1], "reward_server.py")
        report(args, backend_url, judge_url)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def backend_completions(backend_url):
    return httpx.get(f"{backend_url}/stats").json()["completions"]


def report(args, backend_url, judge_url):
    reward_function = load_reward_function()
    latency_s = args.latency_ms / 1000
    n_samples = args.prompts * args.rollouts
    print(f"batch: {args.prompts} prompts x {args.rollouts} rollouts = {n_samples} samples; backend latency "
          f"{args.latency_ms:g} ms; reward_server --max_concurrency {args.max_concurrency}; {args.workers} reward workers; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    walls, ideals, lost, extra_calls = [], [], 0, 0
    workers = RewardWorkers(args.workers, judge_url)
    try:
        # verl's reward workers are long-lived: one warm-up step per worker outside the timing.
        workers.score(grpo_batch(args.workers, 1, salt="warm-up"))
        for run in tqdm(range(args.runs), desc="concurrent batch runs"):
            samples = grpo_batch(args.prompts, args.rollouts, salt=f"run{run}")
            n_unique = unique_items(samples, extract_answer)
            calls_before = backend_completions(backend_url)
            wall, scores = run_concurrent(workers, samples)
            extra_calls += backend_completions(backend_url) - calls_before - n_unique
            lost += sum(1 for s, (_, _, _, expected) in zip(scores, samples) if s != expected) + n_samples - len(scores)
            walls.append(wall)
            ideals.append(n_unique * latency_s / args.max_concurrency)
    finally:
        workers.close()

    seq_samples_n = args.sequential_prompts * args.rollouts
    seq_per_sample = []
    for run in tqdm(range(args.sequential_runs), desc="sequential sample runs"):
        samples = grpo_batch(args.sequential_prompts, args.rollouts, salt=f"seq{run}", seed=run)
        wall, scores = run_sequential(reward_function, samples, judge_url)
        lost += sum(1 for s, (_, _, _, expected) in zip(scores, samples) if s != expected)
        seq_per_sample.append(wall / seq_samples_n)
    sequential = statistics.median(seq_per_sample) * n_samples

    burst_wall, burst_errors, burst_wrong = asyncio.run(burst(judge_url, args.burst, salt="burst"))
    metrics = httpx.get(f"{judge_url}/metrics").json()

    wall, ideal = statistics.median(walls), statistics.median(ideals)
    print(f"unique items per batch: {round(ideal * args.max_concurrency / latency_s)} of {n_samples}")
    print(f"concurrent compute_score: median {wall:.2f} s over {args.runs} runs (all: {', '.join(f'{w:.2f}' for w in walls)})")
    print(f"ideal (unique x latency / max_concurrency): {ideal:.2f} s  ->  {wall / ideal:.2f}x ideal (target <= 1.3x)")
    print(f"sequential, one compute_score at a time: {sequential:.1f} s (extrapolated from {args.sequential_runs} runs of "
          f"{seq_samples_n} samples, median {statistics.median(seq_per_sample) * 1000:.1f} ms/sample)  ->  "
          f"{sequential / wall:.1f}x speed-up")
    print(f"lost or wrong results: {lost}; backend calls beyond one per unique item: {extra_calls}")
    print(f"{args.burst} concurrent POST /judge requests: {burst_wall:.2f} s, {burst_errors} errors, {burst_wrong} wrong scores")
    print(f"server: {metrics['requests']} requests, {metrics['items']} items, {metrics['cache_hits']} cache hits, "
          f"{metrics['deduplicated']} de-duplicated, {metrics['backend_calls']} backend calls, "
          f"{metrics['backend_retries']} retries, {metrics['error_responses']} error responses; request latency "
          f"p50 {metrics['request_latency_s']['p50']:.3f} s, p99 {metrics['request_latency_s']['p99']:.3f} s")


if __name__ == "__main__":
    main()
