"""generation.py: the one generation interface, in chat and raw completion mode. The hf backend
on the tiny model; the openai backend against real local OpenAI-compatible servers
(`transformers serve` with the same tiny model, and a loopback app that records requests); the
vllm backend with vLLM's CPU build."""

import asyncio
import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from fastapi import FastAPI, Request
from transformers import AutoTokenizer

from generation import make_generator, raw_prompt_ids, render_chat
from helpers import serve

RAW_PROMPTS = ["Read the passage below.\n\nPassage:\nHarbor Lighthouse\nBuilt in 1871.\n\nImplications:\n", "Topic: x\nWhy?\nAnswer:"]
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


# --- raw completion mode (hf) -------------------------------------------------------------------


def test_hf_raw_mode_feeds_the_raw_tokenisation(hf_generator, tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)  # as the model dir holds it
    fed = []
    generate = hf_generator.model.generate

    def recording_generate(input_ids, attention_mask, **kwargs):
        fed.extend(ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask))
        return generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    hf_generator.model.generate = recording_generate
    try:
        outputs = hf_generator.complete(RAW_PROMPTS, max_new_tokens=8)
    finally:
        hf_generator.model.generate = generate
    assert fed == [tokenizer(p)["input_ids"] for p in RAW_PROMPTS] == [raw_prompt_ids(tokenizer, p) for p in RAW_PROMPTS]
    assert tokenizer.decode(fed[0]) == RAW_PROMPTS[0]  # the text alone: no chat template
    assert [len(o) for o in outputs] == [1, 1] and all(o[0] for o in outputs)


def test_hf_raw_mode_samples_k_and_stops_at_stop_ids(hf_generator):
    tokenizer = hf_generator.tokenizer
    sampled = hf_generator.complete(RAW_PROMPTS, max_new_tokens=12, temperature=1.0, top_p=0.95, seed=3, n=3)
    assert [len(o) for o in sampled] == [3, 3] and len(set(sampled[0])) == 3
    assert hf_generator.complete(RAW_PROMPTS, max_new_tokens=12, temperature=1.0, top_p=0.95, seed=3, n=3) == sampled
    # A stop id ends the completion right after that token (as vLLM's stop_token_ids do).
    prompt = torch.tensor([tokenizer(RAW_PROMPTS[0])["input_ids"]])
    tokens = hf_generator.model.generate(input_ids=prompt, max_new_tokens=12, do_sample=False)[0, prompt.shape[1]:].tolist()
    assert hf_generator.complete(RAW_PROMPTS[:1], max_new_tokens=12)[0][0] == tokenizer.decode(tokens, skip_special_tokens=True)
    stop = next(t for t in tokens[2:] if t not in tokens[:2])
    stopped = hf_generator.complete(RAW_PROMPTS[:1], max_new_tokens=12, stop_token_ids=[stop])[0][0]
    assert stopped == tokenizer.decode(tokens[: tokens.index(stop) + 1], skip_special_tokens=True)


def test_raw_mode_bad_requests(hf_generator):
    with pytest.raises(ValueError, match="prompt 1 must be a non-empty string"):
        hf_generator.complete(["ok", ""], max_new_tokens=4)
    with pytest.raises(ValueError, match="prompt 0 must be a non-empty string"):
        hf_generator.complete([[{"role": "user", "content": "a chat"}]], max_new_tokens=4)
    with pytest.raises(ValueError, match="stop_token_ids must be token ids"):
        hf_generator.complete(["ok"], max_new_tokens=4, stop_token_ids=["</s>"])


