"""The engine: the composition root and the one path of a request.

``Engine.complete`` validates the request into a :class:`Step`, then::

    memory (pin session facts) → grounding (retrieve evidence)
      → cascade: router picks the start tier once → attempt → checks (→ judge) → escalate
      → guards (enforce on tool calls) → restore (pseudonymised answers) → ledger
      → capture (opt-in: scrubbed, off the request path) → Outcome (the server renders it as OpenAI JSON + x-smallfleet-* headers)

The gateway, CLI, demo and benchmarks all go through it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from .assets import ProgressFn
from .capture import Capturer, TraceStore
from .cascade import Cascade
from .config import Config, load_config
from .errors import InvalidRequestError, SmallfleetError
from .fleet import Fleet
from .grounding import Grounding
from .guards import Guard, InjectionDetector, PolicyEngine
from .guards.settings import MODES as GUARD_MODES
from .guards.settings import GuardSettings
from .learn.shadow import Shadow
from .learn.table import RouteTable
from .ledger import Ledger, check_budget_value
from .memory.session import SessionMemory
from .memory.stage import MemoryStage
from .outcome import Outcome
from .privacy.guard import PrivacyGuard
from .privacy.localpass import LocalPass
from .privacy.rewrite import Rewriter
from .record import Recorder
from .request import validate_request
from .routing import Router
from .shared import SharedState
from .step import Step, classify_step
from .telemetry import Telemetry
from .verify.crosscheck import ReasoningCheck
from .verify.judge import Judge


def make_guard(settings: GuardSettings) -> Guard:
    """The gateway's guard: the configured policy file (or name-based defaults) plus the detector."""
    policy = PolicyEngine.from_file(settings.policy_file) if settings.policy_file else PolicyEngine()
    for name in settings.trusted_tools:
        policy.declare(name, trusted_output=True)
    return Guard(policy, InjectionDetector() if settings.detector else None, use_detector=settings.detector)


