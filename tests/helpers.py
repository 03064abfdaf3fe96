"""Small helpers the tests share (import them: `from helpers import free_port, load_state`), and
real servers on loopback: `serve` (any ASGI app under uvicorn) and `scripted_backend` (a fake
OpenAI-compatible judge backend).

Checkpoints are read here with plain safetensors/torch, independently of the operator's own
checkpoint I/O, so that tests of the operator compare against something it did not compute.
"""

import contextlib
import importlib.util
import os
import shutil
import socket
import stat
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def free_port():
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_state(model_dir):
    """Every tensor of an HF model dir (safetensors shards or legacy .bin), by name."""
    model_dir = Path(model_dir).resolve()
    state = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        state.update(load_file(f))
    for f in sorted(model_dir.glob("pytorch_model*.bin")):
        state.update(torch.load(f, weights_only=True))
    return state


def perturbed_copy(src, dst, seed, scale=1e-2):
    """A copy of model dir `src` at `dst` with seeded Gaussian noise (std `scale`) on every tensor,
    computed in float32 and stored in each tensor's own dtype, in one model.safetensors."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.index.json"))
    g = torch.Generator().manual_seed(seed)
    state = {n: (t.float() + torch.randn(t.shape, generator=g) * scale).to(t.dtype) for n, t in load_state(src).items()}
    save_file(state, Path(dst) / "model.safetensors", metadata={"format": "pt"})
    return Path(dst)


def fake_nvidia_smi(bin_dir, gpus, memory_mib=81559):
    """An `nvidia-smi` in `bin_dir` (created) that lists `gpus` GPUs (`-L`) of `memory_mib` MiB each
    (`--query-gpu=memory.total`), as on a GPU node; returns a PATH with it first."""
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    tool = bin_dir / "nvidia-smi"
    tool.write_text("#!/bin/sh\n"
                    'case "$*" in\n'
                    f"  *memory.total*) i=0; while [ $i -lt {gpus} ]; do echo {memory_mib}; i=$((i+1)); done ;;\n"
                    f'  *) i=0; while [ $i -lt {gpus} ]; do echo "GPU $i: NVIDIA H100 80GB HBM3 (UUID: GPU-$i)"; i=$((i+1)); done ;;\n'
                    "esac\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return f"{bin_dir}:{os.environ['PATH']}"


def wait_for_health(url, proc, log, timeout):
    """Wait until `url`/health answers 200 from the server process `proc`; fail with the end of its
    `log` if it exits or takes longer than `timeout` seconds."""
    import httpx

    deadline = time.time() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"the server at {url} did not start:\n{Path(log).read_text()[-3000:]}")
        time.sleep(0.2)


def load_module_from_path(name, path):
    """Import a script that is not in a package (e.g. SEAL/general-knowledge/*.py) as module `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def serve(app, port=None, host="127.0.0.1"):
    """Serve an ASGI app with uvicorn in a background thread; yields its base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def scripted_backend(statuses=(), reply="yes", delay_s=0.0, finish_reason="stop"):
    """A real OpenAI-compatible /v1/chat/completions endpoint (FastAPI) that first answers the
    given error statuses, then `reply` (a string, or a function of the request body). Records each
    request body, its Authorization header and the peak number of concurrent calls in app.state."""
    import asyncio

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

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
        content = reply(body) if callable(reply) else reply
        return {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
        }

    return app
