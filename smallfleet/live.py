"""A text step streamed straight from its start tier (opt-in: ``x-smallfleet-stream: live``).

Tokens reach the client as they are generated, so nothing can be escalated: the start tier is the
router's (the same rules as the cascade: injection, personal data), the checks still run on the
finished text and are recorded with the attempt, and the server ends the stream with the summary.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from .config import Config
from .learn.fewshot import with_examples
from .models.base import Backend, ChatResult
from .outcome import Attempt, Outcome, completion_id
from .privacy.guard import PrivacyGuard
from .record import Recorder
from .routing import Router
from .spec import ModelSpec
from .step import Step
from .verdict import run_checks


class LiveStream:
    def __init__(self, step: Step, spec: ModelSpec, backend: Backend, *, config: Config, router: Router,
                 recorder: Recorder, privacy: PrivacyGuard | None) -> None:
        self.step, self.spec, self.backend = step, spec, backend
        self.config, self.router, self.recorder, self.privacy = config, router, recorder, privacy
        self.created = int(time.time())
        self.outcome: Outcome | None = None  # set once the stream ended (and was recorded)

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        """The model's ``chat.completion.chunk`` dicts, named after this step; recorded when it ends."""
        step, spec = self.step, self.spec
        request, restorer, hidden = step.request, None, -1
        types: dict[str, int] = {}
        if step.examples is not None and step.examples[0] == spec.tier:  # a learned route's worked examples
            request = with_examples(request, step.examples[1])
        if self.router.pseudonymises(spec):
            assert self.privacy is not None  # pseudonymises() is false without it
            request, pz, hidden = await self.privacy.outbound_async(request, step.privacy_key)
            types = dict(pz.types)
            restorer = pz.stream_restorer()
        cid = completion_id(step)
        parts: list[str] = []
        finish, tin, tout, error = "stop", 0, 0, None
        t0 = time.perf_counter()
        try:
            async for ch in self.backend.stream(request):
                usage, timings = ch.get("usage"), ch.get("timings")
                if usage:
                    tin, tout = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
                elif timings:
                    tin = int(timings.get("prompt_n", 0)) + int(timings.get("cache_n", 0))
                    tout = int(timings.get("predicted_n", 0))
                for c in ch.get("choices") or []:
                    delta = c.get("delta") or {}
                    if restorer is not None and (delta.get("content") or c.get("finish_reason")):
                        delta = {**delta, "content": restorer.feed(delta.get("content") or "")
                                 + (restorer.flush() if c.get("finish_reason") else "")}
                    if delta.get("content"):
                        parts.append(delta["content"])
                    if c.get("finish_reason"):
                        finish = c["finish_reason"]
                    yield {"id": cid, "object": "chat.completion.chunk", "created": self.created, "model": spec.name,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": c.get("finish_reason")}]}
        except BaseException as e:  # client gone or backend failed: record what was generated
            error = f"stream ended early: {e.__class__.__name__}"
            raise
        finally:
            res = ChatResult(spec.name, {"role": "assistant", "content": "".join(parts)}, finish, tin,
                             tout or len(parts), (time.perf_counter() - t0) * 1000)
            att = Attempt(spec, spec.tier, res, error=error, cost_usd=spec.cost(tin, res.tokens_out),
                          frontier_cost_usd=self.config.frontier_cost(tin, res.tokens_out), pseudonymised=hidden,
                          pseudonymised_types=types)
            policy = self.router.policy(step)
            att.verdicts = run_checks(policy.checks, step, res, policy)
            self.outcome = Outcome(step, [att])
            try:
                await self.recorder.record(self.outcome)
            finally:
                self.recorder.release(step)
