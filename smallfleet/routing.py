"""Routing policy: which tier a step starts on, what must pass there, and where it escalates."""

from __future__ import annotations

from .config import Config, KindPolicy, ModelSpec
from .step import Step


class Router:
    def __init__(self, config: Config) -> None:
        self.config = config

    def policy(self, step: Step) -> KindPolicy:
        return self.config.routing[step.kind]

    def start(self, step: Step) -> str:
        return self.policy(step).start

    def _same_model(self, a: ModelSpec, b: ModelSpec) -> bool:
        return (a.stands_in_for or a.name) == (b.stands_in_for or b.name)

    def escalate_from(self, tier: str, tried: list[ModelSpec], min_context: int = 0) -> str | None:
        """Next tier up whose model has not answered this step yet (a stand-in is the same model) and,
        after a prompt did not fit, whose context window is larger than ``min_context``."""
        nxt = self.config.next_tier(tier)
        while nxt is not None:
            spec = self.config.tier_model(nxt)
            if not any(self._same_model(spec, t) for t in tried) and spec.context > min_context:
                return nxt
            nxt = self.config.next_tier(nxt)
        return None
