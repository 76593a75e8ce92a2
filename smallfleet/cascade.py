"""The cascade: run a step on its starting tier, check the answer, escalate one tier when a check fails.

Escalation is bounded by ``fleet.max_escalations`` and never revisits a model, so it cannot loop.
Every attempt — accepted, rejected or failed — is recorded, and the step's attempts reach the ledger
in one transaction.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from .checks import Verdict, run_checks
from .config import Config, ModelSpec
from .errors import BackendError, ContextLengthError, SmallfleetError
from .guards import Guard, Review, call_token, datamark, decode_args
from .ledger import AttemptRow, Ledger
from .fleet import Fleet
from .models import ChatResult
from .privacy.guard import PrivacyGuard
from .routing import Router
from .step import Step
from .verify.checks import process_inputs
from .verify.judge import judge_request, read_judgement
from .verify.process import MAX_STEPS


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
    pseudonymised: int = -1  # entities replaced before a remote call; -1 = sent as is (local model)
    restore_note: str = ""  # mangled / unknown placeholders met when restoring the answer

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
    guard: Review | None = None
    guard_mode: str = "off"

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
        notes = [*self.step.notes, *(a.restore_note for a in self.attempts if a.restore_note)]
        hidden = [a for a in self.attempts if a.pseudonymised >= 0]
        if hidden:
            notes.append(f"sent to {', '.join(a.spec.name for a in hidden)} pseudonymised "
                         f"({max(a.pseudonymised for a in hidden)} entities)")
        return self._why() + ("; " + "; ".join(notes) if notes else "")

    def _why(self) -> str:
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
            "escalated": self.escalated, "verdict": self.verdict, "cost_usd": round(self.cost_usd, 8), "reason": self.reason,
            "attempts": [{"model": a.spec.name, "tier": a.tier, "passed": a.passed, "error": a.error,
                          "checks": [v.as_dict() for v in a.verdicts]} for a in self.attempts],
            **({"guard": {"mode": self.guard_mode, "trust": self.guard.label.name.lower(), "risk": self.guard.risk,
                          "decisions": [d.as_dict() for d in self.guard.decisions],
                          "injection": [{"source": s, "score": f.score, "reasons": list(f.reasons)} for s, f in self.guard.flagged]}}
               if self.guard is not None else {}),
            **({"citations": self.step.evidence.citations()} if self.step.evidence is not None else {}),
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
            "x-smallfleet-verdict": self.verdict,
            **self.guard_headers(),
            **({"x-smallfleet-citations": self.step.evidence.header().encode("ascii", "replace").decode()[:400]}
               if self.step.evidence is not None else {}),
        }

    def guard_headers(self) -> dict[str, str]:
        g = self.guard
        if g is None:
            return {}
        out = {"x-smallfleet-trust": g.label.name.lower(), "x-smallfleet-risk": g.risk}
        blocked = g.blocked
        if blocked:
            state = {"block": "blocked", "flag": "flagged", "confirm": "needs-confirmation"}[self.guard_mode]
            out["x-smallfleet-guard"] = f"{state}: " + "; ".join(f"{d.tool}: {d.reason}" for d in blocked)[:400].encode(
                "ascii", "replace").decode()
        elif g.decisions:
            out["x-smallfleet-guard"] = "allowed"
        if g.flagged:
            out["x-smallfleet-injection"] = "; ".join(f"{src}: {', '.join(f.reasons[:2])}" for src, f in g.flagged)[:300].encode(
                "ascii", "replace").decode()
        return out

    @property
    def verdict(self) -> str:
        """"pass", or "fail:" and the checks the final answer still fails."""
        f = self.final
        if f.passed:
            return "pass"
        return "fail:" + (",".join(v.check for v in f.verdicts if not v.passed) or "error")


def _datamarked(request: dict[str, Any]) -> dict[str, Any]:
    """The request with every tool result wrapped and datamarked, so the model can tell data from instructions."""
    msgs = [{**m, "content": datamark(m["content"], f"tool result {i}")} if m.get("role") == "tool" and isinstance(m.get("content"), str)
            else m for i, m in enumerate(request["messages"])]
    return {**request, "messages": msgs}


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


class Cascade:
    def __init__(self, config: Config, fleet: Fleet, ledger: Ledger | None = None,
                 privacy: PrivacyGuard | None = None, guard: Guard | None = None) -> None:
        self.config = config
        self.fleet = fleet
        self.ledger = ledger
        self.router = Router(config)
        self.privacy = privacy
        self.guard = guard
        self._max_context = max(m.context for m in config.models.values())

    def _guarded(self, spec: ModelSpec) -> bool:
        """Personal data is pseudonymised for every model that does not run on this machine."""
        return self.privacy is not None and self.privacy.enabled and not spec.is_local

    def _estimate_cost(self, spec: ModelSpec, step: Step) -> float:
        out = step.request.get("max_tokens") or step.request.get("max_completion_tokens") or min(256, spec.max_output)
        return spec.cost(estimate_tokens(step.request), int(out))

    async def _attempt(self, spec: ModelSpec, tier: str, step: Step, checks: tuple[str, ...]) -> Attempt:
        floor = step.prompt_floor  # measured once per step, in run()
        if floor > spec.context:  # certain not to fit: say so without loading the model
            return Attempt(spec, tier, None, error=f"context: the prompt is at least {floor} tokens; {spec.name} "
                                                   f"holds {spec.context}")
        if self.ledger is not None:
            step.reserved += self.ledger.reserve(step.run_id, step.budget_usd, self._estimate_cost(spec, step))
        backend = self.fleet.get(spec.name)
        request, pz, hidden = step.request, None, -1
        if step.datamark if step.datamark is not None else self.config.guards.datamark:
            request = _datamarked(request)
        if self._guarded(spec):
            assert self.privacy is not None
            request, pz, hidden = self.privacy.outbound(step.request, step.privacy_key)
        try:
            res = await backend.chat(request)
        except ContextLengthError as e:
            return Attempt(spec, tier, None, error=f"context: {e.message}", pseudonymised=hidden)
        except BackendError as e:
            return Attempt(spec, tier, None, error=f"backend: {e.message}", pseudonymised=hidden)
        note = ""
        if pz is not None:
            res.message, rep = pz.restore_message(res.message)
            res.raw_text = res.message.get("content") or res.raw_text
            if rep.mangled or rep.unknown:
                note = (f"repaired mangled placeholders {rep.mangled}; " if rep.mangled else "") + \
                       (f"left unknown placeholders {rep.unknown}" if rep.unknown else "")
        att = Attempt(spec, tier, res, cost_usd=spec.cost(res.tokens_in, res.tokens_out),
                      frontier_cost_usd=self.config.frontier_cost(res.tokens_in, res.tokens_out),
                      pseudonymised=hidden, restore_note=note)
        policy = self.router.policy(step)
        att.verdicts = run_checks(checks, step, res, policy)
        if self.config.verify.judge:
            await self._judge(att, step)
        return att

    async def _judge(self, att: Attempt, step: Step) -> None:
        """A reasoning answer whose process score falls in [verify] band (the distilled verifier is
        unsure) is judged by the configured judge model, whose reading replaces the verdict. Never the
        model that wrote the answer; a recomputed arithmetic error (score 1.0) is certain, not judged."""
        i = next((k for k, v in enumerate(att.verdicts) if v.check == "process"), None)
        lo, hi = self.config.verify.band
        if i is None or att.result is None:
            return
        v = att.verdicts[i]
        if v.score is None or not lo <= v.score <= hi or v.score >= 1.0:
            return
        inputs = process_inputs(step, att.result)
        judge = self.config.judge_model()
        if inputs is None or judge is None:
            return
        unsure = f"unsure ({v.score:.2f})"

        def stands(why: str) -> Verdict:  # the verifier's own verdict, with why the judge did not decide
            return replace(v, reason=f"{v.reason}; {unsure}; {why}" if v.reason else f"{unsure}; {why}")

        if (judge.stands_in_for or judge.name) == (att.spec.stands_in_for or att.spec.name):
            att.verdicts[i] = stands(f"not judged: the judge {judge.name} wrote it")
            return
        problem, steps = inputs[0], inputs[1][:MAX_STEPS]
        request = judge_request(problem, steps)
        try:
            if self.ledger is not None:
                step.reserved += self.ledger.reserve(step.run_id, step.budget_usd, judge.cost(estimate_tokens(request), 6))
            if self._guarded(judge):
                assert self.privacy is not None
                request = self.privacy.outbound(request, step.privacy_key)[0]
            res = await self.fleet.get(judge.name).chat(request)
        except SmallfleetError as e:  # no judge (down, over budget): the verifier's own verdict stands
            att.verdicts[i] = stands(f"judge {judge.name} not asked: {e.message}")
            return
        cost = judge.cost(res.tokens_in, res.tokens_out)
        att.cost_usd += cost
        k = read_judgement(res.content, len(steps))
        who = f"judge {judge.name} ({res.tokens_in + res.tokens_out} tokens, ${cost:.6f})"
        if k is None:
            att.verdicts[i] = stands(f"{who} gave no step number")
        else:
            att.verdicts[i] = Verdict("process", k < 0, f"{unsure}; {who}: " + ("every step is correct" if k < 0 else f"step {k + 1} is wrong"),
                                      v.score)

    async def run(self, step: Step, model: str = "auto") -> Outcome:
        """Answer one step; raises SmallfleetError only when no attempt produced an answer."""
        chars = prompt_chars(step.request)
        if chars > OFF_LOOP_CHARS:  # scanning megabytes would stall the event loop
            step.prompt_floor = await asyncio.to_thread(min_prompt_tokens, step.request, self._max_context, chars)
            await asyncio.to_thread(self._guard_context, step)
        else:
            step.prompt_floor = min_prompt_tokens(step.request, self._max_context, chars)
        try:
            if model != "auto":  # a concrete model passes through: checked and recorded, never escalated
                spec = self.fleet.spec(model)
                attempts = [await self._attempt(spec, spec.tier, step, self._checks(step))]
            else:
                attempts = await self._cascade(step)
            outcome = Outcome(step, attempts)
            self._apply_guard(outcome)
            await self._record(outcome)
        finally:
            self._release(step)
        final = outcome.final
        if final.result is None:
            errs = "; ".join(f"{a.spec.name}: {a.error}" for a in attempts)
            if all((a.error or "").startswith("context:") for a in attempts):
                raise ContextLengthError(f"the prompt does not fit any model's context window ({errs}).",
                                         hint="shorten the conversation")
            raise BackendError(f"no model could answer this step ({errs}).", hint="run `smallfleet doctor`")
        return outcome

    def _start_tier(self, step: Step) -> str:
        """The policy's start tier — moved down to the largest local tier when personal data is present,
        and up one tier when the detector flags injected instructions in what the model will read."""
        start = self._risk_tier(step, self.router.policy(step).start)
        if step.evidence is not None and step.evidence.weak:
            up = self._local_above(start)
            if up is not None:
                step.notes.append(f"weak evidence: started on {up}")
                start = up
        if not self._guarded(self.config.tier_model(start)):
            return start
        assert self.privacy is not None
        if not self.privacy.settings.prefer_local:
            return start
        i = self.config.tiers.index(start)
        below = [t for t in self.config.tiers[:i] if self.config.tier_model(t).is_local]
        above = [t for t in self.config.tiers[i + 1:] if self.config.tier_model(t).is_local]
        local = below[-1] if below else (above[0] if above else None)  # the nearest local tier
        if local is not None and self.privacy.has_pii(step.request):
            step.notes.append(f"personal data present: started on local tier {local} instead of {start}")
            return local
        return start

    def _local_above(self, tier: str) -> str | None:
        """The next tier up whose model runs on this machine (risk and weak evidence move a step there)."""
        i = self.config.tiers.index(tier)
        return next((t for t in self.config.tiers[i + 1:] if self.config.tier_model(t).is_local), None)

    def _checks(self, step: Step) -> tuple[str, ...]:
        """The policy's checks, plus the evidence check for a grounded step."""
        return self.router.policy(step).checks + (("evidence_grounded",) if step.evidence is not None else ())

    def _guard_context(self, step: Step) -> Any:
        """Labelled context + detector findings, computed once per step (only when tool output is present)."""
        if step.guard_ctx is None and self.guard is not None and any(m.get("role") == "tool" for m in step.messages):
            step.guard_ctx = self.guard.context(step.messages)
        return step.guard_ctx

    def _risk_tier(self, step: Step, start: str) -> str:
        mode = step.guard_mode or self.config.guards.mode
        if mode == "off" or self._guard_context(step) is None or not step.guard_ctx[1]:
            return start
        up = self._local_above(start)
        if up is None:
            step.notes.append("injection flagged in tool output (no larger local tier to move to)")
            return start
        step.notes.append(f"injection flagged in tool output: started on {up} instead of {start}")
        return up

    async def _cascade(self, step: Step) -> list[Attempt]:
        policy = self.router.policy(step)
        checks = self._checks(step)
        tier: str | None = self._start_tier(step)
        attempts: list[Attempt] = []
        while tier is not None:
            spec = self.config.tier_model(tier)
            att = await self._attempt(spec, tier, step, checks)
            attempts.append(att)
            if att.passed or (att.result is not None and not policy.escalate):
                break
            if len(attempts) > self.config.max_escalations:
                break
            # a prompt that did not fit is not tried on a model whose window is no larger (nor loaded for it)
            too_long = max((a.spec.context for a in attempts if (a.error or "").startswith("context:")), default=0)
            nxt = self.router.escalate_from(tier, [a.spec for a in attempts], too_long)
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

    def _apply_guard(self, outcome: Outcome) -> None:
        """Check the final answer's tool calls against policy and provenance; block, flag or ask to confirm."""
        mode = outcome.step.guard_mode or self.config.guards.mode
        res = outcome.final.result
        if self.guard is None or mode == "off" or res is None:
            return
        step = outcome.step
        calls = res.message.get("tool_calls") or []
        has_tool_text = any(m.get("role") == "tool" for m in step.messages)
        if not calls and not has_tool_text:
            return  # nothing untrusted read and nothing to decide: keep the hot path free
        review = self.guard.review(step.messages, calls, step.tools, step.approved, context=self._guard_context(step))
        if step.datamark if step.datamark is not None else self.config.guards.datamark:
            step.notes.append("tool output shown to the model datamarked")
        outcome.guard, outcome.guard_mode = review, mode
        if mode == "flag" or not review.blocked:
            return
        keep = [tc for tc, d in zip(calls, review.decisions) if d.allowed]
        lines = []
        for tc, d in zip(calls, review.decisions):
            if d.allowed:
                continue
            fn = tc.get("function") or {}
            line = f"I did not call {d.tool}: {d.reason}."
            if mode == "confirm":
                line += (f" If you want it anyway, confirm and resend with header "
                         f"x-smallfleet-approve: {call_token(str(fn.get('name')), decode_args(fn.get('arguments')))}")
            lines.append(line)
        msg = dict(res.message)
        text = (msg.get("content") or "").strip()
        msg["content"] = (text + "\n\n" if text else "") + "\n".join(lines)
        if keep:
            msg["tool_calls"] = keep
        else:
            msg.pop("tool_calls", None)
            res.finish_reason = "stop"
        res.message = msg

    def can_stream_live(self, step: Step) -> bool:
        """Live streaming is for text answers only: tool calls, JSON and grounded answers (their citation
        check may escalate) must be checked before they leave."""
        return not step.tools and not step.wants_json() and step.kb is None

    def live(self, step: Step, model: str = "auto") -> LiveStream:
        spec = self.fleet.spec(model) if model != "auto" else self.config.tier_model(self.router.policy(step).start)
        if self.ledger is not None:
            step.reserved += self.ledger.reserve(step.run_id, step.budget_usd, self._estimate_cost(spec, step))
        return LiveStream(self, step, spec)

    def _release(self, step: Step) -> None:
        """Hand back what the step still holds (it failed or was cancelled before its write released it)."""
        if step.reserved and self.ledger is not None:
            self.ledger.release(step.run_id, step.reserved)
        step.reserved = 0.0

    def _scrub(self, text: str | None, step: Step) -> str | None:
        """Errors and failed-check reasons can quote the request; the ledger keeps no personal data."""
        if self.privacy is None or not self.privacy.enabled or not text:
            return text
        return self.privacy.scrub(text, step.privacy_key)

    async def _record(self, outcome: Outcome) -> None:
        if self.ledger is None:
            return
        step = outcome.step
        rows = []
        clean = all(a.passed for a in outcome.attempts)  # generated text only: nothing to scrub
        final_reason = outcome.reason if clean else self._scrub(outcome.reason, step)
        for i, a in enumerate(outcome.attempts):
            r = a.result
            rows.append(AttemptRow(
                step_id=step.step_id, run_id=step.run_id, session_id=step.session_id, step_kind=step.kind.value,
                attempt=i, model=a.spec.name, tier=a.tier, stand_in=bool(a.spec.stands_in_for),
                tokens_in=r.tokens_in if r else 0, tokens_out=r.tokens_out if r else 0,
                cached_tokens=r.cached_tokens if r else 0, cost_usd=a.cost_usd, frontier_cost_usd=a.frontier_cost_usd,
                latency_ms=r.latency_ms if r else 0.0, checks=[v.as_dict() for v in a.verdicts], passed=a.passed,
                escalated=a.escalated, final=i == len(outcome.attempts) - 1, error=self._scrub(a.error, step),
                reason=final_reason if i == len(outcome.attempts) - 1 else self._scrub(a.failed_reason, step) or None,
                guard=self._guard_rows(outcome, step) if i == len(outcome.attempts) - 1 else (),
            ))
        # the writer releases the reservation once the real cost is committed (or the write failed),
        # even when this request is cancelled meanwhile
        reserved, step.reserved = step.reserved, 0.0
        await self.ledger.record_step_async(rows, step.budget_usd, reserved)


    def _guard_rows(self, outcome: Outcome, step: Step) -> tuple[dict[str, Any], ...]:
        g = outcome.guard
        if g is None:
            return ()
        rows = [{"tool": d.tool, "action": d.action.value, "rule": d.rule, "reason": self._scrub(d.reason, step) or "",
                 "argument": d.argument, "mode": outcome.guard_mode} for d in g.decisions]
        rows += [{"tool": "", "action": "injection_flagged", "rule": "detector", "reason": f"{src}: {', '.join(f.reasons)}",
                  "argument": None, "mode": outcome.guard_mode} for src, f in g.flagged]
        return tuple(rows)


