"""The router: where a step starts, what must pass there, and where it escalates.

Every start-tier rule lives here and runs once per step, for the cascade and for live streams alike:

1. the kind's policy names the start tier, unless a learned route (``smallfleet learn apply``) has
   replay evidence for the step's cluster: then that route's tier;
2. injected instructions flagged in tool output the model will read: one local tier up;
3. weak evidence behind a grounded step: one local tier up;
4. personal data in a step whose start tier is remote: the nearest local tier instead
   (``[privacy] prefer_local``), so the data never leaves the machine.

Each move is noted on the step and ends up in the ``x-smallfleet-reason`` header.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import Config
from .spec import KindPolicy, ModelSpec
from .step import Step

if TYPE_CHECKING:
    from .guards import Guard
    from .guards.injection import Finding
    from .guards.trust import Context
    from .learn.table import RouteTable
    from .privacy.guard import PrivacyGuard


class Router:
    def __init__(self, config: Config, privacy: PrivacyGuard | None = None, guard: Guard | None = None,
                 routes: RouteTable | None = None) -> None:
        self.config = config
        self.privacy = privacy
        self.guard = guard
        self.routes = routes

    def policy(self, step: Step) -> KindPolicy:
        return self.config.routing[step.kind]

    def checks(self, step: Step) -> tuple[str, ...]:
        """The policy's checks, plus the evidence check for a grounded step."""
        return self.policy(step).checks + (("evidence_grounded",) if step.evidence is not None else ())

    def pseudonymises(self, spec: ModelSpec) -> bool:
        """Personal data is pseudonymised for every model that does not run on this machine."""
        return self.privacy is not None and self.privacy.protects(spec)

    def guard_mode(self, step: Step) -> str:
        return step.guard_mode or self.config.guards.mode

    def datamarks(self, step: Step) -> bool:
        """Whether tool output is wrapped and datamarked before the model reads it."""
        return step.datamark if step.datamark is not None else self.config.guards.datamark

    def guard_context(self, step: Step) -> tuple[Context, list[tuple[str, Finding]]] | None:
        """Labelled context + detector findings, computed once per step (only when tool output is present)."""
        if step.guard_ctx is None and self.guard is not None and any(m.get("role") == "tool" for m in step.messages):
            step.guard_ctx = self.guard.context(step.messages)
        return step.guard_ctx

    def start_tier(self, step: Step) -> str:
        """The tier a step starts on, after every rule above (decided once: call it once per step)."""
        start = self._risk_tier(step, self._learned_tier(step, self.policy(step).start))
        if step.evidence is not None and step.evidence.weak:
            up = self._local_above(start)
            if up is not None:
                step.notes.append(f"weak evidence: started on {up}")
                start = up
        return self._allowed_tier(step, self._private_tier(step, start))

    @staticmethod
    def allows(step: Step, spec: ModelSpec) -> bool:
        """The step's API key may use this model (named by itself or by its tier)."""
        return step.allowed is None or spec.name in step.allowed or spec.tier in step.allowed

    def _allowed_tier(self, step: Step, start: str) -> str:
        """The start tier, or the nearest one whose model the step's key may use: up first, then down."""
        if self.allows(step, self.model_for(step, start)):
            return start
        tiers = self.config.tiers
        i = tiers.index(start)
        for t in [*tiers[i + 1:], *reversed(tiers[:i])]:
            if self.allows(step, self.config.tier_model(t)):
                step.notes.append(f"the API key may not use {start}: started on {t}")
                return t
        return start  # none: the cascade refuses the step

    def _learned_tier(self, step: Step, start: str) -> str:
        route = self.routes.lookup(step.request, step.kind.value) if self.routes is not None else None
        if route is None:
            return start
        moved = f"started on {route.start} instead of {start}" if route.start != start else f"kept on {start}"
        step.notes.append(f"learned route {route.cluster} ({route.name}): {moved}: {route.evidence}")
        if route.examples is not None:
            step.examples = (route.start, route.examples)
        if route.model is not None:
            step.start_model = (route.start, route.model)
        return route.start

    def _risk_tier(self, step: Step, start: str) -> str:
        ctx = self.guard_context(step) if self.guard_mode(step) != "off" else None
        if ctx is None or not ctx[1]:
            return start
        up = self._local_above(start)
        if up is None:
            step.notes.append("injection flagged in tool output (no larger local tier to move to)")
            return start
        step.notes.append(f"injection flagged in tool output: started on {up} instead of {start}")
        return up

    def _private_tier(self, step: Step, start: str) -> str:
        if not self.pseudonymises(self.config.tier_model(start)):
            return start
        assert self.privacy is not None  # pseudonymises() is false without it
        if not self.privacy.settings.prefer_local:
            return start
        tiers = self.config.tiers
        i = tiers.index(start)
        below = [t for t in tiers[:i] if self.config.tier_model(t).private]
        above = [t for t in tiers[i + 1:] if self.config.tier_model(t).private]
        local = below[-1] if below else (above[0] if above else None)  # the nearest local tier
        if local is not None and self.privacy.has_pii(step.request):
            step.notes.append(f"personal data present: started on local tier {local} instead of {start}")
            return local
        return start

    def _local_above(self, tier: str) -> str | None:
        """The next tier up whose model runs on this machine (risk and weak evidence move a step there)."""
        i = self.config.tiers.index(tier)
        return next((t for t in self.config.tiers[i + 1:] if self.config.tier_model(t).private), None)

    @staticmethod
    def _same_model(a: ModelSpec, b: ModelSpec) -> bool:
        return (a.stands_in_for or a.name) == (b.stands_in_for or b.name)

    def model_for(self, step: Step, tier: str) -> ModelSpec:
        """The model a step's attempt on ``tier`` runs on: the tier's own, or the fine-tuned model its
        learned route starts on (only on that tier: escalating goes to the next tier's own model)."""
        if step.start_model is not None and step.start_model[0] == tier:
            return self.config.models[step.start_model[1]]
        return self.config.tier_model(tier)

    def escalate_from(self, tier: str, tried: list[ModelSpec], min_context: int = 0, step: Step | None = None) -> str | None:
        """Next tier up whose model has not answered this step yet (a stand-in is the same model),
        after a prompt did not fit, whose context window is larger than ``min_context``, and which the
        step's API key may use."""
        nxt = self.config.next_tier(tier)
        while nxt is not None:
            spec = self.config.tier_model(nxt)
            if (not any(self._same_model(spec, t) for t in tried) and spec.context > min_context
                    and (step is None or self.allows(step, spec))):
                return nxt
            nxt = self.config.next_tier(nxt)
        return None