# --- openai backend -----------------------------------------------------------------------------


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

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        app.state.requests.append({"body": body, "auth": request.headers.get("authorization")})
        text = f"{body['model']}|{body['prompt']}|seed={body.get('seed')}"
        return {"id": "cmpl-test", "object": "text_completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}]}

    return app


def test_openai_raw_mode_uses_the_completions_endpoint_and_an_adapter_name():
    app = recording_app()
    with serve(app) as url:
        base_url = f"{url}/v1"
        generator = make_generator("openai", "Qwen/Qwen2.5-7B", base_url=base_url)
        adapter = generator.complete(RAW_PROMPTS, max_new_tokens=64, stop_token_ids=[151643], model="ttt_0")
        base = generator.complete(RAW_PROMPTS[:1], max_new_tokens=8, temperature=1.0, seed=4, n=2)
    assert adapter == [[f"ttt_0|{p}|seed=0"] for p in RAW_PROMPTS]
    assert base == [[f"Qwen/Qwen2.5-7B|{RAW_PROMPTS[0]}|seed=4", f"Qwen/Qwen2.5-7B|{RAW_PROMPTS[0]}|seed=5"]]
    first, last = app.state.requests[0]["body"], app.state.requests[-1]["body"]
    assert "messages" not in first and first["prompt"] in RAW_PROMPTS  # raw text, no chat template
    assert first["stop_token_ids"] == [151643] and first["max_tokens"] == 64 and first["temperature"] == 0.0
    assert "stop_token_ids" not in last  # vLLM's extension, sent only when used (OpenAI itself rejects it)


def test_openai_requests_respect_the_concurrency_bound_and_keep_order():
    app = recording_app()
    conversations = [[{"role": "user", "content": f"question {i}"}] for i in range(8)]
    with serve(app) as url:
        base_url = f"{url}/v1"
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
    with serve(app) as url:
        base_url = f"{url}/v1"
        outputs = make_generator("openai", "m", base_url=base_url).generate(CONVERSATIONS, max_new_tokens=4, n=3)
    assert len(app.state.requests) == 3
    assert [len(set(o)) for o in outputs] == [1, 1, 1] and [len(o) for o in outputs] == [3, 3, 3]


@pytest.mark.slow
def test_openai_backend_matches_hf_backend_on_the_same_model(transformers_serve_url, tiny_model, hf_generator):
    # The server applies the model's chat template; hf applies it locally: same greedy text.
    served = make_generator("openai", str(tiny_model), base_url=f"{transformers_serve_url}/v1", concurrency=2)
    assert served.generate(CONVERSATIONS, max_new_tokens=12) == hf_generator.generate(CONVERSATIONS, max_new_tokens=12)


# --- vllm backend -------------------------------------------------------------------------------


@pytest.mark.slow
def test_vllm_backend_matches_hf_backend(tiny_model):
    # A fresh interpreter: vLLM starts its engine in subprocesses and must not inherit pytest's.
    # One engine for both modes; raw mode records the prompt ids the engine received.
    script = textwrap.dedent(
        f"""
        import json
        from generation import make_generator
        generator = make_generator("vllm", {str(tiny_model)!r}, dtype="float32", enforce_eager=True,
                                   max_model_len=512, max_num_batched_tokens=512, seed=0)
        greedy = generator.generate({CONVERSATIONS!r}, max_new_tokens=12)
        sampled = generator.generate({CONVERSATIONS[:1]!r}, max_new_tokens=12, temperature=1.0, seed=3, n=2)
        again = generator.generate({CONVERSATIONS[:1]!r}, max_new_tokens=12, temperature=1.0, seed=3, n=2)
        received = []
        engine_generate = generator.llm.generate
        def recording_generate(*args, **kwargs):
            outputs = engine_generate(*args, **kwargs)
            received.extend(list(o.prompt_token_ids) for o in outputs)
            return outputs
        generator.llm.generate = recording_generate
        raw = generator.complete({RAW_PROMPTS!r}, max_new_tokens=12)
        raw_sampled = generator.complete({RAW_PROMPTS!r}, max_new_tokens=12, temperature=1.0, top_p=0.95, seed=5, n=3)
        raw_again = generator.complete({RAW_PROMPTS!r}, max_new_tokens=12, temperature=1.0, top_p=0.95, seed=5, n=3)
        print("RESULT " + json.dumps({{"greedy": greedy, "sampled": sampled, "again": again, "raw": raw,
                                      "raw_sampled": raw_sampled, "raw_again": raw_again, "received": received}}))
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
    hf = make_generator("hf", str(tiny_model), dtype="float32")
    assert result["greedy"] == hf.generate(CONVERSATIONS, max_new_tokens=12)
    # Raw mode: the engine got the raw tokenisation (no chat template), k samples per prompt.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    assert result["received"][:2] == [tokenizer(p)["input_ids"] for p in RAW_PROMPTS]
    assert result["raw"] == hf.complete(RAW_PROMPTS, max_new_tokens=12)
    assert [len(set(o)) for o in result["raw_sampled"]] == [3, 3] and result["raw_sampled"] == result["raw_again"]


def test_the_openai_key_goes_to_openai_only_and_other_servers_get_the_key_named_for_them(monkeypatch):
    app = recording_app()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-DO-NOT-SEND-0123456789")
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    with serve(app) as url:
        conversation = [CONVERSATIONS[0]]
        make_generator("openai", "m", base_url=f"{url}/v1").generate(conversation, max_new_tokens=4)
        monkeypatch.setenv("VLLM_API_KEY", "local-vllm-key")
        make_generator("openai", "m", base_url=f"{url}/v1").generate(conversation, max_new_tokens=4)
        make_generator("openai", "m", base_url=f"{url}/v1", api_key="sk-named").generate(conversation, max_new_tokens=4)
    assert [r["auth"] for r in app.state.requests] == ["Bearer EMPTY", "Bearer local-vllm-key", "Bearer sk-named"]
