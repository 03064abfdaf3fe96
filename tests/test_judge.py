"""judge.py: the lexical judge, the verdict rules of both graders on the odd replies judges really
give, the bearer token's sources, and the client's one retry rule (sync and async) against a real
scripted /judge endpoint served by uvicorn on loopback."""

import asyncio
import json
import logging

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from helpers import free_port, serve
from judge import (
    GRADERS,
    LEXICAL_THRESHOLD,
    JudgeClient,
    JudgeError,
    JudgeRequestError,
    JudgeUnavailableError,
    check_server_token,
    exact_match,
    lexical_judge,
    normalize_answer,
    parse_verdict,
    read_auth_token,
    read_token_file,
    refuse_open_bind,
    token_f1,
)
from prompts import JUDGE_PROMPTS

# --- Lexical judge ------------------------------------------------------------------------------


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


# --- Verdicts -----------------------------------------------------------------------------------


def test_every_grader_has_a_prompt_and_a_verdict_rule():
    assert set(GRADERS) == set(JUDGE_PROMPTS) == {"loogle", "squad"}


@pytest.mark.parametrize(
    "reply, verdict",
    [
        ("yes", True),
        ("No", False),
        ("YES.", True),
        ("**Yes**", True),
        ("Verdict: no", False),
        ("yes\n\nThe response names the same city.", True),  # trailing explanation
        ("No. The gold answer is Paris, the response says Lyon.", False),
        ("  \n no \n", False),
        ("<think>Yes or no? The city differs, so no.</think>\nNo", False),  # reasoning judge
        ("<THINK>could be yes, could be no</THINK> yes", True),
    ],
)
def test_loogle_clear_verdicts(reply, verdict):
    assert parse_verdict(reply) is verdict
    assert parse_verdict(reply, "loogle") is verdict


@pytest.mark.parametrize(
    "reply",
    [
        "",  # empty
        None,
        "   ",
        "yes, no",  # both words
        "Yes and no: it depends.",
        "I cannot say yes or no.",
        "Correct.",  # neither word
        "The response matches the gold answer.",
        "Yesterday at noon",  # the words only inside longer words
        "nope",
        " Ab directising Def discrimovising Def",  # what the random tiny model says
    ],
)
def test_loogle_unclear_replies_are_not_verdicts(reply):
    assert parse_verdict(reply) is None


@pytest.mark.parametrize(
    "reply, verdict",
    [
        ("yes", True),
        ("Yes, the student answer conveys the gold answer.", True),
        ("YES", True),
        ("no", False),
        ("No.", False),
        ("Yes and no.", False),  # SEAL: a whole-word "no" makes it wrong
        ("yes, no", False),
        ("Correct.", None),  # neither word: no verdict (scored wrong, as SEAL does)
        ("Yesterday", None),
        ("Nope", None),
        ("<think>no, wait</think>Yes", True),
    ],
)
def test_squad_verdict_is_seals_rule(reply, verdict):
    assert parse_verdict(reply, "squad") is verdict


@pytest.mark.parametrize("grader", GRADERS)
@pytest.mark.parametrize(
    "reply",
    [
        "<think>The response says Paris, the gold answer is Paris, so yes",  # cut while thinking
        "<think>first thought</think> <think>yes it matches, so the answer is",  # second block cut
        "<think>",
    ],
)
def test_a_reply_cut_inside_its_think_block_is_no_verdict(grader, reply):
    assert parse_verdict(reply, grader) is None


def test_unknown_grader_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="known graders are loogle, squad"):
        parse_verdict("yes", "trivia")


# --- Bearer token -------------------------------------------------------------------------------


def test_token_from_the_file_argument_then_env_file_then_env_token(tmp_path, monkeypatch):
    monkeypatch.delenv("JUDGE_TOKEN_FILE", raising=False)
    monkeypatch.delenv("JUDGE_AUTH_TOKEN", raising=False)
    assert read_auth_token() is None
    monkeypatch.setenv("JUDGE_AUTH_TOKEN", "from-env")
    assert read_auth_token() == "from-env"
    env_file = tmp_path / "env.token"
    env_file.write_text("from-env-file\n")
    monkeypatch.setenv("JUDGE_TOKEN_FILE", str(env_file))
    assert read_auth_token() == "from-env-file"
    arg_file = tmp_path / "arg.token"
    arg_file.write_text("  from-arg-file  \n")
    assert read_auth_token(str(arg_file)) == "from-arg-file"


