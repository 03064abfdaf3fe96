"""One generation interface for data preparation and evaluation, with three backends:

    hf      local transformers (CPU or GPU), batched; what the tests and the CPU demo use
    vllm    offline `vllm.LLM.generate` (GPU, or the CPU build of vLLM)
    openai  any OpenAI-compatible endpoint (OpenAI, a `vllm serve` URL, ...), async with a
            bound on concurrent requests

    generator = make_generator("hf", "checkpoints/tiny-qwen2", batch_size=8)
    outputs = generator.generate([[{"role": "user", "content": "Hi"}]], max_new_tokens=32)
    outputs[0][0]   # first completion of the first conversation

Two modes, the same in every backend:
  chat  `generate(conversations, ...)`: the model's own chat template with the generation prompt
        appended (`render_chat`), tokenized without extra special tokens; the openai backend
        sends the messages to /chat/completions and the server applies the same template.
  raw   `complete(prompts, ..., stop_token_ids=())`: plain text, no chat template, for base
        models (SEAL's SQuAD protocol). A prompt is tokenized as a base model reads text
        (`raw_prompt_ids`: only the special tokens the tokenizer itself adds, e.g. a BOS); the
        openai backend sends it to /completions, where vLLM tokenizes it the same way, and may
        name another served model or a LoRA adapter loaded into the server (`model=`).
        Generation stops at the model's EOS token(s) and at any of `stop_token_ids`.
Greedy decoding (temperature 0) or seeded sampling make a rerun reproduce its outputs.
"""

import asyncio
import os

from tqdm import tqdm

from utils import api_key_for

BACKENDS = ("hf", "vllm", "openai")


def make_generator(backend, model, **options):
    """A generator for `model` (a local HF directory, or a served model name for `openai`).

    Options per backend:
      hf:     batch_size=8, dtype="auto", device=None (cuda if available, else cpu)
      vllm:   any `vllm.LLM` keyword (tensor_parallel_size, gpu_memory_utilization,
              max_model_len, dtype, enforce_eager, ...)
      openai: base_url (default env OPENAI_BASE_URL, else https://api.openai.com/v1), api_key
              (default: for https://api.openai.com env OPENAI_API_KEY, else the gitignored
              openai_api_key.txt in the repo root; for any other base_url env VLLM_API_KEY, else
              "EMPTY": the OpenAI key never goes to another host), concurrency=16, timeout=600
    """
    if backend == "hf":
        return HFGenerator(model, **options)
    if backend == "vllm":
        return VLLMGenerator(model, **options)
    if backend == "openai":
        return OpenAIGenerator(model, **options)
    raise ValueError(f"unknown generation backend {backend!r}: choose one of {', '.join(BACKENDS)}")


def render_chat(tokenizer, conversation):
    """Token ids of `conversation` in the model's chat template, ready for the assistant turn."""
    if not tokenizer.chat_template:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} has no chat template; use an instruct/chat model "
            "(or set tokenizer.chat_template in its tokenizer_config.json)"
        )
    text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    # The template already holds every special token it wants (e.g. BOS): add none twice.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def raw_prompt_ids(tokenizer, prompt):
    """Token ids of a raw (no chat template) prompt: the text with only the special tokens the
    tokenizer adds by itself (a BOS for Llama-style tokenizers, none for Qwen), as vLLM's
    /completions endpoint and plain `tokenizer(text)` in training tokenize it."""
    return tokenizer(prompt)["input_ids"]


def _check_request(conversations, n):
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    for i, conversation in enumerate(conversations):
        if not conversation or not all(isinstance(m, dict) and "role" in m and "content" in m for m in conversation):
            raise ValueError(f"conversation {i} must be a non-empty list of {{role, content}} dicts, got {conversation!r}")


def _check_prompts(prompts, n, stop_token_ids):
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt {i} must be a non-empty string (raw completion mode), got {prompt!r:.100}")
    if not all(isinstance(t, int) and t >= 0 for t in stop_token_ids):
        raise ValueError(f"stop_token_ids must be token ids (ints >= 0), got {list(stop_token_ids)!r}")