class Engine:
    """``await Engine().complete({"model": "auto", "messages": [...]})`` runs one verified step."""

    def __init__(self, config: Config | None = None, *, ledger: Ledger | bool | None = True,
                 progress: ProgressFn | None = None, fleet: Fleet | None = None) -> None:
        self.config = config or load_config()
        self.fleet = fleet or Fleet(self.config, progress)
        if ledger is True:
            self.ledger: Ledger | None = Ledger(self.config.ledger_target)
        else:
            self.ledger = ledger or None
        # a session's vault and Responses history where every gateway process finds them, when several serve it
        self.shared = SharedState(self.config.session_store, self.config.session_key) if self.config.session_store else None
        self.privacy = PrivacyGuard(self.config.privacy, shared=self.shared)
        if self.config.privacy.local_pass:
            self.privacy.local_pass = LocalPass(self.fleet.get(self.config.privacy.local_pass))
        if self.config.privacy.rewrite:
            self.privacy.rewriter = Rewriter(self.fleet.get(self.config.privacy.rewrite_model))
        self.telemetry = Telemetry(self.config.otlp_endpoint) if self.config.otlp_endpoint else None
        self.guard = make_guard(self.config.guards)
        self.recorder = Recorder(self.ledger, self.privacy)
        routes = (RouteTable(self.config.learn.routes_path, self.config.tiers, self.config.models)
                  if self.config.learn.use_routes else None)
        self.router = Router(self.config, self.privacy, self.guard, routes)
        judge = Judge(self.config, self.fleet, self.recorder, self.privacy) if self.config.verify.judge else None
        reasoning = ReasoningCheck(self.config, self.fleet, self.recorder) if self.config.verify.program else None
        self.cascade = Cascade(self.config, self.fleet, self.router, self.recorder, privacy=self.privacy, guard=self.guard,
                               judge=judge, reasoning=reasoning)
        self.memory = MemoryStage(self.config, self.fleet, self.recorder)
        self.grounding = Grounding(self.config)
        self.capturer: Capturer | None = None
        if self.config.capture.enabled:
            c = self.config.capture
            self.capturer = Capturer(c, TraceStore(c.target, key=c.key), self.privacy.detector)
        self.inflight = 0  # steps being answered now (a shadow replay waits for none)
        self.shadow: Shadow | None = None
        if self.capturer is not None and self.config.capture.shadow > 0:
            self.shadow = Shadow(self.fleet, self.router, self.capturer, self.config.capture.shadow, idle=lambda: self.inflight == 0)

    def make_step(self, request: dict[str, Any], *, step_kind: str | None = None, run_id: str | None = None,
                  session_id: str | None = None, budget_usd: float | None = None, guard_mode: str | None = None,
                  approved: frozenset[str] = frozenset(), datamark: bool | None = None, kb: str | None = None,
                  kb_where: str | dict[str, str] | None = None, kb_path: str | Path | None = None,
                  raw: bytes | None = None, capture: bool | None = None) -> Step:
        """A validated step. ``kb`` names a knowledge base declared in the config (requests can only name
        one); ``kb_path`` opens a file directly and is for trusted in-process callers (the CLI, benchmarks)."""
        validate_request(request, raw)
        if guard_mode is not None and guard_mode not in GUARD_MODES:
            raise InvalidRequestError(f"x-smallfleet-guard must be one of {', '.join(GUARD_MODES)}.", param="x-smallfleet-guard")
        check_budget_value(budget_usd)
        default = self.config.run_budget_usd if run_id else None
        # the operator's default is a ceiling: a client can ask for less, never more
        budget = default if budget_usd is None else (budget_usd if default is None else min(budget_usd, default))
        raw_meta = request.get("metadata")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        kb = kb or (str(meta["smallfleet_kb"]) if meta.get("smallfleet_kb") else None)
        kind = classify_step(request, step_kind)
        where = kb_where or (str(meta["smallfleet_kb_where"]) if meta.get("smallfleet_kb_where") else None)
        kb, where_dict, path = self.grounding.resolve(kind, kb, where, kb_path)
        return Step(request=request, kind=kind, run_id=run_id, session_id=session_id, budget_usd=budget,
                    guard_mode=guard_mode, approved=approved, datamark=datamark, kb=kb, kb_where=where_dict, kb_path=path,
                    capture=capture)

    async def extract_quarantined(self, text: str, schema: dict[str, Any], instruction: str = "") -> dict[str, Any]:
        """Quarantined reading on the cheapest local model: schema-typed fields out, labelled untrusted."""
        from .guards import quarantined_extract

        local = [t for t in self.config.tiers if self.config.tier_model(t).private]
        if not local:
            raise InvalidRequestError("quarantined reading needs a local model in the fleet.")
        spec = self.config.tier_model(local[0])
        fields, label = await quarantined_extract(self.fleet.get(spec.name), text, schema, instruction)
        return {"fields": fields, "trust": label.name.lower(), "model": spec.name}

    async def before(self, step: Step) -> list[dict[str, Any]] | None:
        """What runs before any model sees the step: session memory (facts pinned) and grounding (evidence
        injected). Returns the messages whose reading was deferred; hand them to ``after``."""
        unread = await self.memory.before(step) if self.memory.applies(step) else None
        try:
            if step.kb is not None and step.evidence is None:
                await asyncio.to_thread(self.grounding.ground, step)
        except BaseException:
            self.after(step, unread)
            raise
        return unread

    def after(self, step: Step, unread: list[dict[str, Any]] | None) -> None:
        """Once the step has its answer (or failed): read the deferred turns in the background."""
        if unread is not None:
            self.memory.after(step, unread)

    async def run_step(self, step: Step) -> Outcome:
        self.inflight += 1
        try:
            unread = await self.before(step)
            try:
                outcome = await self.cascade.run(step, step.request.get("model") or "auto")
            finally:
                self.after(step, unread)
        except SmallfleetError as e:
            if self.telemetry is not None:
                self.telemetry.step(step, None, time.time(), error=f"{e.status} {e.code or e.type}")
            raise
        finally:
            self.inflight -= 1
        if self.telemetry is not None:
            self.telemetry.step(step, outcome, time.time())
        self.captured(outcome)
        return outcome

    def captured(self, outcome: Outcome) -> None:
        """Hand an answered step to capture (sampled, opt-out honoured; written off the request path)."""
        if self.capturer is not None and self.capturer.offer(outcome) and self.shadow is not None:
            self.shadow.offer(outcome)

    async def complete(self, request: dict[str, Any], *, step_kind: str | None = None, run_id: str | None = None,
                       session_id: str | None = None, budget_usd: float | None = None, guard_mode: str | None = None,
                       approved: frozenset[str] = frozenset(), datamark: bool | None = None, kb: str | None = None,
                       kb_where: str | dict[str, str] | None = None, kb_path: str | Path | None = None,
                       capture: bool | None = None) -> Outcome:
        """Run one agent step (an OpenAI chat request) through the whole path and return its outcome.

        ``step_kind`` overrides the classifier; ``run_id`` groups steps of one agent run (budgets,
        reports); ``session_id`` turns on session memory; ``budget_usd`` caps the run (never above the
        operator's default); ``guard_mode`` is block/flag/confirm/off; ``approved`` holds call tokens the
        user confirmed; ``datamark`` overrides [guards] datamark; ``kb``/``kb_where`` ground the step in a
        configured knowledge base (``kb_path``: a file, for trusted callers only); ``capture=False``
        keeps this step out of the trace store."""
        step = self.make_step(request, step_kind=step_kind, run_id=run_id, session_id=session_id, budget_usd=budget_usd,
                              guard_mode=guard_mode, approved=approved, datamark=datamark, kb=kb, kb_where=kb_where,
                              kb_path=kb_path, capture=capture)
        return await self.run_step(step)

    def session_memory(self) -> SessionMemory:
        """The session memory (opened on first use)."""
        return self.memory.session_memory()

    async def drain(self) -> None:
        """Wait for background session-memory reads (tests, benchmarks, shutdown)."""
        await self.memory.drain()
        if self.shadow is not None:
            await self.shadow.drain()
        if self.capturer is not None:
            await asyncio.to_thread(self.capturer.drain)

    async def aclose(self) -> None:
        await self.drain()
        if self.capturer is not None:
            await asyncio.to_thread(self.capturer.close)
        self.grounding.close()
        self.memory.close()
        await self.fleet.aclose()
        if self.ledger is not None:
            self.ledger.close()
        if self.shared is not None:
            self.shared.close()
        if self.telemetry is not None:
            await asyncio.to_thread(self.telemetry.close)