@pytest.mark.parametrize("content, needle", [(None, "cannot read"), ("", "empty"), ("two words-secret", "several words")])
def test_bad_token_files_are_named_but_not_shown(tmp_path, content, needle):
    path = tmp_path / "judge.token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(JudgeError, match=needle) as caught:
        read_auth_token(str(path))
    assert str(path) in str(caught.value) and "secret" not in str(caught.value)


def test_servers_refuse_short_tokens_and_loose_token_files_are_warned_about(tmp_path, caplog):
    path = tmp_path / "server.token"
    path.write_text("x\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="judge"):
        token = read_token_file(str(path), "the judge token file")
    assert f"may be read by other users (mode 644): chmod 600 {path}" in caplog.text
    with pytest.raises(JudgeError, match="the judge server's token has 1 characters; it needs at least 16") as caught:
        check_server_token(token, "judge server")
    assert "token_urlsafe" in str(caught.value)  # how to make a good one
    path.write_text("a-long-enough-token-0123456789\n")
    path.chmod(0o600)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="judge"):
        assert check_server_token(read_token_file(str(path), "the judge token file"), "judge server") == "a-long-enough-token-0123456789"
    assert caplog.text == ""


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_needs_no_token_and_any_other_address_does(host):
    assert refuse_open_bind(host, None, "judge", "--auth_token_file") is None
    assert refuse_open_bind("0.0.0.0", "t" * 16, "judge", "--auth_token_file") is None
    for other in ("0.0.0.0", "*", "10.1.2.3", "judge-node"):
        assert "refusing to listen on " + other in refuse_open_bind(other, None, "judge", "--auth_token_file")


def test_client_repr_hides_the_token(tmp_path):
    path = tmp_path / "judge.token"
    path.write_text("tok-DO-NOT-SHOW")
    client = JudgeClient("http://127.0.0.1:1/", token_file=str(path))
    assert client.url == "http://127.0.0.1:1"
    assert "tok-DO-NOT-SHOW" not in repr(client) and "token=yes" in repr(client)


# --- The client's retry rule --------------------------------------------------------------------


def scripted_judge(statuses=(), retry_after=None):
    """A real /judge endpoint that answers the given statuses first, then judges lexically.
    Records each request's body and Authorization header."""
    app = FastAPI()
    app.state.statuses = list(statuses)
    app.state.bodies = []
    app.state.auth = []

    @app.post("/judge")
    async def judge_route(body: dict):
        app.state.bodies.append(body)
        if app.state.statuses:
            status = app.state.statuses.pop(0)
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return JSONResponse({"detail": f"scripted {status}"}, status_code=status, headers=headers)
        return {"results": [{**lexical_judge(i["reference"], i["response"]), "cached": False, "parse_failed": False,
                             "failure": None} for i in body["items"]]}

    @app.middleware("http")
    async def record_auth(request, call_next):
        app.state.auth.append(request.headers.get("authorization"))
        return await call_next(request)

    return app


ITEMS = [{"question": "Capital?", "reference": "Paris", "response": "Paris"},
         {"question": "Capital?", "reference": "Paris", "response": "Lyon"}]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_busy_answers_are_retried_then_the_results_come_back(mode):
    app = scripted_judge(statuses=[429, 503, 504])
    with serve(app) as url:
        client = JudgeClient(url, retries=3, retry_delay=0.01)
        results = client.judge(ITEMS, "squad") if mode == "sync" else asyncio.run(client.ajudge(ITEMS, "squad"))
        client.close()
    assert [r["verdict"] for r in results] == [True, False]
    assert len(app.state.bodies) == 4
    assert app.state.bodies[-1] == {"grader": "squad", "items": ITEMS}


@pytest.mark.slow
@pytest.mark.parametrize("status", [400, 401, 413, 422, 500, 502])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_final_answers_are_not_retried(status, mode):
    app = scripted_judge(statuses=[status])
    with serve(app) as url:
        client = JudgeClient(url, retries=3, retry_delay=0.01)
        with pytest.raises(JudgeRequestError, match=f"HTTP {status}: .*scripted {status}") as caught:
            client.judge(ITEMS) if mode == "sync" else asyncio.run(client.ajudge(ITEMS))
    assert len(app.state.bodies) == 1
    assert ("judge_token_file" in str(caught.value)) == (status == 401)  # a 401 names the fix


