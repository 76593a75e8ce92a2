"""A scripted model: a test double that answers with a Python function instead of weights.

For fast logic tests of the cascade, budgets, guards and the gateway beside the real-model tests
(as httpx's ``MockTransport`` or pydantic-ai's ``FunctionModel``)::

    fleet = Fleet(config, backends={"qwen05": FunctionBackend(spec, lambda req: "hello")})

The function gets the OpenAI request the backend would get and returns the answer text, an
assistant message dict, or a full :class:`ChatResult`. It may be a coroutine function; ``delay``
makes every call take that long (cancellation and concurrency tests).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..spec import ModelSpec
from .base import ChatResult, Samples

Answer = str | dict[str, Any] | ChatResult


class FunctionBackend:
    """A model whose answers come from a Python function: a test double for the cascade, guards and gateway."""

    def __init__(self, spec: ModelSpec, fn: Callable[[dict[str, Any]], Any], delay: float = 0.0) -> None:
        self.spec = spec
        self.fn = fn
        self.delay = delay
        self.calls: list[dict[str, Any]] = []
        self.cancelled = 0  # calls whose caller went away before the answer

    @property
    def loaded(self) -> bool:
        return True

    def load(self) -> None:
        return None

    async def chat(self, request: dict[str, Any]) -> ChatResult:
        self.calls.append(request)
        t0 = time.perf_counter()
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            out = self.fn(request)
            if inspect.isawaitable(out):
                out = await out
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if isinstance(out, ChatResult):
            return out
        msg = {"role": "assistant", "content": out} if isinstance(out, str) else {"role": "assistant", **out}
        text = msg.get("content") or ""
        tokens_in = sum(len(str(m.get("content") or "")) for m in request.get("messages", [])) // 4 + 1
        return ChatResult(model=self.spec.name, message=msg, finish_reason="tool_calls" if msg.get("tool_calls") else "stop",
                          tokens_in=tokens_in, tokens_out=len(text) // 4 + 1, latency_ms=(time.perf_counter() - t0) * 1000,
                          raw_text=text)

    async def samples(self, request: dict[str, Any], k: int) -> Samples:
        """k calls of the function, each told its sample number as ``seed``."""
        t0 = time.perf_counter()
        outs = [await self.chat({**request, "temperature": request.get("temperature") or 0.7, "seed": i}) for i in range(k)]
        return Samples([o.content for o in outs], sum(o.tokens_in for o in outs), sum(o.tokens_out for o in outs),
                       (time.perf_counter() - t0) * 1000)

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        res = await self.chat(request)
        for word in res.content.split(" "):
            yield {"choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}]}
        yield {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": res.tokens_in, "completion_tokens": res.tokens_out}}

    async def aclose(self) -> None:
        return None