class LiveStream:
    """A text step streamed straight from its starting tier (opt-in: ``x-smallfleet-stream: live``).

    Tokens reach the client as they are generated, so nothing can be escalated: the checks still run
    on the finished text and are recorded with the attempt, and the final chunk carries the summary.
    """

    def __init__(self, cascade: Cascade, step: Step, spec: ModelSpec) -> None:
        self.cascade, self.step, self.spec = cascade, step, spec
        self.outcome: Outcome | None = None

    def headers(self) -> dict[str, str]:
        h = {"x-smallfleet-model": self.spec.name, "x-smallfleet-tier": self.spec.tier,
             "x-smallfleet-step-kind": self.step.kind.value, "x-smallfleet-escalated": "false",
             "x-smallfleet-step-id": self.step.step_id, "x-smallfleet-stream": "live"}
        if self.step.notes:  # e.g. "session facts pinned"
            h["x-smallfleet-reason"] = "streamed live (checks run after, no escalation); " + "; ".join(self.step.notes)
        return h

    async def chunks(self, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
        backend = self.cascade.fleet.get(self.spec.name)
        request, restorer, hidden = self.step.request, None, -1
        if self.cascade._guarded(self.spec):
            assert self.cascade.privacy is not None
            request, pz, hidden = self.cascade.privacy.outbound(self.step.request, self.step.privacy_key)
            restorer = pz.stream_restorer()
        cid = "chatcmpl-" + self.step.step_id.removeprefix("step_")
        created = int(time.time())
        parts: list[str] = []
        finish, tin, tout, error = "stop", 0, 0, None
        t0 = time.perf_counter()
        try:
            async for ch in backend.stream(request):
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
                    yield {"id": cid, "object": "chat.completion.chunk", "created": created, "model": self.spec.name,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": c.get("finish_reason")}]}
        except BaseException as e:  # client gone or backend failed: record what was generated
            error = f"stream ended early: {e.__class__.__name__}"
            raise
        finally:
            res = ChatResult(self.spec.name, {"role": "assistant", "content": "".join(parts)}, finish, tin,
                             tout or len(parts), (time.perf_counter() - t0) * 1000)
            att = Attempt(self.spec, self.spec.tier, res, error=error, cost_usd=self.spec.cost(tin, res.tokens_out),
                          frontier_cost_usd=self.cascade.config.frontier_cost(tin, res.tokens_out), pseudonymised=hidden)
            att.verdicts = run_checks(self.cascade.router.policy(self.step).checks, self.step, res,
                                      self.cascade.router.policy(self.step))
            self.outcome = Outcome(self.step, [att])
            try:
                await self.cascade._record(self.outcome)
            finally:
                self.cascade._release(self.step)
        summary = self.outcome.summary()
        yield {"id": cid, "object": "chat.completion.chunk", "created": created, "model": self.spec.name,
               "choices": [], "smallfleet": summary,
               **({"usage": {"prompt_tokens": tin, "completion_tokens": res.tokens_out, "total_tokens": tin + res.tokens_out}}
                  if include_usage else {})}


__all__ = ["Attempt", "Cascade", "LiveStream", "Outcome", "SmallfleetError", "estimate_tokens"]
