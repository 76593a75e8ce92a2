"""An :class:`~smallfleet.outcome.Outcome` on the wire: the OpenAI ``chat.completion`` object, the
``smallfleet`` summary it carries, and the ``x-smallfleet-*`` response headers."""

from __future__ import annotations

import time
from typing import Any

from ..outcome import Outcome, completion_id
from ..spec import ModelSpec
from ..step import Step


def _ascii(text: str, limit: int) -> str:
    return text.encode("ascii", "replace").decode()[:limit]


def chat_completion(outcome: Outcome) -> dict[str, Any]:
    """The OpenAI chat.completion object for the final answer."""
    res = outcome.final.result
    if res is None:
        raise ValueError("the outcome has no answer to render")
    return {
        "id": completion_id(outcome.step),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": outcome.final.spec.name,
        "choices": [{"index": 0, "message": res.message, "finish_reason": res.finish_reason, "logprobs": None}],
        "usage": {"prompt_tokens": res.tokens_in, "completion_tokens": res.tokens_out,
                  "total_tokens": res.tokens_in + res.tokens_out},
        "smallfleet": summary(outcome),
    }


def summary(outcome: Outcome) -> dict[str, Any]:
    """The ``smallfleet`` field: tier, escalation, verdicts of every attempt, guard decisions, citations."""
    step, g = outcome.step, outcome.guard
    out: dict[str, Any] = {
        "step_id": step.step_id, "step_kind": step.kind.value, "tier": outcome.final.tier,
        "escalated": outcome.escalated, "verdict": outcome.verdict, "cost_usd": round(outcome.cost_usd, 8),
        "reason": outcome.reason,
        "attempts": [{"model": a.spec.name, "tier": a.tier, "passed": a.passed, "error": a.error,
                      "checks": [v.as_dict() for v in a.verdicts]} for a in outcome.attempts],
    }
    if g is not None:
        out["guard"] = {"mode": outcome.guard_mode, "trust": g.label.name.lower(), "risk": g.risk,
                        "decisions": [d.as_dict() for d in g.decisions],
                        "injection": [{"source": s, "score": f.score, "reasons": list(f.reasons)} for s, f in g.flagged]}
    if step.evidence is not None:
        out["citations"] = step.evidence.citations()
    return out


def headers(outcome: Outcome) -> dict[str, str]:
    f, step = outcome.final, outcome.step
    h = {
        "x-smallfleet-model": f.spec.name,
        "x-smallfleet-tier": f.tier,
        "x-smallfleet-step-kind": step.kind.value,
        "x-smallfleet-escalated": "true" if outcome.escalated else "false",
        "x-smallfleet-cost": f"{outcome.cost_usd:.8f}",
        "x-smallfleet-step-id": step.step_id,
        "x-smallfleet-reason": _ascii(outcome.reason, 300),
        "x-smallfleet-verdict": outcome.verdict,
        **guard_headers(outcome),
    }
    if step.evidence is not None:
        h["x-smallfleet-citations"] = _ascii(step.evidence.header(), 400)
    if outcome.crosschecked:
        h["x-smallfleet-crosschecked"] = _ascii(outcome.crosschecked, 200)
    return h


def guard_headers(outcome: Outcome) -> dict[str, str]:
    g = outcome.guard
    if g is None:
        return {}
    out = {"x-smallfleet-trust": g.label.name.lower(), "x-smallfleet-risk": g.risk}
    blocked = g.blocked
    if blocked:
        state = {"block": "blocked", "flag": "flagged", "confirm": "needs-confirmation"}[outcome.guard_mode]
        out["x-smallfleet-guard"] = f"{state}: " + _ascii("; ".join(f"{d.tool}: {d.reason}" for d in blocked), 400)
    elif g.decisions:
        out["x-smallfleet-guard"] = "allowed"
    if g.flagged:
        out["x-smallfleet-injection"] = _ascii("; ".join(f"{src}: {', '.join(f.reasons[:2])}" for src, f in g.flagged), 300)
    return out


def live_headers(step: Step, spec: ModelSpec) -> dict[str, str]:
    """Headers of a live stream: sent before the answer exists, so no verdict or cost."""
    h = {"x-smallfleet-model": spec.name, "x-smallfleet-tier": spec.tier, "x-smallfleet-step-kind": step.kind.value,
         "x-smallfleet-escalated": "false", "x-smallfleet-step-id": step.step_id, "x-smallfleet-stream": "live"}
    if step.notes:  # e.g. "session facts pinned", "personal data present: started on local tier ..."
        h["x-smallfleet-reason"] = _ascii("streamed live (checks run after, no escalation); " + "; ".join(step.notes), 300)
    return h


def live_final_chunk(outcome: Outcome, created: int, include_usage: bool) -> dict[str, Any]:
    """The last chunk of a live stream: the summary of the recorded attempt, and usage when asked."""
    res = outcome.final.result
    chunk: dict[str, Any] = {"id": completion_id(outcome.step), "object": "chat.completion.chunk", "created": created,
                             "model": outcome.final.spec.name, "choices": [], "smallfleet": summary(outcome)}
    if include_usage and res is not None:
        chunk["usage"] = {"prompt_tokens": res.tokens_in, "completion_tokens": res.tokens_out,
                          "total_tokens": res.tokens_in + res.tokens_out}
    return chunk
