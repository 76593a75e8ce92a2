"""Session memory as a stage of a request: before the model runs, pin the session's relevant facts
into the prompt; after it answered, read the user's new turns for facts in the background.

With ``[memory] defer`` (default) the latest user turn is not read before the answer: it is in the
prompt already, so its facts only matter from the next request on. The next request of the session
waits for that read (per-session lock), so it never misses a fact. Every extraction call goes to the
ledger as a step of kind "memory" in the request's run.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..config import Config
from ..fleet import Fleet
from ..models.base import ChatResult
from ..record import Recorder
from ..step import Step, last_user_index
from .session import SessionMemory
from .store import resolve_key

log = logging.getLogger("smallfleet.memory")


class MemoryStage:
    def __init__(self, config: Config, fleet: Fleet, recorder: Recorder) -> None:
        self.config, self.fleet, self.recorder = config, fleet, recorder
        self._memory: SessionMemory | None = None
        self._pending: set[asyncio.Task[None]] = set()  # deferred reads

    def applies(self, step: Step) -> bool:
        return bool(step.session_id) and self.config.memory.enabled

    def session_memory(self) -> SessionMemory:
        """The session memory (opened on first use: an encrypted store without its key fails here)."""
        if self._memory is None:
            m = self.config.memory
            self._memory = SessionMemory.open(m.target, self.fleet, m.model or None, max_pinned=m.max_pinned,
                                              key=m.key if m.url else resolve_key(m.key, m.store_path))
        return self._memory

    async def before(self, step: Step) -> list[dict[str, Any]] | None:
        """Pin the session's facts into the step's request; returns the messages whose reading was deferred."""
        assert step.session_id, "applies() is false without a session"
        original = step.messages
        read = last_user_index(original) if self.config.memory.defer else None
        calls: list[ChatResult] = []
        try:
            msgs = await self.session_memory().prepare(step.session_id, original, calls=calls, read=read)
        finally:
            await self._record(step, calls, "mem")
        if len(msgs) != len(original):
            step.request = {**step.request, "messages": msgs}
            step.notes.append("session facts pinned")
        return original if read is not None and read < len(original) else None

    def after(self, step: Step, messages: list[dict[str, Any]]) -> None:
        """Read the turns ``before`` left, in the background, after the step has its answer."""
        session = step.session_id
        assert session, "applies() is false without a session"

        async def read() -> None:
            calls: list[ChatResult] = []
            try:
                await self.session_memory().observe(session, messages, calls=calls)
            except Exception as e:  # a background read must not vanish silently; the turn is retried next time
                log.warning("session memory: deferred extraction failed for session %s: %s", step.session_id, e)
            finally:
                await self._record(step, calls, "memlater")  # its own ids beside the step's "mem" calls

        task = asyncio.get_running_loop().create_task(read())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the background reads (tests, benchmarks, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def _record(self, step: Step, calls: list[ChatResult], tag: str) -> None:
        if not calls:
            return
        tiers = {self.config.tier_model(t).name: t for t in self.config.tiers}
        spec = self.fleet.spec(self.session_memory().model_name or calls[0].model)
        await self.recorder.record_side_calls(step, spec, tiers.get(spec.name, "memory"), calls, tag, "memory")

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()
            self._memory = None
