"""The engine: config + fleet + cascade + ledger behind one call. The gateway, CLI and demo use it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .assets import ProgressFn
from .cascade import Cascade, Outcome
from .config import Config, load_config
from .errors import InvalidRequestError, NotAvailableError
from .guards import Guard, InjectionDetector, PolicyEngine
from .guards.settings import MODES as GUARD_MODES
from .guards.settings import GuardSettings
from .ledger import AttemptRow, Ledger, check_budget_value
from .fleet import Fleet
from .models.base import ChatResult
from .privacy.guard import PrivacyGuard
from .request import validate_request
from .step import Step, classify_step, last_user_index

if TYPE_CHECKING:  # the retrieval stack (ONNX, tokenizers) loads only when a step is grounded
    from .retrieval import KnowledgeBase

log = logging.getLogger("smallfleet.engine")


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
            self.ledger: Ledger | None = Ledger(self.config.ledger_path)
        else:
            self.ledger = ledger or None
        self.privacy = PrivacyGuard(self.config.privacy)
        self.guard = make_guard(self.config.guards)
        self.cascade = Cascade(self.config, self.fleet, self.ledger, self.privacy, self.guard)
        self._stores: dict[str, KnowledgeBase] = {}
        self._session_memory: Any = None
        self._pending: set[asyncio.Task[None]] = set()  # deferred session-memory reads

    def make_step(self, request: dict[str, Any], *, step_kind: str | None = None, run_id: str | None = None,
                  session_id: str | None = None, budget_usd: float | None = None, guard_mode: str | None = None,
                  approved: frozenset[str] = frozenset(), datamark: bool | None = None, kb: str | None = None,
                  kb_where: str | dict[str, str] | None = None, kb_path: str | Path | None = None,
                  raw: bytes | None = None) -> Step:
        """A validated step. ``kb`` names a knowledge base declared in the config (requests can only name
        one); ``kb_path`` opens a file directly and is for trusted in-process callers (the CLI, benchmarks)."""
        validate_request(request, raw)
        if guard_mode is not None and guard_mode not in GUARD_MODES:
            raise InvalidRequestError(f"x-smallfleet-guard must be one of {', '.join(GUARD_MODES)}.", param="x-smallfleet-guard")
        check_budget_value(budget_usd)
        default = self.config.run_budget_usd if run_id else None
        # the operator's default is a ceiling: a client can ask for less, never more
        budget = default if budget_usd is None else (budget_usd if default is None else min(budget_usd, default))
        meta = request.get("metadata") if isinstance(request.get("metadata"), dict) else {}
        kb = kb or (str(meta["smallfleet_kb"]) if meta.get("smallfleet_kb") else None)
        kind = classify_step(request, step_kind)
        where = kb_where or (str(meta["smallfleet_kb_where"]) if meta.get("smallfleet_kb_where") else None)
        if isinstance(where, str):
            from .retrieval.store import parse_meta

            where = parse_meta(where, "x-smallfleet-kb-where") or None
        if kb_path is not None:
            path = Path(kb_path).expanduser()
            kb = kb or str(path)
        else:
            if kb is None and (where or kind.value in self.config.grounding.kinds):
                kb = "default"  # a metadata filter asks for the knowledge base
            path = self.config.knowledge_path(kb) if kb is not None else None
        return Step(request=request, kind=kind, run_id=run_id, session_id=session_id, budget_usd=budget,
                    guard_mode=guard_mode, approved=approved, datamark=datamark, kb=kb, kb_where=where, kb_path=path)

    async def extract_quarantined(self, text: str, schema: dict[str, Any], instruction: str = "") -> dict[str, Any]:
        """Quarantined reading on the cheapest local model: schema-typed fields out, labelled untrusted."""
        from .guards import quarantined_extract

        local = [t for t in self.config.tiers if self.config.tier_model(t).is_local]
        if not local:
            raise InvalidRequestError("quarantined reading needs a local model in the fleet.")
        spec = self.config.tier_model(local[0])
        fields, label = await quarantined_extract(self.fleet.get(spec.name), text, schema, instruction)
        return {"fields": fields, "trust": label.name.lower(), "model": spec.name}

    def _store(self, step: Step) -> KnowledgeBase:
        """One open knowledge base per file (its embedder and vectors stay loaded). The file comes from the
        config (or a trusted caller), never from a request."""
        from .retrieval import Store

        path: Path = step.kb_path
        key = str(path.resolve())
        store = self._stores.get(key)
        if store is None:
            if not path.is_file():
                raise NotAvailableError(f"knowledge base {step.kb!r} has no index file yet.",
                                        hint=f"the operator builds it with `smallfleet index add PATH... --index {path}`")
            store = self._stores[key] = Store(path)
        return store

    def _ground(self, step: Step) -> None:
        """Retrieve evidence for a grounded step and put it in the request (blocking: run off the event loop)."""
        from .retrieval.grounded import Evidence, question_of, with_evidence

        store = self._store(step)
        q = question_of(step.messages)
        if not q.strip():
            raise InvalidRequestError("a grounded step needs a user message to search with.")
        g = self.config.grounding
        hits = store.search(q, g.k, where=step.kb_where)
        rel = store.relevance(q, hits)
        ev = Evidence(step.kb or "default", hits, rel, weak=max(rel, default=0.0) < g.min_relevance)
        step.evidence = ev
        step.request = with_evidence(step.request, ev)
        step.notes.append(f"grounded in {len(hits)} chunk(s), best relevance {ev.best:.2f}" + (" (weak evidence)" if ev.weak else ""))

    def session_memory(self) -> Any:
        """The session memory (opened on first use: an encrypted store without its key fails here)."""
        if self._session_memory is None:
            from .memory import SessionMemory, resolve_key

            m = self.config.memory
            self._session_memory = SessionMemory.open(m.store_path, self.fleet, m.model or None, max_pinned=m.max_pinned,
                                                      key=resolve_key(m.key, m.store_path))
        return self._session_memory

    async def _remember(self, step: Step) -> list[dict[str, Any]] | None:
        """Session memory: read the user's new turns for facts, pin the relevant ones into this request.

        With ``[memory] defer`` (default) the latest user turn is not read now: it is in the prompt
        already, so its facts only matter from the next request on. The messages still to read are
        returned for ``_read_later``; the next request of the session waits for that read (per-session
        lock), so it never misses a fact.
        """
        original = step.messages
        read = last_user_index(original) if self.config.memory.defer else None
        calls: list[ChatResult] = []
        try:
            msgs = await self.session_memory().prepare(step.session_id, original, calls=calls, read=read)
        finally:
            await self._record_memory_calls(step, calls)
        if len(msgs) != len(original):
            step.request = {**step.request, "messages": msgs}
            step.notes.append("session facts pinned")
        return original if read is not None and read < len(original) else None

    def _read_later(self, step: Step, messages: list[dict[str, Any]]) -> None:
        """Read the turns ``_remember`` left, in the background, after this step has its answer."""
        async def read() -> None:
            calls: list[ChatResult] = []
            try:
                await self.session_memory().observe(step.session_id, messages, calls=calls)
            except Exception as e:  # a background read must not vanish silently; the turn is retried next time
                log.warning("session memory: deferred extraction failed for session %s: %s", step.session_id, e)
            finally:
                await self._record_memory_calls(step, calls, "memlater")  # its own ids beside the step's "mem" calls

        task = asyncio.get_running_loop().create_task(read())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for background session-memory reads (tests, benchmarks, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def _record_memory_calls(self, step: Step, calls: list[ChatResult], tag: str = "mem") -> None:
        """Every fact-extraction call goes to the ledger as a step of kind "memory" in the request's run.
        Its all-frontier price is 0: without smallfleet nobody would make this call, so it only costs."""
        if self.ledger is None or not calls:
            return
        tiers = {self.config.tier_model(t).name: t for t in self.config.tiers}
        spec = self.fleet.spec(self.session_memory().model_name or calls[0].model)
        rows = []
        for i, r in enumerate(calls):
            rows.append(AttemptRow(
                step_id=f"{step.step_id}-{tag}{i}", run_id=step.run_id, session_id=step.session_id, step_kind="memory",
                attempt=0, model=spec.name, tier=tiers.get(spec.name, "memory"), stand_in=bool(spec.stands_in_for),
                tokens_in=r.tokens_in, tokens_out=r.tokens_out, cached_tokens=r.cached_tokens,
                cost_usd=spec.cost(r.tokens_in, r.tokens_out), frontier_cost_usd=0.0, latency_ms=r.latency_ms,
                checks=[], passed=True, escalated=False, final=True))
        await asyncio.gather(*(self.ledger.record_step_async([row]) for row in rows))  # one group commit

    async def before(self, step: Step) -> list[dict[str, Any]] | None:
        """What runs before any model sees the step: session memory (facts pinned) and grounding (evidence
        injected). Returns the messages whose reading was deferred; hand them to ``after``."""
        unread = None
        if step.session_id and self.config.memory.enabled:
            unread = await self._remember(step)
        try:
            if step.kb is not None and step.evidence is None:
                await asyncio.to_thread(self._ground, step)
        except BaseException:
            self.after(step, unread)
            raise
        return unread

    def after(self, step: Step, unread: list[dict[str, Any]] | None) -> None:
        """Once the step has its answer (or failed): read the deferred turns in the background."""
        if unread is not None:
            self._read_later(step, unread)

    async def run_step(self, step: Step) -> Outcome:
        unread = await self.before(step)
        try:
            return await self.cascade.run(step, step.request.get("model") or "auto")
        finally:
            self.after(step, unread)

    async def complete(self, request: dict[str, Any], **kw: Any) -> Outcome:
        return await self.run_step(self.make_step(request, **kw))

    async def aclose(self) -> None:
        await self.drain()
        for store in self._stores.values():
            store.close()
        self._stores.clear()
        if self._session_memory is not None:
            self._session_memory.close()
            self._session_memory = None
        await self.fleet.aclose()
        if self.ledger is not None:
            self.ledger.close()
