"""The judge server, served for real by uvicorn on free loopback ports.

Backends: lexical on LooGLE-format QA (the session's judge server); the openai backend against
`transformers serve` with the tiny fixture model (a garbage judge); scripted OpenAI-compatible
endpoints (real HTTP servers) for graders, verdict budgets, retries, refusals, outages,
de-duplication and the concurrency bound.
"""

import ast
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from helpers import free_port, scripted_backend, serve, wait_for_health
from judge import LEXICAL_THRESHOLD, lexical_judge
from prompts import judge_messages
from reward_server import DEFAULT_MAX_TOKENS, MB, REJECTIONS_IN_A_ROW_FATAL, JudgeSettings, create_app, resolve_backend

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_MODULES = ("reward_server.py", "judge.py", "prompts.py", "utils.py")


def chat_settings(base_url, **overrides):
    return JudgeSettings(**{"backend": "vllm", "base_url": base_url, "judge_model": "judge", "retry_delay": 0.01, **overrides})


def judge(url, items, grader=None, **kwargs):
    body = {"items": items} if grader is None else {"grader": grader, "items": items}
    return httpx.post(f"{url}/judge", json=body, timeout=60, **kwargs)


def item(question="Q?", reference="Paris", response="Paris"):
    return {"question": question, "reference": reference, "response": response}


def metrics(url):
    return httpx.get(f"{url}/metrics").json()


@pytest.fixture(scope="module")
def loogle_qa(loogle_corpus):
    """[(passage_id, question, answer)] from the LooGLE-format corpus."""
    rows = [json.loads(line) for line in loogle_corpus.read_text().splitlines() if line.strip()]
    return [(pid, qa["Q"], qa["A"]) for pid, row in enumerate(rows) for qa in ast.literal_eval(row["qa_pairs"])]


