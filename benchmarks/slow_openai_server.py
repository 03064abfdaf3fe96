"""A fixed-latency OpenAI-compatible judge endpoint for benchmarks: loopback only, no model.

    python benchmarks/slow_openai_server.py --port 8300 --latency_ms 200

POST /v1/chat/completions sleeps --latency_ms, then answers "yes" if the judge prompt's
"Response:" line equals its "Gold answer:" line (case-insensitive), else "no" — so a benchmark
can check every result it gets back. GET /stats reports the number of completions served.
It stands in for a remote judge API's latency; it is not a judge.
"""

import argparse
import asyncio
import json
import re

import uvicorn

_GOLD = re.compile(r"^Gold answer: (.*)$", re.MULTILINE)
_RESPONSE = re.compile(r"^Response: (.*)$", re.MULTILINE)


def verdict_for(messages):
    prompt = messages[-1]["content"]
    gold, response = _GOLD.search(prompt), _RESPONSE.search(prompt)
    same = gold and response and gold.group(1).strip().lower() == response.group(1).strip().lower()
    return "yes" if same else "no"


def create_app(latency_s):
    """A bare ASGI app (no framework), so the endpoint itself costs little CPU per call."""
    stats = {"completions": 0}

    async def reply(send, status, payload):
        body = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            return await send({"type": "lifespan.shutdown.complete"})
        if scope["method"] == "GET" and scope["path"] == "/stats":
            return await reply(send, 200, stats)
        if scope["method"] != "POST" or scope["path"] != "/v1/chat/completions":
            return await reply(send, 404, {"error": {"message": f"no route {scope['method']} {scope['path']}"}})
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        await asyncio.sleep(latency_s)
        stats["completions"] += 1
        content = verdict_for(request["messages"])
        return await reply(send, 200, {
            "object": "chat.completion",
            "model": request.get("model", "slow"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        })

    return app


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--latency_ms", type=float, default=200.0, help="sleep per completion (default 200)")
    args = parser.parse_args()
    # Loopback only: this endpoint exists for local benchmarks.
    uvicorn.run(create_app(args.latency_ms / 1000), host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False, backlog=4096)


if __name__ == "__main__":
    main()
