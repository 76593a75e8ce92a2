"""Budget and ledger for one step: reserve before each model call, write every attempt once, release
what a failed or cancelled step still holds. The ledger keeps no personal data: reasons and errors
that may quote the request are scrubbed first."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .ledger import AttemptRow, Ledger, account_holder
from .models.base import ChatResult
from .outcome import Attempt, Outcome
from .spec import ModelSpec
from .step import Step
from .tokens import estimate_tokens

if TYPE_CHECKING:
    from .privacy.guard import PrivacyGuard


class Recorder:
    """The one place an :class:`AttemptRow` is built. Without a ledger every method does nothing."""

    def __init__(self, ledger: Ledger | None, privacy: PrivacyGuard | None = None) -> None:
        self.ledger = ledger
        self.privacy = privacy

    @staticmethod
    def estimate(step: Step, spec: ModelSpec, request: dict[str, Any] | None = None, max_out: int | None = None) -> float:
        """What a call of ``spec`` on the step's request (or ``request``) will cost at most, roughly."""
        req = step.request if request is None else request
        out = max_out or req.get("max_tokens") or req.get("max_completion_tokens") or min(256, spec.max_output)
        return spec.cost(estimate_tokens(req), int(out))

    async def reserve(self, step: Step, spec: ModelSpec, request: dict[str, Any] | None = None, max_out: int | None = None) -> None:
        """Hold an estimate of the call's cost against the run's budget (raises BudgetExceededError)."""
        if self.ledger is None or not (step.run_id or step.account):
            return
        est = self.estimate(step, spec, request, max_out)
        if self.ledger.db.dialect == "postgresql":  # a network round trip: not on the event loop
            await asyncio.to_thread(self._reserve, self.ledger, step, est)
        else:  # a local file, microseconds
            self._reserve(self.ledger, step, est)

    @staticmethod
    def _reserve(ledger: Ledger, step: Step, est: float) -> None:
        """Against the run's budget, then the API key's: both hold, or neither does."""
        got = ledger.reserve(step.run_id, step.budget_usd, est, step.step_id)
        if step.account:
            try:
                step.account_reserved += ledger.reserve(step.account, None, est, account_holder(step.step_id))
            except BaseException:
                ledger.release(step.run_id, got, step.step_id)
                raise
        step.reserved += got

    def release(self, step: Step) -> None:
        """Hand back what the step still holds (it failed or was cancelled before its write released it)."""
        if self.ledger is not None:
            if step.reserved:
                self.ledger.release(step.run_id, step.reserved, step.step_id)
            if step.account_reserved and step.account:
                self.ledger.release(step.account, step.account_reserved, account_holder(step.step_id))
        step.reserved = step.account_reserved = 0.0

    def _scrub(self, text: str | None, step: Step) -> str | None:
        if self.privacy is None or not self.privacy.enabled or not text:
            return text
        return self.privacy.scrub(text, step.privacy_key)

    @staticmethod
    def row(step: Step, spec: ModelSpec, tier: str, result: ChatResult | None, *, step_id: str | None = None,
            step_kind: str | None = None, attempt: int = 0, cost_usd: float = 0.0, frontier_cost_usd: float = 0.0,
            checks: list[dict[str, Any]] | None = None, passed: bool = True, escalated: bool = False, final: bool = True,
            error: str | None = None, reason: str | None = None, guard: tuple[dict[str, Any], ...] = (),
            trust: str | None = None, privacy: dict[str, int] | None = None) -> AttemptRow:
        r = result
        return AttemptRow(
            step_id=step_id or step.step_id, run_id=step.run_id, session_id=step.session_id,
            step_kind=step_kind or step.kind.value, attempt=attempt, model=spec.name, tier=tier,
            stand_in=bool(spec.stands_in_for), tokens_in=r.tokens_in if r else 0, tokens_out=r.tokens_out if r else 0,
            cached_tokens=r.cached_tokens if r else 0, cost_usd=cost_usd, frontier_cost_usd=frontier_cost_usd,
            latency_ms=r.latency_ms if r else 0.0, checks=checks or [], passed=passed, escalated=escalated, final=final,
            error=error, reason=reason, guard=guard, account=step.account, trust=trust, privacy=privacy)

    async def record(self, outcome: Outcome) -> None:
        """Write all attempts of the step in one transaction; the writer releases the reservation once
        the real cost is committed (or the write failed), even when the request is cancelled meanwhile."""
        if self.ledger is None:
            return
        step = outcome.step
        clean = all(a.passed for a in outcome.attempts)  # generated text only: nothing to scrub
        final_reason = outcome.reason if clean else self._scrub(outcome.reason, step)
        last = len(outcome.attempts) - 1
        rows = [self._attempt_row(step, a, i, final=i == last,
                                  reason=final_reason if i == last else self._scrub(a.failed_reason, step) or None,
                                  guard=self._guard_rows(outcome) if i == last else (),
                                  trust=outcome.guard.label.name.lower() if outcome.guard is not None else None)
                for i, a in enumerate(outcome.attempts)]
        reserved, step.reserved, step.account_reserved = step.reserved, 0.0, 0.0
        await self.ledger.record_step_async(rows, step.budget_usd, reserved, step.account)

    def _attempt_row(self, step: Step, a: Attempt, i: int, *, final: bool, reason: str | None,
                     guard: tuple[dict[str, Any], ...], trust: str | None = None) -> AttemptRow:
        return self.row(step, a.spec, a.tier, a.result, attempt=i, cost_usd=a.cost_usd, frontier_cost_usd=a.frontier_cost_usd,
                        checks=[v.as_dict() for v in a.verdicts], passed=a.passed, escalated=a.escalated, final=final,
                        error=self._scrub(a.error, step), reason=reason, guard=guard, trust=trust,
                        privacy=a.pseudonymised_types if a.pseudonymised >= 0 else None)

    def _guard_rows(self, outcome: Outcome) -> tuple[dict[str, Any], ...]:
        g, step = outcome.guard, outcome.step
        if g is None:
            return ()
        rows = [{"tool": d.tool, "action": d.action.value, "rule": d.rule, "reason": self._scrub(d.reason, step) or "",
                 "argument": d.argument, "mode": outcome.guard_mode} for d in g.decisions]
        rows += [{"tool": "", "action": "injection_flagged", "rule": "detector", "reason": f"{src}: {', '.join(f.reasons)}",
                  "argument": None, "mode": outcome.guard_mode} for src, f in g.flagged]
        return tuple(rows)

    async def record_side_calls(self, step: Step, spec: ModelSpec, tier: str, calls: list[ChatResult], tag: str,
                                kind: str) -> None:
        """Calls made for a step but not answering it (session-memory fact extraction): each its own
        ledger step of ``kind`` in the request's run. Their all-frontier price is 0: without smallfleet
        nobody would make them, so they only cost."""
        if self.ledger is None or not calls:
            return
        rows = [self.row(step, spec, tier, r, step_id=f"{step.step_id}-{tag}{i}", step_kind=kind,
                         cost_usd=spec.cost(r.tokens_in, r.tokens_out)) for i, r in enumerate(calls)]
        await asyncio.gather(*(self.ledger.record_step_async([row], account=step.account) for row in rows))  # one group commit
