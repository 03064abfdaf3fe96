"""The judge server, served for real by uvicorn on free loopback ports.

Backends: lexical on real LooGLE QA; the openai backend against `transformers serve` with the
tiny fixture model (a garbage judge); scripted OpenAI-compatible endpoints (real HTTP servers)
for retries, outages, de-duplication and the concurrency bound.
"""

import ast
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from prompts import judge_messages
from reward_server import (
    LEXICAL_THRESHOLD,
    JudgeSettings,
    create_app,
    exact_match,
    lexical_judge,
    normalize_answer,
    token_f1,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(app, port=None):
    """Serve an ASGI app with uvicorn in a background thread; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def scripted_backend(statuses=(), reply="yes", delay_s=0.0):
    """A real OpenAI-compatible /v1/chat/completions endpoint that first answers the given error
    statuses, then `reply`. Records each request body and the peak number of concurrent calls."""
    app = FastAPI()
    app.state.statuses = list(statuses)
    app.state.calls = []
    app.state.auth_headers = []
    app.state.active = 0
    app.state.peak = 0

    @app.post("/v1/chat/completions")
    async def chat(body: dict, request: Request):
        app.state.calls.append(body)
        app.state.auth_headers.append(request.headers.get("authorization"))
        app.state.active += 1
        app.state.peak = max(app.state.peak, app.state.active)
        try:
            await asyncio.sleep(delay_s)
        finally:
            app.state.active -= 1
        if app.state.statuses:
            return JSONResponse({"error": {"message": "scripted failure"}}, status_code=app.state.statuses.pop(0))
        return {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
        }

    return app


def chat_settings(base_url, **overrides):
    return JudgeSettings(**{"backend": "vllm", "base_url": base_url, "judge_model": "judge", "retry_delay": 0.01, **overrides})


def judge(url, items, **kwargs):
    return httpx.post(f"{url}/judge", json={"items": items}, timeout=60, **kwargs)


def item(question="Q?", reference="Paris", response="Paris"):
    return {"question": question, "reference": reference, "response": response}


@pytest.fixture(scope="module")
def loogle_qa(loogle_sample):
    """[(passage_id, question, answer)] from the real LooGLE sample."""
    rows = [json.loads(line) for line in loogle_sample.read_text().splitlines() if line.strip()]
    return [(pid, qa["Q"], qa["A"]) for pid, row in enumerate(rows) for qa in ast.literal_eval(row["qa_pairs"])]


@pytest.fixture(scope="module")
def lexical_url():
    with serve(create_app(JudgeSettings(max_items=200, max_chars=5000))) as url:
        yield url


# --- Lexical judge as pure functions ---------------------------------------------------------------


def test_normalize_answer_follows_squad():
    assert normalize_answer("The Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("  An apple,\ta pear ") == "apple pear"
    assert normalize_answer("Theatre") == "theatre"  # articles only as whole words


def test_token_f1_and_verdict_threshold():
    assert token_f1("red apple pie", "apple pie") == pytest.approx(0.8)  # precision 1, recall 2/3
    assert token_f1("Paris", "London") == 0.0
    assert token_f1("Paris", "") == 0.0
    assert exact_match("The Eiffel Tower.", "eiffel tower")
    # One of two reference words among four response words: F1 = 1/3, below the threshold.
    low = lexical_judge("Committee P", "the committee is police watchdog")
    assert low["score"] == pytest.approx(1 / 3) and low["score"] < LEXICAL_THRESHOLD and not low["verdict"]
    assert lexical_judge("Committee P.", "committee p") == {"score": 1.0, "verdict": True}


# --- Lexical server on real LooGLE QA ------------------------------------------------------------------


@pytest.mark.slow
def test_health_is_open_and_names_backend(lexical_url):
    reply = httpx.get(f"{lexical_url}/health")
    assert reply.status_code == 200 and reply.json()["backend"] == "lexical"
    assert "/judge" in httpx.get(f"{lexical_url}/openapi.json").json()["paths"]


@pytest.mark.slow
def test_loogle_reference_scores_one_and_other_answers_score_low(lexical_url, loogle_qa):
    n_passages = 1 + max(pid for pid, _, _ in loogle_qa)
    # Each question gets its own reference, then the answer of a question from the next passage.
    other = {}
    for pid, q, _ in loogle_qa:
        other[q] = next(a for p, _, a in loogle_qa if p == (pid + 1) % n_passages and a != "No.")
    items = [item(q, a, a) for _, q, a in loogle_qa] + [item(q, a, other[q]) for _, q, a in loogle_qa]
    results = judge(lexical_url, items).json()["results"]
    n = len(loogle_qa)
    assert len(results) == 2 * n
    assert all(r["score"] == 1.0 and r["verdict"] for r in results[:n])
    wrong = results[n:]
    assert all(not r["verdict"] for r in wrong)
    assert max(r["score"] for r in wrong) < LEXICAL_THRESHOLD
    assert sum(r["score"] for r in wrong) / n < 0.15


@pytest.mark.slow
def test_order_is_kept_and_repeats_come_from_cache(lexical_url, loogle_qa):
    items = [item(q, a, resp) for _, q, a in loogle_qa[:12] for resp in (a, "I do not know", a.upper())]
    first = judge(lexical_url, items).json()["results"]
    for it, result in zip(items, first):
        assert result["score"] == pytest.approx(lexical_judge(it["reference"], it["response"])["score"])
    before = httpx.get(f"{lexical_url}/metrics").json()
    again = judge(lexical_url, list(reversed(items))).json()["results"]
    assert [r["score"] for r in again] == [r["score"] for r in reversed(first)]
    assert all(r["cached"] for r in again)
    after = httpx.get(f"{lexical_url}/metrics").json()
    assert after["cache_hits"] - before["cache_hits"] == len(items)
    assert after["requests"] - before["requests"] == 1
    assert after["request_latency_s"]["count"] >= 2 and after["request_latency_s"]["p50"] > 0


@pytest.mark.slow
def test_identical_items_in_one_request_are_judged_once(lexical_url):
    items = [item("Capital of France?", "Paris", "paris")] * 8
    before = httpx.get(f"{lexical_url}/metrics").json()
    results = judge(lexical_url, items).json()["results"]
    assert [r["cached"] for r in results] == [False] + [True] * 7
    assert httpx.get(f"{lexical_url}/metrics").json()["deduplicated"] - before["deduplicated"] == 7


@pytest.mark.slow
@pytest.mark.parametrize(
    "body, needle",
    [
        (b"{not json", "json"),
        (b'{"items": "not a list"}', "list"),
        (b'{"items": []}', "at least 1"),
        (b'{"items": [{"question": "q", "reference": "r"}]}', "response"),
        (b'{"items": [{"question": "q", "reference": 5, "response": "r"}]}', "string"),
    ],
)
def test_malformed_requests_get_422_with_the_problem(lexical_url, body, needle):
    reply = httpx.post(f"{lexical_url}/judge", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 422
    assert needle in reply.text.lower()


@pytest.mark.slow
def test_oversized_requests_get_413_naming_the_limit(lexical_url):
    too_many = judge(lexical_url, [item()] * 201)
    assert too_many.status_code == 413 and "201 items" in too_many.json()["detail"] and "--max_items" in too_many.text
    too_long = judge(lexical_url, [item(), item(response="x" * 5001)])
    assert too_long.status_code == 413
    assert "items[1].response has 5001 characters" in too_long.json()["detail"]
    assert httpx.get(f"{lexical_url}/metrics").json()["rejected_requests"] >= 2


@pytest.mark.slow
def test_bearer_token_is_required_on_every_route_but_health():
    with serve(create_app(JudgeSettings(auth_token="s3cret"))) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        for method, path in (("POST", "/judge"), ("GET", "/metrics"), ("GET", "/docs"), ("GET", "/openapi.json")):
            reply = httpx.request(method, f"{url}{path}", json={"items": [item()]})
            assert reply.status_code == 401, path
            assert reply.headers["www-authenticate"] == "Bearer"
        wrong = judge(url, [item()], headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "bearer token" in wrong.json()["detail"]
        right = judge(url, [item()], headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200 and right.json()["results"][0]["score"] == 1.0


def test_importing_the_server_starts_nothing():
    code = "import threading, reward_server; assert threading.active_count() == 1; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n" and done.stderr == ""


@pytest.mark.slow
def test_openai_key_reaches_the_backend_but_never_the_logs(tmp_path):
    key = "sk-test-DO-NOT-LOG-4242"
    backend_app = scripted_backend(reply="yes")
    port = free_port()
    with serve(backend_app) as backend_url:
        env = {**os.environ, "OPENAI_API_KEY": key}
        log = tmp_path / "server.log"
        with open(log, "w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, str(REPO_ROOT / "reward_server.py"), "--base_url", f"{backend_url}/v1",
                 "--backend", "openai", "--port", str(port), "--log_level", "debug"],
                stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                assert proc.poll() is None and time.time() < deadline, log.read_text()
                time.sleep(0.2)
            assert judge(url, [item()]).json()["results"][0]["verdict"] is True
            pages = httpx.get(f"{url}/health").text + httpx.get(f"{url}/metrics").text
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    assert backend_app.state.auth_headers == [f"Bearer {key}"]
    assert backend_app.state.calls[0]["model"] == "gpt-4.1-mini"
    text = log.read_text()
    assert "backend openai" in text and key not in text and key not in pages


def test_openai_key_from_env_else_from_the_gitignored_file(tmp_path, monkeypatch):
    import reward_server

    key_file = tmp_path / "openai_api_key.txt"
    monkeypatch.setattr(reward_server, "API_KEY_FILE", key_file)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert reward_server.read_openai_key() is None
    key_file.write_text("sk-from-file\n")
    assert reward_server.read_openai_key() == "sk-from-file"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert reward_server.read_openai_key() == "sk-from-env"
    assert reward_server.resolve_backend(None, None, None)[0] == "lexical"
    assert reward_server.resolve_backend(None, None, "sk-x")[0] == "openai"
    assert reward_server.resolve_backend(None, "http://127.0.0.1:8000/v1", "sk-x")[0] == "vllm"
    assert "sk-x" not in repr(JudgeSettings(backend="openai", api_key="sk-x"))


def test_openai_backend_without_key_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        JudgeSettings(backend="openai", api_key=None)
    with pytest.raises(ValueError, match="--base_url"):
        JudgeSettings(backend="vllm")


def test_cli_help_says_lexical_is_not_an_llm_judge():
    done = subprocess.run([sys.executable, "reward_server.py", "--help"], capture_output=True, text=True,
                          timeout=60, cwd=REPO_ROOT)
    assert done.returncode == 0
    help_text = " ".join(done.stdout.split())
    assert "NOT a stand-in for an LLM judge" in help_text and "--max_concurrency" in help_text


# --- LLM backends over HTTP ------------------------------------------------------------------------------


@pytest.mark.slow
def test_chat_backend_sends_the_judge_prompt_and_parses_the_verdict():
    backend_app = scripted_backend(reply="**Yes.** It matches.")
    with serve(backend_app) as backend_url, serve(create_app(chat_settings(backend_url + "/v1"))) as url:
        results = judge(url, [item("Who?", "Ada Lovelace", "Lovelace"), item("Who?", "Ada", "  ")]).json()["results"]
        assert results[0] == {"score": 1.0, "verdict": True, "cached": False, "parse_failed": False}
        assert results[1]["score"] == 0.0 and not results[1]["verdict"]  # empty answer: wrong, no call
        (call,) = backend_app.state.calls
        assert call["messages"] == judge_messages("Who?", "Ada Lovelace", "Lovelace")
        assert call["model"] == "judge" and call["temperature"] == 0.0


@pytest.mark.slow
def test_retries_on_429_and_5xx_then_succeeds():
    backend_app = scripted_backend(statuses=[429, 503, 500], reply="no")
    with serve(backend_app) as backend_url, serve(create_app(chat_settings(backend_url + "/v1"))) as url:
        reply = judge(url, [item(response="Lyon")])
        assert reply.status_code == 200 and reply.json()["results"][0]["verdict"] is False
        metrics = httpx.get(f"{url}/metrics").json()
        assert metrics["backend_calls"] == 4 and metrics["backend_retries"] == 3


@pytest.mark.slow
def test_backend_timeouts_are_retried_then_503():
    backend_app = scripted_backend(reply="yes", delay_s=1.5)
    with serve(backend_app) as backend_url:
        with serve(create_app(chat_settings(backend_url + "/v1", timeout=0.3, max_retries=1))) as url:
            reply = judge(url, [item()])
            assert reply.status_code == 503 and "timeout after 0.3s" in reply.json()["detail"]
            assert httpx.get(f"{url}/metrics").json()["backend_calls"] == 2


@pytest.mark.slow
def test_backend_rejection_is_502_with_the_reason():
    backend_app = scripted_backend(statuses=[401])
    with serve(backend_app) as backend_url, serve(create_app(chat_settings(backend_url + "/v1"))) as url:
        reply = judge(url, [item()])
        assert reply.status_code == 502 and "HTTP 401" in reply.json()["detail"]
        assert len(backend_app.state.calls) == 1  # not retried


@pytest.mark.slow
def test_backend_outage_is_503_and_the_server_recovers():
    backend_port = free_port()
    settings = chat_settings(f"http://127.0.0.1:{backend_port}/v1", max_retries=2, timeout=5)
    with serve(create_app(settings)) as url:
        down = judge(url, [item(), item(response="Rome")])
        assert down.status_code == 503
        assert "unavailable" in down.json()["detail"] and f"127.0.0.1:{backend_port}" in down.json()["detail"]
        assert httpx.get(f"{url}/metrics").json()["failed_items"] == 2
        with serve(scripted_backend(reply="yes"), port=backend_port):
            up = judge(url, [item(), item(response="Rome")])
            assert up.status_code == 200 and [r["score"] for r in up.json()["results"]] == [1.0, 1.0]


@pytest.mark.slow
def test_in_flight_duplicates_share_one_backend_call_and_concurrency_is_bounded():
    backend_app = scripted_backend(reply="yes", delay_s=0.3)
    with serve(backend_app) as backend_url, serve(create_app(chat_settings(backend_url + "/v1", max_concurrency=4))) as url:

        async def burst():
            async with httpx.AsyncClient(timeout=60) as client:
                same = [client.post(f"{url}/judge", json={"items": [item("Shared?")]}) for _ in range(5)]
                distinct = client.post(f"{url}/judge", json={"items": [item(f"Q{i}?") for i in range(12)]})
                return await asyncio.gather(*same, distinct)

        replies = asyncio.run(burst())
        assert all(r.status_code == 200 for r in replies)
        shared = [r.json()["results"][0] for r in replies[:5]]
        assert sorted(r["cached"] for r in shared) == [False] + [True] * 4
        assert len(backend_app.state.calls) == 13  # 1 shared + 12 distinct
        assert backend_app.state.peak == 4


# --- The openai backend against a real local OpenAI-compatible server (transformers serve) ---------


@pytest.fixture(scope="module")
def transformers_serve_url(tiny_model, tmp_path_factory):
    cli = Path(sys.executable).with_name("transformers")
    port = free_port()
    log = tmp_path_factory.mktemp("transformers_serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            [str(cli), "serve", str(tiny_model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
            stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"transformers serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_openai_backend_against_transformers_serve_counts_garbage_as_parse_failure(transformers_serve_url, tiny_model):
    settings = JudgeSettings(
        backend="openai", base_url=f"{transformers_serve_url}/v1", judge_model=str(tiny_model),
        api_key="sk-local-test", max_tokens=8, retry_delay=0.01,
    )
    with serve(create_app(settings)) as url:
        items = [item("Where was Picardo born?", "Jerez de la Frontera", "In Jerez"), item("Q?", "No.", "Yes.")]
        reply = judge(url, items)
        assert reply.status_code == 200
        for result in reply.json()["results"]:
            # The random tiny model cannot say yes/no: a defined score of 0, flagged, not cached.
            assert result == {"score": 0.0, "verdict": False, "cached": False, "parse_failed": True}
        metrics = httpx.get(f"{url}/metrics").json()
        assert metrics["backend"] == "openai" and metrics["judge_model"] == str(tiny_model)
        assert metrics["backend_calls"] == 2 and metrics["parse_failures"] == 2
        assert metrics["backend_latency_s"]["count"] == 2 and metrics["error_responses"] == 0
        again = judge(url, items[:1]).json()["results"][0]
        assert again["parse_failed"] and not again["cached"]
