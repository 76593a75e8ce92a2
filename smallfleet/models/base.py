"""The one interface every model backend implements, and the typed result it returns."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..spec import ModelSpec


@dataclass
class ChatResult:
    """One completed model call, normalised to OpenAI's assistant-message shape."""

    model: str
    message: dict[str, Any]  # {"role": "assistant", "content": ..., "tool_calls": [...]}
    finish_reason: str
    tokens_in: int
    tokens_out: int
    latency_ms: float
    cached_tokens: int = 0
    token_logprobs: list[float] | None = None  # log-probability of each generated token
    token_texts: list[str] | None = None  # the tokens themselves, aligned with token_logprobs
    raw_text: str = ""  # the generated text before tool calls were lifted out of it
    top_logprobs: list[dict[str, float]] | None = None  # per token: alternative token -> logprob
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def content(self) -> str:
        c = self.message.get("content")
        return c if isinstance(c, str) else ""

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return self.message.get("tool_calls") or []

    def mean_token_prob(self) -> float | None:
        """Mean probability of the generated tokens: a cheap confidence signal (None if unknown)."""
        if not self.token_logprobs:
            return None
        return sum(math.exp(lp) for lp in self.token_logprobs) / len(self.token_logprobs)


@dataclass
class Samples:
    """k answers to one prompt (temperature > 0), for agreement between samples."""

    texts: list[str]
    tokens_in: int
    tokens_out: int
    latency_ms: float


@runtime_checkable
class Sampler(Protocol):
    """A backend that can draw several answers to one prompt in one call (llama.cpp, OpenAI-compatible servers):
    the prompt is processed once and the answers decode side by side."""

    async def samples(self, request: dict[str, Any], k: int) -> Samples: ...


@runtime_checkable
class Backend(Protocol):
    """A model behind one small async interface: the cascade never sees which kind it is."""

    spec: ModelSpec

    @property
    def loaded(self) -> bool: ...

    def load(self) -> None:
        """Prepare the model (assemble/verify/load weights, open a connection pool). Idempotent."""

    async def chat(self, request: dict[str, Any]) -> ChatResult:
        """Run one non-streaming chat completion (OpenAI request shape)."""

    def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yield OpenAI ``chat.completion.chunk`` dicts; the last one carries ``usage``."""

    async def aclose(self) -> None: ...