def run_server(args, cwd, env=None, timeout=60):
    """reward_server.py with these arguments, expected to exit (a refused configuration)."""
    env = {k: v for k, v in (env or os.environ).items() if k not in ("OPENAI_API_KEY", "JUDGE_TOKEN_FILE", "JUDGE_AUTH_TOKEN")}
    return subprocess.run([sys.executable, "reward_server.py", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


@pytest.fixture
def server_copy(tmp_path):
    """The server's modules copied to a folder of their own, so that no openai_api_key.txt of
    the repo can configure a judge behind the test's back."""
    for name in SERVER_MODULES:
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    return tmp_path


# --- Lexical server (the session's judge server) on LooGLE-format QA -------------------------------


@pytest.mark.slow
def test_health_names_backend_and_graders(lexical_judge_url):
    health = httpx.get(f"{lexical_judge_url}/health").json()
    assert health["status"] == "ok" and health["backend"] == "lexical"
    assert health["graders"] == ["loogle", "squad"]
    assert "/judge" in httpx.get(f"{lexical_judge_url}/openapi.json").json()["paths"]


@pytest.mark.slow
def test_loogle_reference_scores_one_and_other_answers_score_low(lexical_judge_url, loogle_qa):
    n_passages = 1 + max(pid for pid, _, _ in loogle_qa)
    # Each question gets its own reference, then the answer of a question from the next passage.
    other = {q: next(a for p, _, a in loogle_qa if p == (pid + 1) % n_passages) for pid, q, _ in loogle_qa}
    items = [item(q, a, a) for _, q, a in loogle_qa] + [item(q, a, other[q]) for _, q, a in loogle_qa]
    results = judge(lexical_judge_url, items).json()["results"]
    n = len(loogle_qa)
    assert len(results) == 2 * n
    assert all(r["score"] == 1.0 and r["verdict"] and r["failure"] is None for r in results[:n])
    wrong = results[n:]
    assert all(r["score"] == pytest.approx(lexical_judge(i["reference"], i["response"])["score"]) for i, r in zip(items[n:], wrong))
    assert sum(r["verdict"] for r in wrong) < n / 10
    assert sum(r["score"] for r in wrong) / n < LEXICAL_THRESHOLD


@pytest.mark.slow
def test_order_is_kept_and_repeats_come_from_cache(lexical_judge_url, loogle_qa):
    items = [item(q, a, resp) for _, q, a in loogle_qa[:12] for resp in (a, "I do not know", a.upper())]
    first = judge(lexical_judge_url, items).json()["results"]
    for it, result in zip(items, first):
        assert result["score"] == pytest.approx(lexical_judge(it["reference"], it["response"])["score"])
    before = metrics(lexical_judge_url)
    again = judge(lexical_judge_url, list(reversed(items))).json()["results"]
    assert [r["score"] for r in again] == [r["score"] for r in reversed(first)]
    assert all(r["cached"] for r in again)
    after = metrics(lexical_judge_url)
    assert after["cache_hits"] - before["cache_hits"] == len(items)
    assert after["requests"] - before["requests"] == 1
    assert after["request_latency_s"]["count"] >= 2 and after["request_latency_s"]["p50"] > 0


@pytest.mark.slow
def test_identical_items_in_one_request_are_judged_once(lexical_judge_url):
    items = [item("Capital of France, once only?", "Paris", "paris")] * 8
    before = metrics(lexical_judge_url)
    results = judge(lexical_judge_url, items).json()["results"]
    assert [r["cached"] for r in results] == [False] + [True] * 7
    assert metrics(lexical_judge_url)["deduplicated"] - before["deduplicated"] == 7


@pytest.mark.slow
@pytest.mark.parametrize(
    "body, needle",
    [
        (b"{not json", "json"),
        (b'{"items": "not a list"}', "list"),
        (b'{"items": []}', "at least 1"),
        (b'{"items": [{"question": "q", "reference": "r"}]}', "response"),
        (b'{"items": [{"question": "q", "reference": 5, "response": "r"}]}', "string"),
        (b'{"grader": "trivia", "items": [{"question": "q", "reference": "r", "response": "r"}]}',
         "unknown grader 'trivia': known graders are loogle, squad"),
    ],
)
def test_malformed_requests_get_422_with_the_problem(lexical_judge_url, body, needle):
    reply = httpx.post(f"{lexical_judge_url}/judge", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 422
    assert needle in reply.text.lower()


@pytest.mark.slow
def test_too_many_items_get_413_and_an_over_long_item_gets_no_verdict_with_the_limit(lexical_judge_url):
    before = metrics(lexical_judge_url)
    too_many = judge(lexical_judge_url, [item()] * 1025)
    assert too_many.status_code == 413 and "more than 1024 items" in too_many.json()["detail"] and "--max_items" in too_many.text
    assert metrics(lexical_judge_url)["rejected_requests"] - before["rejected_requests"] == 1
    # One over-long rollout must not fail the request (a whole GRPO step) it came in.
    reply = judge(lexical_judge_url, [item(), item(response="x" * 32_001)])
    assert reply.status_code == 200
    fine, too_long = reply.json()["results"]
    assert fine["verdict"] and fine["failure"] is None
    assert too_long["parse_failed"] and too_long["score"] == 0.0
    assert too_long["failure"] == "the item's response has 32001 characters; the limit is 32000 (--max_chars)"
    assert metrics(lexical_judge_url)["rejected_items"] - before["rejected_items"] == 1


@pytest.mark.slow
def test_bearer_token_is_required_on_every_route_but_health():
    with serve(create_app(JudgeSettings(backend="lexical", auth_token="s3cret"))) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        for method, path in (("POST", "/judge"), ("GET", "/metrics"), ("GET", "/docs"), ("GET", "/openapi.json")):
            reply = httpx.request(method, f"{url}{path}", json={"items": [item()]})
            assert reply.status_code == 401, path
            assert reply.headers["www-authenticate"] == "Bearer"
        wrong = judge(url, [item()], headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "bearer token" in wrong.json()["detail"]
        right = judge(url, [item()], headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200 and right.json()["results"][0]["score"] == 1.0


# --- Start-up: what the server refuses before it listens -------------------------------------------


def test_importing_the_server_starts_nothing():
    code = "import threading, reward_server; assert threading.active_count() == 1; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n" and done.stderr == ""


def test_without_a_configured_judge_the_server_does_not_start(server_copy):
    done = run_server(["--port", str(free_port())], server_copy)
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "no judge configured" in message
    assert "OPENAI_API_KEY" in message and "--backend vllm --base_url" in message and "--judge_model" in message
    assert "--backend lexical" in message
    with pytest.raises(ValueError, match="no judge configured"):
        resolve_backend(None, None, None)
    assert resolve_backend(None, None, "sk-x")[0] == "openai"
    assert resolve_backend(None, "http://127.0.0.1:8000/v1", "sk-x")[0] == "vllm"
    assert resolve_backend("lexical", None, "sk-x")[0] == "lexical"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "judge-node"])
def test_a_non_loopback_address_without_a_token_is_refused(server_copy, host):
    port = free_port()
    done = run_server(["--backend", "lexical", "--host", host, "--port", str(port)], server_copy)
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert f"refusing to listen on {host} without a bearer token" in message and "--auth_token_file" in message


def test_a_token_short_enough_to_guess_is_refused_on_any_address(server_copy):
    token_file = server_copy / "judge.token"
    token_file.write_text("x\n")
    for host in ("127.0.0.1", "0.0.0.0"):
        done = run_server(["--backend", "lexical", "--host", host, "--auth_token_file", str(token_file)], server_copy)
        assert done.returncode == 2
        assert "the judge server's token has 1 characters; it needs at least 16" in " ".join(done.stderr.split())


def test_an_unreadable_token_file_is_refused_naming_it(server_copy):
    missing = server_copy / "no-such.token"
    done = run_server(["--backend", "lexical", "--auth_token_file", str(missing)], server_copy)
    assert done.returncode == 2 and f"cannot read the judge token file {missing}" in done.stderr


def test_the_openai_key_is_not_sent_to_another_base_url(server_copy):
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-DO-NOT-SEND-4242"}
    env.pop("VLLM_API_KEY", None)
    done = run_server(["--backend", "openai", "--base_url", "http://127.0.0.1:9/v1"], server_copy, env={**env})
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "it is sent to api.openai.com only: for another --base_url set VLLM_API_KEY" in message


@pytest.mark.slow
def test_a_named_key_reaches_another_backend_the_openai_key_never_does_and_neither_is_logged(tmp_path):
    openai_key, key = "sk-test-DO-NOT-SEND-4242", "local-vllm-key-DO-NOT-LOG-4242"
    backend_app = scripted_backend(reply="yes")
    port = free_port()
    with serve(backend_app) as backend_url:
        env = {**os.environ, "OPENAI_API_KEY": openai_key, "VLLM_API_KEY": key}
        log = tmp_path / "server.log"
        with open(log, "w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, str(REPO_ROOT / "reward_server.py"), "--base_url", f"{backend_url}/v1",
                 "--backend", "openai", "--port", str(port), "--log_level", "debug"],
                stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_health(url, proc, log, timeout=60)
            assert judge(url, [item()]).json()["results"][0]["verdict"] is True
            pages = httpx.get(f"{url}/health").text + httpx.get(f"{url}/metrics").text
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    assert backend_app.state.auth_headers == [f"Bearer {key}"]
    assert backend_app.state.calls[0]["model"] == "gpt-4.1-mini"
    text = log.read_text()
    assert "backend openai" in text and key not in text + pages and openai_key not in text + pages


def test_openai_key_from_env_else_from_the_gitignored_file(tmp_path, monkeypatch):
    import utils

    key_file = tmp_path / "openai_api_key.txt"
    monkeypatch.setattr(utils, "API_KEY_FILE", key_file)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert utils.read_openai_key() is None
    key_file.write_text("sk-from-file\n")
    assert utils.read_openai_key() == "sk-from-file"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert utils.read_openai_key() == "sk-from-env"
    assert "sk-x" not in repr(JudgeSettings(backend="openai", api_key="sk-x"))
    assert "s3cret" not in repr(JudgeSettings(backend="lexical", auth_token="s3cret"))


def test_incomplete_llm_backends_are_refused_with_the_fix():
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
    assert "--auth_token_file" in help_text and "verdict budget" in help_text


# --- LLM backends over HTTP ------------------------------------------------------------------------------


@pytest.mark.slow
def test_chat_backend_sends_the_judge_prompt_with_the_verdict_budget_and_parses_the_verdict():
    backend_app = scripted_backend(reply="**Yes.** It matches.")
    with serve(backend_app) as backend_url, serve(create_app(chat_settings(backend_url + "/v1"))) as url:
        results = judge(url, [item("Who?", "Ada Lovelace", "Lovelace"), item("Who?", "Ada", "  ")]).json()["results"]
        assert results[0] == {"score": 1.0, "verdict": True, "cached": False, "parse_failed": False, "failure": None}
        assert results[1]["score"] == 0.0 and not results[1]["verdict"] and not results[1]["parse_failed"]  # empty: no call
        (call,) = backend_app.state.calls
        assert call["messages"] == judge_messages("Who?", "Ada Lovelace", "Lovelace", "loogle")
        assert call["model"] == "judge" and call["temperature"] == 0.0
        assert call["max_tokens"] == DEFAULT_MAX_TOKENS == httpx.get(f"{url}/health").json()["max_tokens"]


@pytest.mark.slow
def test_each_grader_gets_its_own_prompt_verdict_rule_and_cache_entry():
    backend_app = scripted_backend(reply="Yes, and no contradiction.")  # loogle: both words; squad (SEAL): no
    with serve(backend_app) as backend_url, serve(create_app(chat_settings(backend_url + "/v1"))) as url:
        same = item("Topic: Paris\nWhat is the capital of France?", "Paris", "Paris, the capital")
        for _ in range(2):  # the second round comes from the cache, per grader
            loogle = judge(url, [same]).json()["results"][0]
            squad = judge(url, [same], grader="squad").json()["results"][0]
        assert loogle["parse_failed"] and loogle["failure"] == "the reply is not a yes/no verdict" and not loogle["cached"]
        assert squad == {"score": 0.0, "verdict": False, "cached": True, "parse_failed": False, "failure": None}
        calls = backend_app.state.calls
        # loogle's unparsed reply is not cached (asked again); squad's verdict is, once
        assert [c["messages"] for c in calls] == [judge_messages(same["question"], same["reference"], same["response"], g)
                                                  for g in ("loogle", "squad", "loogle")]
        m = metrics(url)
        assert m["judged"] == 3 and m["parse_failures"] == 2 and m["cache_hits"] == 1
        assert m["parse_failure_share"] == pytest.approx(2 / 3)

    backend_app = scripted_backend(reply="yes")
    with serve(backend_app) as backend_url, serve(create_app(chat_settings(backend_url + "/v1"))) as url:
        results = [judge(url, [same], grader=g).json()["results"][0] for g in ("loogle", "squad", "loogle", "squad")]
        assert [r["cached"] for r in results] == [False, False, True, True]
        assert len(backend_app.state.calls) == 2  # one per grader
        # SEAL sends its grader as one user message, no system message
        (squad_message,) = backend_app.state.calls[1]["messages"]
        assert squad_message["role"] == "user" and "Student answer: Paris, the capital" in squad_message["content"]


@pytest.mark.slow
def test_a_reply_cut_inside_its_think_block_is_no_verdict_with_the_reason():
    backend_app = scripted_backend(reply="<think>The response says Paris, which is the gold answer, so yes", finish_reason="length")
    with serve(backend_app) as backend_url, serve(create_app(chat_settings(backend_url + "/v1", max_tokens=64))) as url:
        (result,) = judge(url, [item()]).json()["results"]
        assert result["score"] == 0.0 and not result["verdict"] and result["parse_failed"]
        assert result["failure"] == "reply cut at --max_tokens 64 inside its think block: raise --max_tokens"
        assert backend_app.state.calls[0]["max_tokens"] == 64
        m = metrics(url)
        assert m["truncated_replies"] == 1 and m["parse_failures"] == 1 and m["parse_failure_share"] == 1.0


@pytest.mark.slow
def test_retries_on_429_and_5xx_then_succeeds():
    backend_app = scripted_backend(statuses=[429, 503, 500, 408], reply="no")
    with serve(backend_app) as backend_url, serve(create_app(chat_settings(backend_url + "/v1"))) as url:
        reply = judge(url, [item(response="Lyon")])
        assert reply.status_code == 200 and reply.json()["results"][0]["verdict"] is False
        m = metrics(url)
        assert m["backend_calls"] == 5 and m["backend_retries"] == 4


@pytest.mark.slow
def test_backend_timeouts_are_retried_then_503():
    backend_app = scripted_backend(reply="yes", delay_s=1.5)
    with serve(backend_app) as backend_url:
        with serve(create_app(chat_settings(backend_url + "/v1", timeout=0.3, max_retries=1))) as url:
            reply = judge(url, [item()])
            assert reply.status_code == 503 and "timeout after 0.3s" in reply.json()["detail"]
            assert metrics(url)["backend_calls"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_backend_refusing_the_server_is_502_with_the_fix(status):
    backend_app = scripted_backend(statuses=[status])
    with serve(backend_app) as backend_url, serve(create_app(chat_settings(backend_url + "/v1"))) as url:
        reply = judge(url, [item()])
        assert reply.status_code == 502
        assert f"HTTP {status}" in reply.json()["detail"] and "--judge_model" in reply.json()["detail"]
        assert len(backend_app.state.calls) == 1  # not retried


@pytest.mark.slow
@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_backend_refusing_one_item_scores_it_with_the_reason_and_judges_the_rest(status):
    # The backend refuses the first (over-long) item, as vLLM does beyond its context length.
    backend_app = scripted_backend(statuses=[status], reply="yes")
    with serve(backend_app) as backend_url, serve(create_app(chat_settings(backend_url + "/v1", max_concurrency=1))) as url:
        replies = judge(url, [item(response="x " * 5000), item()])
        assert replies.status_code == 200
        refused, judged = replies.json()["results"]
        assert refused["parse_failed"] and refused["score"] == 0.0
        assert refused["failure"].startswith(f"the backend refused the item: HTTP {status}")
        assert judged["verdict"] is True
        assert len(backend_app.state.calls) == 2  # the refused item was not retried
        m = metrics(url)
        assert m["rejected_items"] == 1 and m["parse_failures"] == 1 and m["error_responses"] == 0


@pytest.mark.slow
def test_every_item_refused_is_the_configuration_and_fatal():
    backend_app = scripted_backend(statuses=[400] * 100)
    with serve(backend_app) as backend_url, serve(create_app(chat_settings(backend_url + "/v1", max_concurrency=4))) as url:
        first = judge(url, [item(f"Q{i}?") for i in range(REJECTIONS_IN_A_ROW_FATAL - 1)])
        assert first.status_code == 200 and all(r["parse_failed"] for r in first.json()["results"])
        fatal = judge(url, [item("one more?")])
        assert fatal.status_code == 502
        assert f"refused {REJECTIONS_IN_A_ROW_FATAL} items in a row" in fatal.json()["detail"]


@pytest.mark.slow
def test_backend_outage_is_503_and_the_server_recovers():
    backend_port = free_port()
    settings = chat_settings(f"http://127.0.0.1:{backend_port}/v1", max_retries=2, timeout=5)
    with serve(create_app(settings)) as url:
        down = judge(url, [item(), item(response="Rome")])
        assert down.status_code == 503
        assert "unavailable" in down.json()["detail"] and f"127.0.0.1:{backend_port}" in down.json()["detail"]
        assert metrics(url)["failed_items"] == 2
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


@pytest.mark.slow
def test_openai_backend_against_transformers_serve_counts_garbage_as_no_verdict(transformers_serve_url, tiny_model):
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
            assert (result["score"], result["verdict"], result["cached"], result["parse_failed"]) == (0.0, False, False, True)
            assert result["failure"].startswith(("reply cut at --max_tokens 8", "the reply is not a yes/no verdict"))
        m = metrics(url)
        assert m["backend"] == "openai" and m["judge_model"] == str(tiny_model)
        assert m["backend_calls"] == 2 and m["parse_failures"] == 2
        assert m["backend_latency_s"]["count"] == 2 and m["error_responses"] == 0
        again = judge(url, items[:1]).json()["results"][0]
        assert again["parse_failed"] and not again["cached"]


# --- Hostile and heavy input: the server answers it, bounded, and keeps serving ---------------------


def reply_length(reply):
    head = reply.split(b"\r\n\r\n", 1)[0].lower()
    return int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]) if b"content-length: " in head else 0


def raw_post(url, head, chunks, timeout=30):
    """POST /judge over a plain socket: `head` headers, then `chunks` of body while the server
    reads; returns (status line, bytes sent before the reply came)."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(f"POST /judge HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{head}\r\n".encode())
        sock.setblocking(False)
        reply = b""
        for chunk in chunks:
            try:
                reply += sock.recv(65536)
            except BlockingIOError:
                pass
            if reply:
                break
            try:
                sock.sendall(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        sock.settimeout(10)
        while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < reply_length(reply):
            more = sock.recv(65536)
            if not more:
                break
            reply += more
    return reply.split(b"\r\n", 1)[0].decode(), sent, reply


@pytest.mark.slow
def test_a_body_over_max_request_mb_is_413_before_it_is_read():
    with serve(create_app(JudgeSettings(backend="lexical", max_request_mb=1))) as url:
        # Declared 200 MB: refused on the header, before any of the body arrives.
        status, sent, reply = raw_post(url, f"Content-Length: {200 * MB}\r\n", [b" " * 65536] * 3200)
        assert status == "HTTP/1.1 413 Request Entity Too Large" and sent < 8 * MB
        assert b"over 1 MB (--max_request_mb)" in reply
        # Streamed without a length: counted, and cut as soon as it is over.
        chunk = b"10000\r\n" + b" " * 65536 + b"\r\n"
        status, sent, _ = raw_post(url, "Transfer-Encoding: chunked\r\n", [chunk] * 3200)
        assert status == "HTTP/1.1 413 Request Entity Too Large" and sent < 8 * MB
        assert judge(url, [item()]).status_code == 200
        assert metrics(url)["rejected_requests"] == 2


def peak_memory_mb(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


@pytest.mark.slow
def test_a_million_items_are_refused_at_the_item_limit_without_parsing_them(tmp_path):
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "w") as log_file:
        proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "reward_server.py"), "--backend", "lexical", "--port", str(port)],
                                stdout=log_file, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, proc, log, timeout=60)
        assert judge(url, [item()]).status_code == 200
        before = peak_memory_mb(proc.pid)
        body = json.dumps({"items": [{"question": "q", "reference": "r", "response": "x"}] * 1_000_000}).encode()
        started = time.perf_counter()
        reply = httpx.post(f"{url}/judge", content=body, headers={"content-type": "application/json"}, timeout=120)
        seconds = time.perf_counter() - started
        grown = peak_memory_mb(proc.pid) - before
        print(f"\n1M items ({len(body) / MB:.0f} MB): {reply.status_code} in {seconds:.2f} s, peak memory +{grown:.0f} MB")
        assert reply.status_code == 413 and "the limit is 1024 (--max_items)" in reply.json()["detail"]
        assert grown < 4 * len(body) / MB  # the body and its text; 1M parsed items took 1 GB
        assert judge(url, [item()]).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.slow
@pytest.mark.parametrize("body, needle", [
    (b"[" * 100_000 + b"]" * 100_000, "nests deeper"),
    (b'{"items": [{"question": NaN, "reference": "r", "response": "x"}]}', "NaN is not a JSON number"),
    (b'{"items": [{"question": "q", "reference": Infinity, "response": "x"}]}', "Infinity is not a JSON number"),
    (b'{"grader": "\\ud800", "items": [{"question": "q", "reference": "r", "response": "x"}]}', "unknown grader '\\\\ud800'"),
    (b'{"items": [{"question": "q", "reference": ["\\udfff"], "response": "x"}]}', "valid string"),
    (json.dumps({"items": [{"question": "q", "reference": "x" * 5_000_000, "response": ["x" * 5_000_000]}]}).encode(), "valid string"),
    (json.dumps({"grader": "g" * 5_000_000, "items": [item()]}).encode(), "unknown grader 'ggg"),
    (json.dumps({"items": [1] * 1000}).encode(), "and 980 more problems"),
])
def test_hostile_bodies_get_a_short_422_and_the_server_keeps_serving(lexical_judge_url, body, needle):
    reply = httpx.post(f"{lexical_judge_url}/judge", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert reply.status_code == 422 and needle in reply.text
    assert len(reply.content) < 5000  # the problems, never the input echoed back
    assert judge(lexical_judge_url, [item()]).status_code == 200


@pytest.mark.slow
def test_the_cache_holds_32_byte_hashes_whatever_the_items_size():
    app = create_app(JudgeSettings(backend="lexical"))
    long_items = [item(f"Q{i}?" + "q" * 30_000, "r" * 30_000, "r" * 30_000) for i in range(40)]
    with serve(app) as url:
        assert all(r["score"] == 1.0 for r in judge(url, long_items).json()["results"])
        assert all(r["cached"] for r in judge(url, long_items).json()["results"])
        assert judge(url, long_items[:1], grader="squad").json()["results"][0]["cached"] is False  # graders apart
    cache = app.state.service.cache
    assert len(cache) == 41 and all(isinstance(k, bytes) and len(k) == 32 for k in cache)


@pytest.mark.slow
@pytest.mark.parametrize("content", [7, ["yes"], {"text": "yes"}, True])
def test_backend_content_that_is_not_text_is_a_backend_failure_and_the_server_keeps_serving(content):
    replies = [content, "yes"]
    backend_app = scripted_backend(reply=lambda body: replies.pop(0))
    with serve(backend_app) as backend_url, serve(create_app(chat_settings(backend_url + "/v1"))) as url:
        reply = judge(url, [item()])
        assert reply.status_code == 502
        assert f"not a chat completion (its message content is a {type(content).__name__}, not text)" in reply.json()["detail"]
        assert judge(url, [item()]).json()["results"][0]["verdict"] is True


@pytest.mark.slow
def test_backend_errors_that_echo_the_key_are_redacted_in_replies_and_logs(caplog):
    key = "vllm-key-DO-NOT-ECHO-0123456789"
    backend_app = FastAPI()

    @backend_app.post("/v1/chat/completions")
    async def echo_key(request: Request):
        status = 401 if len(backend_app.state.seen) == 0 else 400
        backend_app.state.seen.append(request.headers["authorization"])
        return JSONResponse({"error": {"message": f"Incorrect API key provided: {request.headers['authorization']}"}},
                            status_code=status)

    backend_app.state.seen = []
    with serve(backend_app) as backend_url, serve(create_app(chat_settings(backend_url + "/v1", api_key=key))) as url:
        refused = judge(url, [item()])
        item_refused = judge(url, [item("Other?")])
    assert backend_app.state.seen == [f"Bearer {key}"] * 2
    assert refused.status_code == 502 and "Incorrect API key provided: Bearer [redacted]" in refused.json()["detail"]
    failure = item_refused.json()["results"][0]["failure"]
    assert failure.startswith("the backend refused the item: HTTP 400") and "[redacted]" in failure
    assert key not in refused.text + item_refused.text + caplog.text


# --- exact_match backend (one-word answers: the synthetic world) ---------------------------------


def test_exact_match_backend_grades_the_normalised_answer_only():
    with serve(create_app(JudgeSettings(backend="exact_match"))) as url:
        assert httpx.get(f"{url}/health").json()["backend"] == "exact_match"
        items = [{"question": "What color does Vikfi Selwen like?", "reference": "teal", "response": r}
                 for r in ("teal", " Teal.", "the teal", "teal green", "green", "", "Vikfi Selwen likes the color teal.")]
        results = judge(url, items).json()["results"]
    assert [r["verdict"] for r in results] == [True, True, True, False, False, False, False]
    assert [r["score"] for r in results] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]  # no credit for overlap


def test_pipeline_refuses_an_exact_match_judge_nobody_chose(tmp_path):
    """A judge left running with the exact_match backend is not taken for an LLM judge."""
    with serve(create_app(JudgeSettings(backend="exact_match"))) as url:
        done = subprocess.run([sys.executable, "scripts/preflight.py", "judge", "--url", url, "--stage", "GRPO"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        chosen = subprocess.run([sys.executable, "scripts/preflight.py", "judge", "--url", url, "--stage", "GRPO",
                                 "--backend", "exact_match"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "exact_match judge, which no one chose" in done.stderr
    assert chosen.returncode == 0, chosen.stderr