@pytest.mark.slow
def test_retries_used_up_raise_unavailable_and_retry_after_is_honoured():
    app = scripted_judge(statuses=[503, 503, 503], retry_after=0.3)
    with serve(app) as url:
        client = JudgeClient(url, retries=2, retry_delay=0.001)
        loop = asyncio.new_event_loop()
        start = loop.time()
        with pytest.raises(JudgeUnavailableError, match="failed 3 attempts .*HTTP 503"):
            loop.run_until_complete(client.ajudge(ITEMS))
        assert loop.time() - start >= 0.6  # two waits of Retry-After 0.3 s, not 1-2 ms
        loop.close()
    assert len(app.state.bodies) == 3


def test_unreachable_server_raises_unavailable_with_the_fix():
    client = JudgeClient(f"http://127.0.0.1:{free_port()}", retries=1, retry_delay=0.001)
    with pytest.raises(JudgeUnavailableError, match="failed 2 attempts .*ConnectError.*start_judge_server.sh"):
        client.judge(ITEMS)
    with pytest.raises(JudgeUnavailableError, match="not reachable .*start_judge_server.sh"):
        client.health()
    assert client.judge([]) == []  # nothing to judge: no request


@pytest.mark.slow
def test_the_token_is_sent_as_bearer(tmp_path, monkeypatch):
    monkeypatch.delenv("JUDGE_TOKEN_FILE", raising=False)
    monkeypatch.setenv("JUDGE_AUTH_TOKEN", "env-token")
    path = tmp_path / "judge.token"
    path.write_text("file-token\n")
    app = scripted_judge()
    with serve(app) as url:
        JudgeClient(url, token_file=str(path)).judge(ITEMS)
        JudgeClient(url).judge(ITEMS)
    assert app.state.auth == ["Bearer file-token", "Bearer env-token"]


def replying_judge(reply):
    """A real /judge endpoint that answers 200 with `reply` (a body, as bytes)."""
    app = FastAPI()
    app.state.bodies = []

    @app.post("/judge")
    async def judge_route(body: dict):
        app.state.bodies.append(body)
        return Response(reply(body) if callable(reply) else reply, media_type="application/json")

    return app


def one_result(verdict=True, score=1.0):
    return {"score": score, "verdict": verdict, "cached": False, "parse_failed": False, "failure": None}


@pytest.mark.slow
@pytest.mark.parametrize("reply", [
    b"<html>not json</html>",
    b"[1, 2]",
    b'{"results": "all good"}',
    json.dumps({"results": [one_result()]}).encode(),  # one result for two items
    json.dumps({"results": [one_result(), one_result(verdict="maybe")]}).encode(),
    json.dumps({"results": [one_result(), one_result(verdict=1)]}).encode(),
    json.dumps({"results": [one_result(), one_result(score=7)]}).encode(),
    json.dumps({"results": [one_result(), [True]]}).encode(),
])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_reply_that_is_not_results_with_bool_verdicts_is_a_request_error(reply, mode):
    with serve(replying_judge(reply)) as url:
        client = JudgeClient(url, retries=3, retry_delay=0.01)
        with pytest.raises(JudgeRequestError, match="not a judge server's results"):
            client.judge(ITEMS) if mode == "sync" else asyncio.run(client.ajudge(ITEMS))


@pytest.mark.slow
def test_the_client_sends_at_most_max_items_per_request_and_keeps_the_order():
    app = scripted_judge()
    items = [{"question": f"q{i}", "reference": "Paris", "response": "Paris" if i % 2 else "Lyon"} for i in range(7)]
    with serve(app) as url:
        client = JudgeClient(url, max_items=3)
        assert [r["verdict"] for r in client.judge(items)] == [i % 2 == 1 for i in range(7)]
        assert [r["verdict"] for r in asyncio.run(client.ajudge(items))] == [i % 2 == 1 for i in range(7)]
    assert [len(b["items"]) for b in app.state.bodies] == [3, 3, 1] * 2
    assert [i["question"] for b in app.state.bodies[:3] for i in b["items"]] == [f"q{i}" for i in range(7)]


@pytest.mark.slow
def test_a_judge_error_that_echoes_a_key_is_redacted(monkeypatch):
    key = "sk-proj-DO-NOT-SHOW-1234567890"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    app = FastAPI()

    @app.post("/judge")
    async def judge_route():
        return JSONResponse({"detail": f"Incorrect API key provided: {key}. Authorization: Bearer other-secret-value"},
                            status_code=502)

    with serve(app) as url:
        with pytest.raises(JudgeRequestError, match="HTTP 502") as caught:
            JudgeClient(url).judge(ITEMS)
    assert key not in str(caught.value) and "other-secret-value" not in str(caught.value)
    assert "Incorrect API key provided: [redacted]" in str(caught.value)
