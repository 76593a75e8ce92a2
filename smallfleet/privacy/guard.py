"""The privacy guard in the request path: what may leave the machine, and how it comes back.

- Before a call to a remote model (any backend that is neither embedded nor marked
  ``on_premises``: a model server on the operator's own machines), the request's messages and
  tool-call arguments are pseudonymised with the session's vault; the answer (content and tool-call
  arguments) is restored before anything else sees it. Local models see the raw text.
- A step whose content holds personal data starts on a local tier when its policy would start it on
  a remote one; it may still escalate to the remote tier — pseudonymised.
- Vaults are per session (``x-smallfleet-session``), else per agent run, else per step, kept in memory
  (least recently used dropped past ``max_sessions``), or, where several gateway processes serve one
  session (replicas on PostgreSQL, ``serve --workers``), in the shared database (``shared.py``).
Detection only runs when a remote model is involved, so all-local traffic pays nothing for it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..shared import SharedState
from ..spec import ModelSpec
from .detector import CHUNK_CHARS, Detector
from .localpass import LocalPass, occurrences
from .pseudonymize import Pseudonymizer, Restoration, message_texts
from .recognizers import RECOGNIZERS
from .rewrite import Rewriter
from .shared import SharedVaults
from .vault import Vault


@dataclass(frozen=True)
class PrivacySettings:
    enabled: bool = True
    prefer_local: bool = True
    entities: tuple[str, ...] = ()  # empty = all types
    threshold: float = 0.5
    ner: bool = True
    max_sessions: int = 4096
    local_pass: str = ""  # a local model that lists private spans the patterns and NER missed ("" = off)
    rewrite: tuple[str, ...] = ()  # step kinds whose requests a local model rewrites for remote models (rewrite mode)
    rewrite_model: str = ""  # the local model that rewrites and composes


class PrivacyGuard:
    def __init__(self, settings: PrivacySettings | None = None, detector: Detector | None = None,
                 shared: SharedState | None = None) -> None:
        self.settings = settings or PrivacySettings()
        self._detector = detector
        self._vaults: OrderedDict[str, Vault] = OrderedDict()
        self._lock = threading.Lock()
        self.shared = SharedVaults(shared, cache=self.settings.max_sessions) if shared is not None else None
        self.local_pass: LocalPass | None = None  # set by the engine when [privacy] local_pass names a model
        self.rewriter: Rewriter | None = None  # set by the engine when [privacy] rewrite names step kinds

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def protects(self, spec: ModelSpec) -> bool:
        """Personal data is pseudonymised for every model that does not run on this machine."""
        return self.enabled and not spec.private

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            s = self.settings
            self._detector = Detector(entities=s.entities or None, threshold=s.threshold, ner=s.ner)
        return self._detector

    def vault_for(self, key: str) -> Vault:
        with self._lock:
            v = self._vaults.get(key)
            if v is None:
                v = self._vaults[key] = Vault()
                while len(self._vaults) > self.settings.max_sessions:
                    self._vaults.popitem(last=False)
            else:
                self._vaults.move_to_end(key)
            return v

    def pseudonymizer(self, key: str) -> Pseudonymizer:
        return Pseudonymizer(self.detector, self.vault_for(key))

    @staticmethod
    def texts(request: dict[str, Any]) -> list[str]:
        out = []
        for m in request.get("messages") or []:
            c = m.get("content")
            if isinstance(c, str):
                out.append(c)
            elif isinstance(c, list):
                out.extend(p.get("text", "") for p in c if isinstance(p, dict))
            out.extend(tc.get("function", {}).get("arguments", "") for tc in m.get("tool_calls") or [])
        return [t for t in out if t]

    def rewrites(self, kind: str, request: dict[str, Any]) -> bool:
        """Rewrite mode for this step: its kind is listed, and it is plain text (no tools, no JSON answer)."""
        rf = request.get("response_format")
        return (self.rewriter is not None and kind in self.settings.rewrite and not request.get("tools")
                and not (isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")))

    def has_pii(self, request: dict[str, Any]) -> bool:
        texts = self.texts(request)
        return bool(texts) and any(self.detector.detect_batch(texts))

    def outbound(self, request: dict[str, Any], key: str) -> tuple[dict[str, Any], Pseudonymizer, int]:
        """A copy of the request safe to send to a remote model, the pseudonymizer to undo it, the entity count."""
        if self.shared is not None:
            return self.shared.edit(key, lambda vault: self._redact(request, Pseudonymizer(self.detector, vault)))
        return self._redact(request, self.pseudonymizer(key))

    async def prefetch(self, request: dict[str, Any]) -> None:
        """Scan the request's message texts in the detector's worker, together with concurrent requests'."""
        texts = message_texts(request.get("messages") or [])
        if texts:
            await self.detector.prefetch(texts)

    async def outbound_async(self, request: dict[str, Any], key: str) -> tuple[dict[str, Any], Pseudonymizer, int]:
        """:meth:`outbound`, with the texts' detection shared with concurrent requests in the detector's
        worker thread, and off the event loop when the session's vault is across the network."""
        await self.prefetch(request)
        if self.local_pass is not None:
            await self._local_pass(request)
        if self.shared is not None and self.shared.remote:
            return await asyncio.to_thread(self.outbound, request, key)
        return self.outbound(request, key)

    async def carry(self, original: dict[str, Any], rewritten: dict[str, Any]) -> int:
        """Rewrite mode's second net: a private value detected in the original request stays private in the
        local model's rewrite of it. Wherever the rewrite copied one ("Happy birthday to Carmen!", where no
        cue says Carmen is a name), it becomes an entity of the rewritten text, so the pseudonymisation
        that follows replaces it. Returns how many places were marked."""
        await self.prefetch(original)
        texts = message_texts(original.get("messages") or [])
        found = sorted({(e.type, t[e.start:e.end]) for t, ents in zip(texts, self.detector.detect_batch(texts))
                        for e in ents if e.end - e.start >= 2})
        marked = 0
        for text in message_texts(rewritten.get("messages") or []) if found else ():
            extra = occurrences(text, found)
            if extra and len(text) <= CHUNK_CHARS:
                self.detector.augment(text, extra)
                marked += len(extra)
        return marked

    async def _local_pass(self, request: dict[str, Any]) -> None:
        """The local model's finds merged into each text's detected entities before redaction."""
        assert self.local_pass is not None
        for text in message_texts(request.get("messages") or []):
            if len(text) > CHUNK_CHARS:
                continue  # too long to keep its augmented entities: patterns and NER only
            found = await self.local_pass.spans(text)
            if found:
                self.detector.augment(text, occurrences(text, found))

    @staticmethod
    def _redact(request: dict[str, Any], pz: Pseudonymizer) -> tuple[dict[str, Any], Pseudonymizer, int]:
        req = dict(request)
        req["messages"], n = pz.redact_messages(request.get("messages") or [])
        return req, pz, n

    @staticmethod
    def inbound(pz: Pseudonymizer, message: dict[str, Any]) -> tuple[dict[str, Any], Restoration]:
        return pz.restore_message(message)

    def scrub(self, text: str | None, key: str | None = None) -> str | None:
        """Remove personal data from text bound for the ledger (errors, failed-check reasons)."""
        if not text:
            return text
        if key is not None:
            vault = self.shared.cached(key) if self.shared is not None else self._vaults.get(key)
            for ph, value in vault.items() if vault else ():
                text = text.replace(value, ph)
        spans = sorted((e.start, e.end, e.type) for _, rec in RECOGNIZERS for e in rec(text) if e.score >= 0.6)
        out, pos = [], 0
        for s, e, kind in spans:
            if s < pos:
                continue
            out.append(text[pos:s] + f"<{kind}>")
            pos = e
        out.append(text[pos:])
        return "".join(out)
