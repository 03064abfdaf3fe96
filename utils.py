"""Small helpers shared by several entry points.

Imports nothing heavy at module level: reward_function.py (which runs inside verl's workers)
imports `extract_answer` from here.
"""

import re

# Chat-template tails a decoded rollout may still carry (ChatML, Llama-3, generic EOS).
_TEMPLATE_TAIL = re.compile(r"(<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>|</s>|<\|end\|>).*\Z", re.DOTALL)
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_UNCLOSED_THINK = re.compile(r"<think>.*\Z", re.DOTALL | re.IGNORECASE)
_ANSWER_PREFIX = re.compile(r"^\s*(?:\*\*)?(?:final\s+)?answer(?:\*\*)?\s*[:：]\s*", re.IGNORECASE)


def extract_answer(text):
    """The answer part of a model response: drops a chat-template tail, `<think>` blocks and an
    `Answer:` prefix (the last `Answer:` line wins when the model reasons first)."""
    text = _TEMPLATE_TAIL.sub("", text or "")
    text = _THINK_BLOCK.sub("", text)
    text = _UNCLOSED_THINK.sub("", text)
    matches = list(re.finditer(r"(?im)^\s*(?:\*\*)?(?:final\s+)?answer(?:\*\*)?\s*[:：]", text))
    if matches:
        text = text[matches[-1].start():]
    return _ANSWER_PREFIX.sub("", text).strip()
