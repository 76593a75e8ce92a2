"""Session memory: observe a conversation, keep what the user stated, pin it into later prompts.

The gateway gets the whole history on every request (OpenAI chat is stateless), so ``observe``
remembers which messages it has read, per session, by (index, hash of role + text): a replayed
history costs nothing, and an edited message at a known index is read again. Only ``user`` messages
(trusted, except ``<untrusted>`` spans and messages marked untrusted) and ``tool`` messages
(untrusted) are read; the assistant's own words and the system prompt are not facts the user stated.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InvalidRequestError, SmallfleetError
from ..fleet import Fleet
from ..models.base import ChatResult
from ..retrieval.embed import Embedder
from ..step import message_text
from .extract import TRUST_FIELD, UNTRUSTED_ROLES, Extractor, split_trust
from .pin import pin_messages
from .store import Fact, FactStore, Trust, check_session_id

log = logging.getLogger("smallfleet.memory")
READ_ROLES = frozenset({"user"}) | UNTRUSTED_ROLES


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, (list, tuple)):
        raise InvalidRequestError("messages must be a list.", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InvalidRequestError(f"messages[{i}] must be an object with a role.", param=f"messages[{i}]")
    return list(messages)


def _digest(message: dict[str, Any]) -> str:
    mark = "untrusted" if message.get(TRUST_FIELD) == "untrusted" else ""
    return hashlib.sha256(f"{message['role']}\x00{mark}\x00{message_text(message)}".encode()).hexdigest()[:32]


class SessionMemory:
    """Facts per session: ``await observe(sid, messages)``, then ``pin(sid, messages)`` before the model call."""

    def __init__(self, store: FactStore, extractor: Extractor, *, embedder: Embedder | None = None,
                 max_pinned: int = 12, pin_untrusted: bool = False, extract_untrusted: bool = True) -> None:
        if max_pinned < 1:
            raise ValueError("max_pinned must be at least 1.")
        self.store = store
        self.extractor = extractor
        self.embedder = embedder
        self.max_pinned = max_pinned
        self.pin_untrusted = pin_untrusted
        self.extract_untrusted = extract_untrusted
        self.model_name: str | None = None  # the extractor's fleet model, when opened from a fleet
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}  # observe() calls holding or waiting for each session's lock

    @classmethod
    def open(cls, path: str | Path, fleet: Fleet, model: str | None = None, *, allow_remote: bool = False,
             key: str | bytes | None = None, **kw: Any) -> SessionMemory:
        """A memory on ``path`` whose extractor is ``model`` of ``fleet`` (default: the cheapest tier's model);
        with ``key`` (a Fernet key) the stored fact values are encrypted at rest.

        The extractor must be a local model unless ``allow_remote``: it reads every user message raw,
        outside the cascade's privacy guard.
        """
        spec = fleet.spec(model) if model else fleet.config.tier_model(fleet.config.tiers[0])
        if not spec.private and not allow_remote:
            raise ConfigError(f"session memory: extractor model {spec.name!r} is not local ({spec.backend}).",
                              hint="name a llamacpp model of the fleet, or pass allow_remote=True knowingly")
        memory = cls(FactStore(path, key=key), Extractor(fleet.get(spec.name)), **kw)
        memory.model_name = spec.name
        return memory

    def close(self) -> None:
        self.store.close()

    # -- reading the conversation ------------------------------------------------------------------
    async def observe(self, session_id: str, messages: Sequence[dict[str, Any]], *,
                      calls: list[ChatResult] | None = None) -> list[Fact]:
        """Extract facts from the messages of this session not read before; returns the facts stored now
        (the extractor's model calls are appended to ``calls`` when given).

        Messages are serialised per session, so two concurrent requests of one session never read the
        same turn twice. A model failure propagates and leaves that turn unread (retried next time).
        """
        check_session_id(session_id)
        msgs = _check_messages(messages)
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        self._users[session_id] = self._users.get(session_id, 0) + 1
        stored: list[Fact] = []
        try:
            async with lock:
                for turn, m in enumerate(msgs):
                    if m["role"] not in READ_ROLES:
                        continue
                    digest = _digest(m)
                    if self.store.is_seen(session_id, turn, digest):
                        continue
                    for seg in split_trust(m):
                        if seg.trust == "untrusted" and not self.extract_untrusted:
                            continue
                        pairs = await self.extractor.extract(seg.text, self.store.keys(session_id, trust=seg.trust), calls=calls)
                        if pairs:
                            stored += self.store.add_many(session_id, pairs, turn=turn, source=m["role"], trust=seg.trust)
                    self.store.mark_seen(session_id, turn, digest)
        finally:
            self._users[session_id] -= 1
            if not self._users[session_id]:  # nobody waits on this session: drop its lock, so locks don't pile up
                del self._users[session_id], self._locks[session_id]
        return stored

    # -- using what is known -----------------------------------------------------------------------
    def facts(self, session_id: str, include_history: bool = False, trust: Trust | None = None) -> list[Fact]:
        return self.store.facts(session_id, include_history=include_history, trust=trust)

    def pin(self, session_id: str, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """``messages`` with this session's relevant facts pinned (a new list; unchanged if none known)."""
        check_session_id(session_id)
        msgs = _check_messages(messages)
        return pin_messages(msgs, self.store.facts(session_id), limit=self.max_pinned, embedder=self.embedder,
                            include_untrusted=self.pin_untrusted)

    async def prepare(self, session_id: str, messages: Sequence[dict[str, Any]], *,
                      calls: list[ChatResult] | None = None, read: int | None = None) -> list[dict[str, Any]]:
        """observe + pin, for the gateway: bad input raises; a failing extractor only logs.

        ``read``: how many leading messages to read now (default all); the rest are left for a later
        ``observe`` (the gateway reads the latest user turn after answering: that turn is in the prompt
        anyway, so its facts only matter from the next request on).

        A memory that cannot read a turn must not fail the user's request: the request goes on with the
        facts known so far and the turn is read on the next request.
        """
        check_session_id(session_id)
        msgs = _check_messages(messages)
        try:
            await self.observe(session_id, msgs if read is None else msgs[:read], calls=calls)
        except SmallfleetError as e:
            log.warning("session memory: extraction failed for session %s: %s", session_id, e.message)
        return self.pin(session_id, msgs)

    def forget(self, session_id: str) -> int:
        """Delete a session's facts and read marks; returns how many facts were deleted."""
        return self.store.forget(session_id)
