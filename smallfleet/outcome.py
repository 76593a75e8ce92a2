"""What one step produced: every attempt (model, answer, verdicts, cost) and the guard's review.

Plain data with the derived facts every consumer needs (the final attempt, escalated or not, cost,
the reason in words, the verdict). Rendering it as OpenAI JSON and headers is the server's job
(:mod:`smallfleet.server.render`); writing it to the ledger is :mod:`smallfleet.record`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .models.base import ChatResult
from .spec import ModelSpec
from .step import Step
from .verdict import Verdict

if TYPE_CHECKING:
    from .guards import Review


def completion_id(step: Step) -> str:
    """The OpenAI ``chatcmpl-`` id of a step's answer (the same for a verified and a live answer)."""
    return "chatcmpl-" + step.step_id.removeprefix("step_")


@dataclass
class Attempt:
    """One model's try at a step: its answer (None when the call failed) and what the checks said."""

    spec: ModelSpec
    tier: str
    result: ChatResult | None
    verdicts: list[Verdict] = field(default_factory=list)
    error: str | None = None
    cost_usd: float = 0.0
    frontier_cost_usd: float = 0.0
    escalated: bool = False
    pseudonymised: int = -1  # entities replaced before a remote call; -1 = sent as is (local model)
    pseudonymised_types: dict[str, int] = field(default_factory=dict)  # those entities per type (never values)
    restore_note: str = ""  # mangled / unknown placeholders met when restoring the answer
    started: float = 0.0  # wall-clock seconds, for tracing
    ended: float = 0.0

    @property
    def passed(self) -> bool:
        return self.result is not None and self.error is None and not any(v.blocks for v in self.verdicts)

    @property
    def failed_reason(self) -> str:
        if self.error:
            return self.error
        return "; ".join(f"{v.check}: {v.reason}" for v in self.verdicts if v.blocks)


@dataclass
class Outcome:
    """A step's attempts, in order; the last is the answer the client gets."""

    step: Step
    attempts: list[Attempt]
    guard: Review | None = None
    guard_mode: str = "off"
    crosschecked: str | None = None  # unverified reasoning: a figure a program and an answer agree on (#18)

    @property
    def final(self) -> Attempt:
        return self.attempts[-1]

    @property
    def message(self) -> dict[str, Any]:
        """The final answer as an OpenAI assistant message (empty when no model answered)."""
        res = self.final.result
        return res.message if res is not None else {"role": "assistant", "content": None}

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
        """Why the answer came from where it did, in words (the x-smallfleet-reason header)."""
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

    @property
    def verdict(self) -> str:
        """"pass", or "fail:" and the checks the final answer still fails."""
        f = self.final
        if f.passed:
            return "pass"
        return "fail:" + (",".join(v.check for v in f.verdicts if v.blocks) or "error")
