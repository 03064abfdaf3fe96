"""One generation interface for data preparation and evaluation, with three backends:

    hf      local transformers (CPU or GPU), batched; what the tests and the CPU demo use
    vllm    offline `vllm.LLM.generate` (GPU, or the CPU build of vLLM)
    openai  any OpenAI-compatible chat endpoint (OpenAI, a `vllm serve` URL, ...), async with a
            bound on concurrent requests

    generator = make_generator("hf", "checkpoints/tiny-qwen2", batch_size=8)
    outputs = generator.generate([[{"role": "user", "content": "Hi"}]], max_new_tokens=32)
    outputs[0][0]   # first completion of the first conversation

Chat templates are applied the same way everywhere: the model's own template with the
generation prompt appended (`render_chat`), tokenized without extra special tokens; the openai
backend sends the messages and the server applies the same template. Greedy decoding
(temperature 0) or seeded sampling make a rerun reproduce its outputs.
"""

import asyncio
import os

from tqdm import tqdm

from utils import read_openai_key

BACKENDS = ("hf", "vllm", "openai")


def make_generator(backend, model, **options):
    """A generator for `model` (a local HF directory, or a served model name for `openai`).

    Options per backend:
      hf:     batch_size=8, dtype="auto", device=None (cuda if available, else cpu)
      vllm:   any `vllm.LLM` keyword (tensor_parallel_size, gpu_memory_utilization,
              max_model_len, dtype, enforce_eager, ...)
      openai: base_url (default env OPENAI_BASE_URL, else https://api.openai.com/v1), api_key
              (default env OPENAI_API_KEY, else the gitignored openai_api_key.txt in the repo
              root, else "EMPTY" for local servers), concurrency=16, timeout=600
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


def _check_request(conversations, n):
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    for i, conversation in enumerate(conversations):
        if not conversation or not all(isinstance(m, dict) and "role" in m and "content" in m for m in conversation):
            raise ValueError(f"conversation {i} must be a non-empty list of {{role, content}} dicts, got {conversation!r}")


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
        torch = self.torch
        torch.manual_seed(seed)
        prompts = [render_chat(self.tokenizer, c) for c in conversations]
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
                    eos_token_id=self.eos_ids,
                    pad_token_id=self.pad_id,
                )
            texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            per_prompt = n if sample else 1
            for i in range(len(batch)):
                completions = texts[i * per_prompt : (i + 1) * per_prompt]
                results.append(completions if sample else completions * n)
        return results


class VLLMGenerator:
    """Offline vLLM. Prompts are rendered by `render_chat` and passed as token ids."""

    def __init__(self, model, **llm_options):
        from vllm import LLM

        self.llm = LLM(model=model, **llm_options)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, conversations, max_new_tokens, temperature=0.0, top_p=1.0, seed=0, n=1):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        _check_request(conversations, n)
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, seed=seed, max_tokens=max_new_tokens)
        prompts = [TokensPrompt(prompt_token_ids=render_chat(self.tokenizer, c)) for c in conversations]
        outputs = self.llm.generate(prompts, params, use_tqdm=True)
        return [[o.text for o in out.outputs] for out in outputs]


class OpenAIGenerator:
    """Chat completions against an OpenAI-compatible server, at most `concurrency` in flight."""

    def __init__(self, model, base_url=None, api_key=None, concurrency=16, timeout=600):
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        # Local servers (vllm serve, transformers serve) accept any key. Never logged.
        self.api_key = api_key or read_openai_key() or "EMPTY"
        self.concurrency = concurrency
        self.timeout = timeout

    def generate(self, conversations, max_new_tokens, temperature=0.0, top_p=1.0, seed=0, n=1):
        _check_request(conversations, n)
        return asyncio.run(self._generate_all(conversations, max_new_tokens, temperature, top_p, seed, n))

    async def _generate_all(self, conversations, max_new_tokens, temperature, top_p, seed, n):
        from openai import AsyncOpenAI

        # One request per completion (not the API's `n`, which some servers ignore); sample i
        # uses seed + i. Greedy decoding gives one answer, repeated n times as in hf.
        per_conversation = n if temperature > 0 else 1
        total = len(conversations) * per_conversation
        limit = asyncio.Semaphore(self.concurrency)
        progress = tqdm(total=total, desc="generate (openai)", unit="completion", disable=total < 2)
        async with AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout) as client:

            async def one(conversation, seed):
                async with limit:
                    response = await client.chat.completions.create(
                        model=self.model,
                        messages=conversation,
                        max_tokens=max_new_tokens,
                        temperature=temperature,
                        top_p=top_p,
                        seed=seed,
                    )
                progress.update(1)
                return response.choices[0].message.content or ""

            requests = [one(c, seed + i) for c in conversations for i in range(per_conversation)]
            try:
                texts = await asyncio.gather(*requests)
            finally:
                progress.close()
        grouped = [texts[i * per_conversation : (i + 1) * per_conversation] for i in range(len(conversations))]
        return [g if per_conversation == n else g * n for g in grouped]
