"""The cascade: run a step on its starting tier, check the answer, escalate one tier when a check fails.

Escalation is bounded by ``fleet.max_escalations`` and never revisits a model, so it cannot loop.
Every attempt — accepted, rejected or failed — is recorded, and the step's attempts reach the ledger
in one transaction.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from .checks import Verdict, run_checks
from .config import Config, ModelSpec
from .errors import BackendError, ContextLengthError, SmallfleetError
from .ledger import AttemptRow, Ledger
from .models import ChatResult, Fleet
from .routing import Router
from .step import Step


@dataclass
class Attempt:
    spec: ModelSpec
    tier: str
    result: ChatResult | None
    verdicts: list[Verdict] = field(default_factory=list)
    error: str | None = None
    cost_usd: float = 0.0
    frontier_cost_usd: float = 0.0
    escalated: bool = False

    @property
    def passed(self) -> bool:
        return self.result is not None and self.error is None and all(v.passed for v in self.verdicts)

    @property
    def failed_reason(self) -> str:
        if self.error:
            return self.error
        return "; ".join(f"{v.check}: {v.reason}" for v in self.verdicts if not v.passed)


@dataclass
class Outcome:
    step: Step
    attempts: list[Attempt]

    @property
    def final(self) -> Attempt:
        return self.attempts[-1]

    @property
    def escalated(self) -> bool:
        return len(self.attempts) > 1

    @property
    def cost_usd(self) -> float:
        return sum(a.cost_usd for a in self.attempts)

    @property
    def frontier_cost_usd(self) -> float:
        return self.final.frontier_cost_usd

    @property
    def reason(self) -> str:
        f = self.final
        if not self.escalated:
            why = "passed " + ",".join(v.check for v in f.verdicts) if f.passed else "kept despite failed checks (no escalation): " + f.failed_reason
            return f"{f.tier} answered; {why}" if f.verdicts or not f.passed else f"{f.tier} answered"
        hops = " -> ".join(f"{a.tier} ({a.failed_reason})" for a in self.attempts[:-1])
        tail = "passed" if f.passed else "still failing: " + f.failed_reason
        return f"escalated from {hops} to {f.tier}; {tail}"

    def response(self) -> dict[str, Any]:
        """The OpenAI chat.completion object for the final answer."""
        res = self.final.result
        assert res is not None
        return {
            "id": "chatcmpl-" + self.step.step_id.removeprefix("step_"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.final.spec.name,
            "choices": [{"index": 0, "message": res.message, "finish_reason": res.finish_reason, "logprobs": None}],
            "usage": {"prompt_tokens": res.tokens_in, "completion_tokens": res.tokens_out,
                      "total_tokens": res.tokens_in + res.tokens_out},
            "smallfleet": self.summary(),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "step_id": self.step.step_id, "step_kind": self.step.kind.value, "tier": self.final.tier,
            "escalated": self.escalated, "cost_usd": round(self.cost_usd, 8), "reason": self.reason,
            "attempts": [{"model": a.spec.name, "tier": a.tier, "passed": a.passed, "error": a.error,
                          "checks": [v.as_dict() for v in a.verdicts]} for a in self.attempts],
        }

    def headers(self) -> dict[str, str]:
        f = self.final
        return {
            "x-smallfleet-model": f.spec.name,
            "x-smallfleet-tier": f.tier,
            "x-smallfleet-step-kind": self.step.kind.value,
            "x-smallfleet-escalated": "true" if self.escalated else "false",
            "x-smallfleet-cost": f"{self.cost_usd:.8f}",
            "x-smallfleet-step-id": self.step.step_id,
            "x-smallfleet-reason": self.reason.encode("ascii", "replace").decode()[:300],
        }


def estimate_tokens(request: dict[str, Any]) -> int:
    """Rough prompt size (bytes/3.5) used only for budget estimates; backends count exactly."""
    size = len(orjson.dumps(request.get("messages", []))) + len(orjson.dumps(request.get("tools") or []))
    return int(size / 3.5) + 8


class Cascade:
    def __init__(self, config: Config, fleet: Fleet, ledger: Ledger | None = None) -> None:
        self.config = config
        self.fleet = fleet
        self.ledger = ledger
        self.router = Router(config)

    def _estimate_cost(self, spec: ModelSpec, step: Step) -> float:
        out = step.request.get("max_tokens") or step.request.get("max_completion_tokens") or min(256, spec.max_output)
        return spec.cost(estimate_tokens(step.request), int(out))

    async def _attempt(self, spec: ModelSpec, tier: str, step: Step, checks: tuple[str, ...]) -> Attempt:
        if self.ledger is not None:
            self.ledger.check_budget(step.run_id, step.budget_usd, self._estimate_cost(spec, step))
        backend = self.fleet.get(spec.name)
        try:
            res = await backend.chat(step.request)
        except ContextLengthError as e:
            return Attempt(spec, tier, None, error=f"context: {e.message}")
        except BackendError as e:
            return Attempt(spec, tier, None, error=f"backend: {e.message}")
        fin, fout = self.config.frontier_price()
        att = Attempt(spec, tier, res, cost_usd=spec.cost(res.tokens_in, res.tokens_out),
                      frontier_cost_usd=(res.tokens_in * fin + res.tokens_out * fout) / 1_000_000)
        policy = self.router.policy(step)
        att.verdicts = run_checks(checks, step, res, policy)
        return att

    async def run(self, step: Step, model: str = "auto") -> Outcome:
        """Answer one step; raises SmallfleetError only when no attempt produced an answer."""
        if model != "auto":  # a concrete model passes through: checked and recorded, never escalated
            spec = self.fleet.spec(model)
            attempts = [await self._attempt(spec, spec.tier, step, self.router.policy(step).checks)]
        else:
            attempts = await self._cascade(step)
        outcome = Outcome(step, attempts)
        await self._record(outcome)
        final = outcome.final
        if final.result is None:
            errs = "; ".join(f"{a.spec.name}: {a.error}" for a in attempts)
            if all((a.error or "").startswith("context:") for a in attempts):
                raise ContextLengthError(f"the prompt does not fit any model's context window ({errs}).",
                                         hint="shorten the conversation")
            raise BackendError(f"no model could answer this step ({errs}).", hint="run `smallfleet doctor`")
        return outcome

    async def _cascade(self, step: Step) -> list[Attempt]:
        policy = self.router.policy(step)
        tier: str | None = policy.start
        attempts: list[Attempt] = []
        while tier is not None:
            spec = self.config.tier_model(tier)
            att = await self._attempt(spec, tier, step, policy.checks)
            attempts.append(att)
            if att.passed or (att.result is not None and not policy.escalate):
                break
            if len(attempts) > self.config.max_escalations:
                break
            nxt = self.router.escalate_from(tier, [a.spec for a in attempts])
            if nxt is None:
                break
            att.escalated = True
            tier = nxt
        # Prefer the last attempt that produced an answer, so a dead top tier does not lose a usable one.
        if attempts[-1].result is None:
            answered = [a for a in attempts if a.result is not None]
            if answered:
                best = answered[-1]
                attempts.remove(best)
                attempts.append(best)
        return attempts

    def can_stream_live(self, step: Step) -> bool:
        """Live streaming is for text answers only: tool calls and JSON must be checked before they leave."""
        return not step.tools and not step.wants_json()

    def live(self, step: Step, model: str = "auto") -> "LiveStream":
        spec = self.fleet.spec(model) if model != "auto" else self.config.tier_model(self.router.policy(step).start)
        if self.ledger is not None:
            self.ledger.check_budget(step.run_id, step.budget_usd, self._estimate_cost(spec, step))
        return LiveStream(self, step, spec)

    async def _record(self, outcome: Outcome) -> None:
        if self.ledger is None:
            return
        step = outcome.step
        rows = []
        for i, a in enumerate(outcome.attempts):
            r = a.result
            rows.append(AttemptRow(
                step_id=step.step_id, run_id=step.run_id, session_id=step.session_id, step_kind=step.kind.value,
                attempt=i, model=a.spec.name, tier=a.tier, stand_in=bool(a.spec.stands_in_for),
                tokens_in=r.tokens_in if r else 0, tokens_out=r.tokens_out if r else 0,
                cached_tokens=r.cached_tokens if r else 0, cost_usd=a.cost_usd, frontier_cost_usd=a.frontier_cost_usd,
                latency_ms=r.latency_ms if r else 0.0, checks=[v.as_dict() for v in a.verdicts], passed=a.passed,
                escalated=a.escalated, final=i == len(outcome.attempts) - 1, error=a.error,
                reason=outcome.reason if i == len(outcome.attempts) - 1 else a.failed_reason or None,
            ))
        await self.ledger.record_step_async(rows, step.budget_usd)


class LiveStream:
    """A text step streamed straight from its starting tier (opt-in: ``x-smallfleet-stream: live``).

    Tokens reach the client as they are generated, so nothing can be escalated: the checks still run
    on the finished text and are recorded with the attempt, and the final chunk carries the summary.
    """

    def __init__(self, cascade: Cascade, step: Step, spec: ModelSpec) -> None:
        self.cascade, self.step, self.spec = cascade, step, spec
        self.outcome: Outcome | None = None

    def headers(self) -> dict[str, str]:
        return {"x-smallfleet-model": self.spec.name, "x-smallfleet-tier": self.spec.tier,
                "x-smallfleet-step-kind": self.step.kind.value, "x-smallfleet-escalated": "false",
                "x-smallfleet-step-id": self.step.step_id, "x-smallfleet-stream": "live"}

    async def chunks(self, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
        backend = self.cascade.fleet.get(self.spec.name)
        cid = "chatcmpl-" + self.step.step_id.removeprefix("step_")
        created = int(time.time())
        parts: list[str] = []
        finish, tin, tout, error = "stop", 0, 0, None
        t0 = time.perf_counter()
        try:
            async for ch in backend.stream(self.step.request):
                usage, timings = ch.get("usage"), ch.get("timings")
                if usage:
                    tin, tout = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
                elif timings:
                    tin = int(timings.get("prompt_n", 0)) + int(timings.get("cache_n", 0))
                    tout = int(timings.get("predicted_n", 0))
                for c in ch.get("choices") or []:
                    delta = c.get("delta") or {}
                    if delta.get("content"):
                        parts.append(delta["content"])
                    if c.get("finish_reason"):
                        finish = c["finish_reason"]
                    yield {"id": cid, "object": "chat.completion.chunk", "created": created, "model": self.spec.name,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": c.get("finish_reason")}]}
        except BaseException as e:  # client gone or backend failed: record what was generated
            error = f"stream ended early: {e.__class__.__name__}"
            raise
        finally:
            res = ChatResult(self.spec.name, {"role": "assistant", "content": "".join(parts)}, finish, tin,
                             tout or len(parts), (time.perf_counter() - t0) * 1000)
            fin, fout = self.cascade.config.frontier_price()
            att = Attempt(self.spec, self.spec.tier, res, error=error, cost_usd=self.spec.cost(tin, res.tokens_out),
                          frontier_cost_usd=(tin * fin + res.tokens_out * fout) / 1_000_000)
            att.verdicts = run_checks(self.cascade.router.policy(self.step).checks, self.step, res,
                                      self.cascade.router.policy(self.step))
            self.outcome = Outcome(self.step, [att])
            await self.cascade._record(self.outcome)
        summary = self.outcome.summary()
        yield {"id": cid, "object": "chat.completion.chunk", "created": created, "model": self.spec.name,
               "choices": [], "smallfleet": summary,
               **({"usage": {"prompt_tokens": tin, "completion_tokens": res.tokens_out, "total_tokens": tin + res.tokens_out}}
                  if include_usage else {})}


__all__ = ["Attempt", "Cascade", "LiveStream", "Outcome", "SmallfleetError", "estimate_tokens"]
