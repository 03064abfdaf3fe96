"""generation.py: the one generation interface. The hf backend on the tiny model; the openai
backend against real local OpenAI-compatible servers (`transformers serve` with the same tiny
model, and a loopback app that records requests); the vllm backend with vLLM's CPU build."""

import asyncio
import contextlib
import copy
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from generation import make_generator, render_chat

CONVERSATIONS = [
    [{"role": "user", "content": "Where was José Luis Picardo born?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarize the history of the Parador de Jaén."}],
    [{"role": "user", "content": "x"}],
]


@pytest.fixture(scope="module")
def hf_generator(tiny_model):
    return make_generator("hf", str(tiny_model), batch_size=2)


def test_render_chat_uses_the_models_template(tiny_tokenizer):
    ids = render_chat(tiny_tokenizer, CONVERSATIONS[1])
    text = tiny_tokenizer.decode(ids)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nSummarize the history of the Parador de Jaén.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_render_chat_without_template_is_a_clear_error(tiny_tokenizer):
    bare = copy.deepcopy(tiny_tokenizer)
    bare.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        render_chat(bare, CONVERSATIONS[0])


def test_hf_greedy_shapes_and_batch_independence(hf_generator, tiny_model):
    outputs = hf_generator.generate(CONVERSATIONS, max_new_tokens=12)
    assert len(outputs) == 3 and all(len(o) == 1 and isinstance(o[0], str) and o[0] for o in outputs)
    assert "<|im_end|>" not in "".join(o[0] for o in outputs)  # special tokens are not in the text
    # Padding in a batch does not change a conversation's greedy answer.
    one_by_one = make_generator("hf", str(tiny_model), batch_size=1).generate(CONVERSATIONS, max_new_tokens=12)
    assert one_by_one == outputs
    # n greedy completions are the same answer n times.
    assert hf_generator.generate(CONVERSATIONS[:1], max_new_tokens=12, n=3) == [outputs[0] * 3]


def test_hf_seeded_sampling_is_reproducible(hf_generator):
    first = hf_generator.generate(CONVERSATIONS, max_new_tokens=12, temperature=1.0, top_p=0.95, seed=7, n=2)
    again = hf_generator.generate(CONVERSATIONS, max_new_tokens=12, temperature=1.0, top_p=0.95, seed=7, n=2)
    other = hf_generator.generate(CONVERSATIONS, max_new_tokens=12, temperature=1.0, top_p=0.95, seed=8, n=2)
    assert [len(o) for o in first] == [2, 2, 2]
    assert first == again
    assert first != other
    assert first[0][0] != first[0][1]  # n samples differ from each other


def test_bad_requests_are_clear_errors(hf_generator):
    with pytest.raises(ValueError, match="unknown generation backend 'tgi'"):
        make_generator("tgi", "some-model")
    with pytest.raises(ValueError, match="conversation 1 must be"):
        hf_generator.generate([CONVERSATIONS[0], [{"content": "no role"}]], max_new_tokens=4)
    with pytest.raises(ValueError, match="n must be >= 1"):
        hf_generator.generate(CONVERSATIONS, max_new_tokens=4, n=0)


# --- openai backend -----------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(app):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def recording_app():
    """An OpenAI-compatible chat endpoint that echoes the request and records peak concurrency."""
    app = FastAPI()
    app.state.requests, app.state.in_flight, app.state.peak = [], 0, 0

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        app.state.requests.append({"body": body, "auth": request.headers.get("authorization")})
        app.state.in_flight += 1
        app.state.peak = max(app.state.peak, app.state.in_flight)
        await asyncio.sleep(0.1)
        app.state.in_flight -= 1
        content = f"{body['messages'][-1]['content']}|seed={body.get('seed')}"
        return {
            "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        }

    return app


def test_openai_requests_respect_the_concurrency_bound_and_keep_order():
    app = recording_app()
    conversations = [[{"role": "user", "content": f"question {i}"}] for i in range(8)]
    with serve(app) as base_url:
        generator = make_generator("openai", "judge-model", base_url=base_url, api_key="sk-test-local", concurrency=3)
        outputs = generator.generate(conversations, max_new_tokens=17, temperature=0.5, top_p=0.9, seed=11, n=2)
    assert outputs == [[f"question {i}|seed=11", f"question {i}|seed=12"] for i in range(8)]
    assert app.state.peak == 3  # 16 requests, never more than 3 in flight
    received = sorted((r["body"]["messages"][0]["content"], r["body"]["seed"]) for r in app.state.requests)
    assert received == sorted((f"question {i}", seed) for i in range(8) for seed in (11, 12))
    for r in app.state.requests:
        assert r["body"]["model"] == "judge-model" and r["body"]["max_tokens"] == 17
        assert r["body"]["temperature"] == 0.5 and r["body"]["top_p"] == 0.9
        assert r["auth"] == "Bearer sk-test-local"


def test_openai_greedy_makes_one_request_per_conversation():
    app = recording_app()
    with serve(app) as base_url:
        outputs = make_generator("openai", "m", base_url=base_url).generate(CONVERSATIONS, max_new_tokens=4, n=3)
    assert len(app.state.requests) == 3
    assert [len(set(o)) for o in outputs] == [1, 1, 1] and [len(o) for o in outputs] == [3, 3, 3]


@pytest.fixture(scope="module")
def transformers_serve(tiny_model, tmp_path_factory):
    """`transformers serve` (a real OpenAI-compatible server) on the tiny model."""
    cli = Path(sys.executable).with_name("transformers")
    port = free_port()
    log = tmp_path_factory.mktemp("transformers_serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            [str(cli), "serve", str(tiny_model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
            stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )
    try:
        deadline = time.time() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"transformers serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_openai_backend_matches_hf_backend_on_the_same_model(transformers_serve, tiny_model, hf_generator):
    # The server applies the model's chat template; hf applies it locally: same greedy text.
    served = make_generator("openai", str(tiny_model), base_url=transformers_serve, concurrency=2)
    assert served.generate(CONVERSATIONS, max_new_tokens=12) == hf_generator.generate(CONVERSATIONS, max_new_tokens=12)


# --- vllm backend -------------------------------------------------------------------------------


@pytest.mark.slow
def test_vllm_backend_matches_hf_backend(tiny_model):
    # A fresh interpreter: vLLM starts its engine in subprocesses and must not inherit pytest's.
    script = textwrap.dedent(
        f"""
        import json
        from generation import make_generator
        generator = make_generator("vllm", {str(tiny_model)!r}, dtype="float32", enforce_eager=True,
                                   max_model_len=512, max_num_batched_tokens=512, seed=0)
        greedy = generator.generate({CONVERSATIONS!r}, max_new_tokens=12)
        sampled = generator.generate({CONVERSATIONS[:1]!r}, max_new_tokens=12, temperature=1.0, seed=3, n=2)
        again = generator.generate({CONVERSATIONS[:1]!r}, max_new_tokens=12, temperature=1.0, seed=3, n=2)
        print("RESULT " + json.dumps({{"greedy": greedy, "sampled": sampled, "again": again}}))
        """
    )
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1")
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600, cwd=repo)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert [len(o) for o in result["greedy"]] == [1, 1, 1]
    assert [len(o) for o in result["sampled"]] == [2] and result["sampled"] == result["again"]
    # Same prompt tokens, same weights, float32 in both: the same greedy text.
    hf = make_generator("hf", str(tiny_model), dtype="float32").generate(CONVERSATIONS, max_new_tokens=12)
    assert result["greedy"] == hf