class HFGenerator:
    """Batched `model.generate` with left padding; stops at the tokenizer's EOS token(s)."""

    def __init__(self, model, batch_size=8, dtype="auto", device=None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(self.device).eval()
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        eos = self.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in eos:
            eos.append(self.tokenizer.eos_token_id)
        self.eos_ids = eos

    def generate(self, conversations, max_new_tokens, temperature=0.0, top_p=1.0, seed=0, n=1):
        _check_request(conversations, n)
        prompts = [render_chat(self.tokenizer, c) for c in conversations]
        return self._generate(prompts, max_new_tokens, temperature, top_p, seed, n, self.eos_ids)

    def complete(self, prompts, max_new_tokens, temperature=0.0, top_p=1.0, seed=0, n=1, stop_token_ids=()):
        _check_prompts(prompts, n, stop_token_ids)
        ids = [raw_prompt_ids(self.tokenizer, p) for p in prompts]
        stop = self.eos_ids + [t for t in stop_token_ids if t not in self.eos_ids]
        return self._generate(ids, max_new_tokens, temperature, top_p, seed, n, stop)

    def _generate(self, prompts, max_new_tokens, temperature, top_p, seed, n, stop_ids):
        torch = self.torch
        torch.manual_seed(seed)
        sample = temperature > 0
        results = []
        batches = range(0, len(prompts), self.batch_size)
        for start in tqdm(batches, desc="generate (hf)", unit="batch", disable=len(batches) < 2):
            batch = prompts[start : start + self.batch_size]
            width = max(len(p) for p in batch)
            input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in batch], device=self.device)
            attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=self.device)
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=sample,
                    temperature=temperature if sample else None,
                    top_p=top_p if sample else None,
                    top_k=None,
                    # Greedy decoding gives one answer; n copies of it keep the output shape.
                    num_return_sequences=n if sample else 1,
                    eos_token_id=stop_ids,
                    pad_token_id=self.pad_id,
                )
            texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            per_prompt = n if sample else 1
            for i in range(len(batch)):
                completions = texts[i * per_prompt : (i + 1) * per_prompt]
                results.append(completions if sample else completions * n)
        return results


class VLLMGenerator:
    """Offline vLLM. Prompts are rendered by `render_chat` (or `raw_prompt_ids`) and passed as token ids."""

    def __init__(self, model, **llm_options):
        from vllm import LLM

        self.llm = LLM(model=model, **llm_options)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, conversations, max_new_tokens, temperature=0.0, top_p=1.0, seed=0, n=1):
        _check_request(conversations, n)
        token_ids = [render_chat(self.tokenizer, c) for c in conversations]
        return self._generate(token_ids, max_new_tokens, temperature, top_p, seed, n, stop_token_ids=())

    def complete(self, prompts, max_new_tokens, temperature=0.0, top_p=1.0, seed=0, n=1, stop_token_ids=()):
        _check_prompts(prompts, n, stop_token_ids)
        token_ids = [raw_prompt_ids(self.tokenizer, p) for p in prompts]
        return self._generate(token_ids, max_new_tokens, temperature, top_p, seed, n, stop_token_ids)

    def _generate(self, token_ids, max_new_tokens, temperature, top_p, seed, n, stop_token_ids):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, seed=seed, max_tokens=max_new_tokens,
                                stop_token_ids=list(stop_token_ids) or None)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in token_ids], params, use_tqdm=True)
        return [[o.text for o in out.outputs] for out in outputs]


class OpenAIGenerator:
    """Chat or text completions against an OpenAI-compatible server, at most `concurrency` in flight."""

    def __init__(self, model, base_url=None, api_key=None, concurrency=16, timeout=600):
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        # The OpenAI key only to OpenAI; local servers (vllm serve, transformers serve) accept any key. Never logged.
        self.api_key = api_key_for(self.base_url, api_key) or "EMPTY"
        self.concurrency = concurrency
        self.timeout = timeout

    def generate(self, conversations, max_new_tokens, temperature=0.0, top_p=1.0, seed=0, n=1):
        _check_request(conversations, n)

        async def one(client, conversation, seed):
            response = await client.chat.completions.create(
                model=self.model, messages=conversation, max_tokens=max_new_tokens,
                temperature=temperature, top_p=top_p, seed=seed,
            )
            return response.choices[0].message.content or ""

        return asyncio.run(self._generate_all(one, conversations, temperature, seed, n))

    def complete(self, prompts, max_new_tokens, temperature=0.0, top_p=1.0, seed=0, n=1, stop_token_ids=(), model=None):
        """Raw completions (/completions); `model`: another served model or a loaded LoRA adapter's
        name instead of the generator's model."""
        _check_prompts(prompts, n, stop_token_ids)
        # stop_token_ids is vLLM's extension of the API; sent only when used.
        extra = {"stop_token_ids": list(stop_token_ids)} if stop_token_ids else None

        async def one(client, prompt, seed):
            response = await client.completions.create(
                model=model or self.model, prompt=prompt, max_tokens=max_new_tokens,
                temperature=temperature, top_p=top_p, seed=seed, extra_body=extra,
            )
            return response.choices[0].text or ""

        return asyncio.run(self._generate_all(one, prompts, temperature, seed, n))

    async def _generate_all(self, one, requests, temperature, seed, n):
        from openai import AsyncOpenAI

        # One request per completion (not the API's `n`, which some servers ignore); sample i
        # uses seed + i. Greedy decoding gives one answer, repeated n times as in hf.
        per_request = n if temperature > 0 else 1
        total = len(requests) * per_request
        limit = asyncio.Semaphore(self.concurrency)
        progress = tqdm(total=total, desc="generate (openai)", unit="completion", disable=total < 2)
        async with AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout) as client:

            async def bounded(request, seed):
                async with limit:
                    text = await one(client, request, seed)
                progress.update(1)
                return text

            try:
                texts = await asyncio.gather(*(bounded(r, seed + i) for r in requests for i in range(per_request)))
            finally:
                progress.close()
        grouped = [texts[i * per_request : (i + 1) * per_request] for i in range(len(requests))]
        return [g if per_request == n else g * n for g in grouped]
