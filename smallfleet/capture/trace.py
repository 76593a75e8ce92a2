"""One captured step as the learning loop sees it: the request, every attempt, the accepted answer.

A :class:`Trace` comes from the gateway (:func:`from_outcome`, after the cascade answered) or from a
log line of an agent that ran on a frontier model only (:func:`from_logged`). Either way it is
pseudonymised (:meth:`Trace.scrubbed`) before it reaches the store, so the store and everything
derived from it (clusters, replays, exports) hold placeholders, never the personal data itself.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import InvalidRequestError
from ..request import check_depth, validate_request
from ..step import classify_step

if TYPE_CHECKING:
    from ..outcome import Outcome
    from ..privacy.pseudonymize import Pseudonymizer

# What of a chat request the loop keeps: enough to replay the step (sampling settings are the
# gateway's to choose on replay; metadata and user ids are the client's business).
KEPT_REQUEST_KEYS = ("messages", "tools", "tool_choice", "response_format", "parallel_tool_calls", "max_tokens")
MAX_ID = 256
_SPACE = re.compile(r"\s+")
_DIGITS = re.compile(r"\d+")


@dataclass
class TraceAttempt:
    model: str
    tier: str
    message: dict[str, Any] | None  # the model's answer (None when the call failed)
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # {"check", "passed", "reason"}
    error: str | None = None
    cost_usd: float = 0.0
    latency_ms: float = 0.0

    @property
    def passed(self) -> bool:
        return self.message is not None and self.error is None and all(v.get("passed") for v in self.verdicts)


@dataclass
class Trace:
    """A step: what was asked, who tried, what was accepted, and what the agent later said of it."""

    id: str
    kind: str
    request: dict[str, Any]
    final: dict[str, Any]  # the accepted assistant message
    source: str = "gateway"  # or "import"
    trace: str | None = None  # the conversation (agent run) the step belongs to
    ts: float = field(default_factory=time.time)  # when the step ran
    model: str = ""
    tier: str = ""
    verified: bool | None = None  # the final answer passed its checks (None: never checked, e.g. imported)
    error: str | None = None
    cost_usd: float = 0.0
    frontier_cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    feedback: float | None = None  # the agent's word, 0 (wrong) .. 1 (right)
    attempts: list[TraceAttempt] = field(default_factory=list)

    @property
    def signature(self) -> str:
        return structure_signature(self.request, self.kind)

    def payload(self) -> dict[str, Any]:
        """What the store keeps encrypted: the texts. Everything else is a column."""
        return {"request": self.request, "final": self.final,
                "attempts": [a.__dict__ for a in self.attempts]}

    def scrubbed(self, pz: Pseudonymizer) -> Trace:
        """A copy with personal data replaced by placeholders, one vault for the request, every attempt
        and the final answer, so ``<PERSON_1>`` is the same person wherever it appears."""
        answers = [a.message for a in self.attempts if a.message is not None]
        red, _ = pz.redact_messages([*self.request.get("messages", []), *answers, self.final])
        n = len(self.request.get("messages", []))
        it = iter(red[n:n + len(answers)])
        attempts = [replace(a, message=next(it) if a.message is not None else None,
                            error=_redact_text(pz, a.error), verdicts=[{**v, "reason": _redact_text(pz, v.get("reason"))}
                                                                       for v in a.verdicts])
                    for a in self.attempts]
        return replace(self, request={**self.request, "messages": red[:n]}, final=red[-1], attempts=attempts,
                       error=_redact_text(pz, self.error))


def _redact_text(pz: Pseudonymizer, text: str | None) -> str | None:
    # verdict reasons and errors quote the answer ("invented the number 4411 2345 …")
    return pz.redact(text).text if text else text


def structure_signature(request: dict[str, Any], kind: str) -> str:
    """The step's shape, not its words: kind, the offered tool names, the response schema, the
    system prompt with numbers and spacing folded, and the last message's role. Steps with one signature are one candidate task;
    cheap enough (a hash) for the router to compute on every request."""
    tools = sorted(str((t.get("function") or {}).get("name", "")) for t in request.get("tools") or [] if isinstance(t, dict))
    rf = request.get("response_format")
    schema = orjson.dumps(rf, option=orjson.OPT_SORT_KEYS).decode() if isinstance(rf, dict) else ""
    system = ""
    for m in request.get("messages") or []:
        if isinstance(m, dict) and m.get("role") in ("system", "developer"):
            c = m.get("content")
            system = c if isinstance(c, str) else " ".join(p.get("text", "") for p in c or [] if isinstance(p, dict))
            break
    system = _DIGITS.sub("0", _SPACE.sub(" ", system[:3000].strip().lower()))[:2000]  # the head says whose agent it is
    msgs = request.get("messages") or []
    # where in the loop: choosing a call (after the user) and answering from a result (after a tool) differ
    phase = str(msgs[-1].get("role", "")) if msgs and isinstance(msgs[-1], dict) else ""
    h = hashlib.blake2b(f"{kind}\x00{','.join(tools)}\x00{schema}\x00{system}\x00{phase}".encode(), digest_size=8)
    return h.hexdigest()


def task_text(request: dict[str, Any]) -> str:
    """The words that say what this step is about: the last user message (the system prompt and
    tool schemas are the same for every step of one task and already in the signature)."""
    for m in reversed(request.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            return " ".join(p.get("text", "") for p in c or [] if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def from_outcome(outcome: Outcome) -> Trace:
    """The trace of a step the gateway answered."""
    step = outcome.step
    attempts = []
    for a in outcome.attempts:
        r = a.result
        attempts.append(TraceAttempt(
            model=a.spec.name, tier=a.tier, message=dict(r.message) if r is not None else None,
            verdicts=[{"check": v.check, "passed": v.passed, "reason": v.reason} for v in a.verdicts],
            error=a.error, cost_usd=a.cost_usd, latency_ms=r.latency_ms if r is not None else 0.0))
    f = outcome.final
    res = f.result
    return Trace(
        id=step.step_id, kind=step.kind.value, request={k: step.request[k] for k in KEPT_REQUEST_KEYS if k in step.request},
        final=dict(outcome.message), source="gateway", trace=step.run_id or step.session_id, model=f.spec.name, tier=f.tier,
        verified=f.passed, error=f.error, cost_usd=outcome.cost_usd, frontier_cost_usd=outcome.frontier_cost_usd,
        tokens_in=res.tokens_in if res is not None else 0, tokens_out=res.tokens_out if res is not None else 0,
        attempts=attempts)


def from_logged(obj: Any, price_in: float = 2.5, price_out: float = 10.0) -> Trace:
    """A trace from one line of an agent's own log: ``{"request", "response", "id"?, "trace"?, "feedback"?}``.

    The request is checked with the gateway's own rules (sizes, depth, roles, tools); the response must
    be a chat completion with an assistant message. Raises InvalidRequestError saying what is wrong.
    Its cost is priced at the reference (frontier) price per 1M tokens, as the ledger prices a step."""
    if not isinstance(obj, dict):
        raise InvalidRequestError("a line must be a JSON object with \"request\" and \"response\".")
    unknown = set(obj) - {"request", "response", "id", "trace", "feedback"}
    if unknown:
        raise InvalidRequestError(f"unknown key {sorted(unknown)[0]!r}; a line has request, response, id, trace, feedback.")
    req, resp = obj.get("request"), obj.get("response")
    if not isinstance(req, dict):
        raise InvalidRequestError("\"request\" must be a chat.completions request object.")
    try:
        validate_request(req)
    except InvalidRequestError as e:
        raise InvalidRequestError(f"request: {e.message}") from None
    if not isinstance(resp, dict):
        raise InvalidRequestError("\"response\" must be a chat.completion object.")
    check_depth(resp)
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict) \
            or not isinstance(choices[0].get("message"), dict):
        raise InvalidRequestError("response has no choices[0].message.")
    msg = dict(choices[0]["message"])
    if msg.get("role", "assistant") != "assistant":
        raise InvalidRequestError(f"response message has role {str(msg.get('role'))[:20]!r}, expected 'assistant'.")
    msg["role"] = "assistant"
    msg = {k: msg[k] for k in ("role", "content", "tool_calls", "refusal") if k in msg}
    try:  # the answer obeys the same bounds as a message the client sends
        validate_request({"messages": [*req["messages"], msg]})
    except InvalidRequestError as e:
        raise InvalidRequestError(f"response message: {e.message}") from None
    ident = obj.get("id")
    conv = obj.get("trace")
    for name, v in (("id", ident), ("trace", conv)):
        if v is not None and not (isinstance(v, str) and 0 < len(v) <= MAX_ID):
            raise InvalidRequestError(f"\"{name}\" must be a non-empty string of at most {MAX_ID} characters.")
    fb = obj.get("feedback")
    if fb is not None and (isinstance(fb, bool) or not isinstance(fb, (int, float)) or not math.isfinite(fb) or not 0 <= fb <= 1):
        raise InvalidRequestError("\"feedback\" must be a number from 0 (wrong) to 1 (right).")
    raw_usage = resp.get("usage")
    usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
    tin, tout = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    tin = tin if isinstance(tin, int) and tin >= 0 else 0
    tout = tout if isinstance(tout, int) and tout >= 0 else 0
    created = resp.get("created")
    ts = float(created) if isinstance(created, (int, float)) and not isinstance(created, bool) and 0 < created < 1e11 else time.time()
    raw_model = resp.get("model")
    model = raw_model[:200] if isinstance(raw_model, str) else ""
    cost = (tin * price_in + tout * price_out) / 1e6
    kind = classify_step(req).value
    kept = {k: req[k] for k in KEPT_REQUEST_KEYS if k in req}
    if ident is None:  # the same line imported twice is one trace
        ident = "imp_" + hashlib.blake2b(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS), digest_size=12).hexdigest()
    return Trace(id=ident, kind=kind, request=kept, final=msg, source="import", trace=conv, ts=ts, model=model,
                 tier="", verified=None, cost_usd=cost, frontier_cost_usd=cost, tokens_in=tin, tokens_out=tout,
                 feedback=float(fb) if fb is not None else None,
                 attempts=[TraceAttempt(model=model, tier="", message=msg, cost_usd=cost)])

