"""Prompt size without a tokenizer: a certain floor (to skip models a prompt cannot fit) and a rough
estimate (to reserve budget before a call)."""

from __future__ import annotations

import re
from typing import Any

import orjson

OFF_LOOP_CHARS = 64_000  # a prompt above this is measured and its tool output labelled in a worker thread

# Measured on the fleet's tokenizers (20,000 repeated characters): Qwen2.5 packs 127 spaces, 64 '=' or
# 32 newlines into one token, but letters and digits at most 8 ("aaaa...") and digits one by one. So
# letters and digits over 16 bound the token count from below whatever the punctuation.
WORD_CHARS_PER_TOKEN_MAX = 16
_NON_WORD = re.compile(r"\W+")

MIN_CONTEXT = 256  # the smallest context window a model may be configured with


def prompt_chars(request: dict[str, Any]) -> int:
    return sum(len(m["content"]) if isinstance(m.get("content"), str) else len(orjson.dumps(m.get("content")))
               for m in request.get("messages", ()))


def min_prompt_tokens(request: dict[str, Any], cap: int, chars: int | None = None) -> int:
    """A floor on the prompt's token count without a tokenizer or a model load, counted up to ``cap``
    (the largest context window: past it the exact value does not matter). 0 for a prompt too short to
    exceed any window. Letters are counted 64 kB at a time and the count stops at ``cap``, so a
    megabytes-long prompt costs a few milliseconds, not a scan of all of it."""
    if (prompt_chars(request) if chars is None else chars) <= WORD_CHARS_PER_TOKEN_MAX * MIN_CONTEXT:
        return 0
    need = (cap + 1) * WORD_CHARS_PER_TOKEN_MAX
    words = 0
    for m in request.get("messages", ()):
        t = m["content"] if isinstance(m.get("content"), str) else orjson.dumps(m.get("content")).decode()
        for i in range(0, len(t), 65536):
            words += len(_NON_WORD.sub("", t[i:i + 65536]))
            if words >= need:
                return cap + 1
    return words // WORD_CHARS_PER_TOKEN_MAX


def estimate_tokens(request: dict[str, Any]) -> int:
    """Rough prompt size (bytes/3.5) used only for budget estimates; backends count exactly."""
    size = len(orjson.dumps(request.get("messages", []))) + len(orjson.dumps(request.get("tools") or []))
    return int(size / 3.5) + 8
