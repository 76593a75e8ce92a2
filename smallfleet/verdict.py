"""What a check says about one answer (:class:`Verdict`), and the registry of checks by name.

A check is any callable ``(step, result, policy) -> Verdict | None`` (None: does not apply to this
answer). Routing policies list check names per step kind; :func:`register_check` adds a new one and
the cascade does not change. A leaf module: the built-in checks are registered in :mod:`smallfleet.checks`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .models.base import ChatResult
from .spec import KindPolicy
from .step import Step


@dataclass(frozen=True)
class Verdict:
    check: str
    passed: bool
    reason: str = ""
    score: float | None = None
    advisory: bool = False  # weighed into another check's decision (the reasoning score), not deciding alone

    @property
    def blocks(self) -> bool:
        """Whether this verdict fails the answer on its own."""
        return not self.passed and not self.advisory

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"check": self.check, "passed": self.passed}
        if self.advisory:
            d["advisory"] = True
        if self.reason:
            d["reason"] = self.reason
        if self.score is not None:
            d["score"] = round(self.score, 4)
        return d


Check = Callable[[Step, ChatResult, KindPolicy], "Verdict | None"]
_REGISTRY: dict[str, Check] = {}


def register_check(name: str, check: Check) -> None:
    """Make a check available to routing policies under ``name`` (a later registration replaces it)."""
    _REGISTRY[name] = check


def registered_checks() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def run_checks(names: Iterable[str], step: Step, result: ChatResult, policy: KindPolicy) -> list[Verdict]:
    """The verdicts of the named checks that apply to this answer, in order."""
    out = []
    for n in names:
        v = _REGISTRY[n](step, result, policy)
        if v is not None:
            out.append(v)
    return out
