"""The local model's pass over text bound for a remote model (opt-in: ``[privacy] local_pass``).

Patterns and the small English NER miss names in other scripts, nicknames, relatives' first names and
employers said in passing. A local model reads the text once and lists its private spans under a JSON
schema. Nothing it says is trusted beyond that: a span is kept only when it occurs verbatim in the
text, is not a plain lower-case word, and its type is one smallfleet knows. Kept spans go into the
session's vault, so the ordinary redaction replaces them wherever they occur, in this message and in
later ones. Only text that is about to go to a remote model is read (all-local traffic never pays for
it), each distinct text once.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import SmallfleetError
from ..models.base import Backend
from .entities import ENTITY_TYPES, Entity

TYPES = ("PERSON", "ORGANIZATION", "LOCATION", "ID_NUMBER", "SECRET", "USERNAME", "EMAIL_ADDRESS", "PHONE_NUMBER",
         "STREET_ADDRESS", "DATE_TIME")
assert set(TYPES) <= set(ENTITY_TYPES)
PROMPT = ("You find private information in text for a privacy filter. List every span that could identify the "
          "writer or a person they know, or give access to an account: names of people in any language or script "
          "(nicknames and relatives' first names too), the employers, schools, banks, shops and apps they use, "
          "towns and streets of their life, account/order/customer/policy numbers, passwords, keys and tokens, user "
          "names, e-mail addresses, phone numbers, addresses and birth dates. Copy each span exactly as written. "
          "Do not list generic words, public companies mentioned in general, or programming terms.")
SCHEMA = {"type": "object", "properties": {"items": {"type": "array", "maxItems": 24, "items": {
    "type": "object", "properties": {"text": {"type": "string", "maxLength": 80}, "type": {"enum": list(TYPES)}},
    "required": ["text", "type"]}}}, "required": ["items"]}
MAX_CHARS = 6_000  # per model call: longer texts are read in pieces of this size
_ITEM = re.compile(r'\{\s*"text"\s*:\s*"((?:[^"\\]|\\.){1,200})"\s*,\s*"type"\s*:\s*"([A-Z_]{2,20})"\s*\}')
_PLAIN = re.compile(r"^[a-z]+(?: [a-z]+)*$")  # "the customer", "email": words, not names


@dataclass
class PassStats:
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    spans: int = 0
    rejected: int = 0  # spans the model listed that are not verbatim, or are plain words
    failures: list[str] = field(default_factory=list)


def accept(text: str, value: object, kind: object) -> bool:
    """A listed span is kept only if it is text of a known type that occurs verbatim and is not a plain word."""
    if not isinstance(value, str) or not isinstance(kind, str) or kind not in TYPES:
        return False
    v = value.strip()
    return len(v) >= 2 and v in text and not _PLAIN.match(v) and v.lower() not in ("i", "me", "my", "you")


class LocalPass:
    def __init__(self, backend: Backend, cache: int = 4096) -> None:
        self.backend = backend
        self.stats = PassStats()
        self._seen: OrderedDict[bytes, list[tuple[str, str]]] = OrderedDict()
        self._cache = cache
        self._lock = threading.Lock()

    async def spans(self, text: str) -> list[tuple[str, str]]:
        """(type, value) pairs the local model found in ``text``, checked; never raises for the model's failures."""
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            hit = self._seen.get(key)
        if hit is not None:
            return hit
        found: list[tuple[str, str]] = []
        for start in range(0, len(text), MAX_CHARS):
            found += await self._ask(text[start:start + MAX_CHARS])
        found = list(dict.fromkeys(found))
        with self._lock:
            self._seen[key] = found
            while len(self._seen) > self._cache:
                self._seen.popitem(last=False)
        return found

    async def _ask(self, piece: str) -> list[tuple[str, str]]:
        t0 = time.perf_counter()
        req: dict[str, Any] = {"messages": [{"role": "system", "content": PROMPT}, {"role": "user", "content": piece}],
                               "response_format": {"type": "json_schema", "json_schema": {"name": "private_spans", "schema": SCHEMA}},
                               "max_tokens": 400, "temperature": 0}
        try:
            res = await self.backend.chat(req)
        except SmallfleetError as e:
            self.stats.failures.append(f"{type(e).__name__}: {str(e)[:120]}")
            return []
        try:
            items = orjson.loads(res.content or "{}").get("items") or []
        except (orjson.JSONDecodeError, AttributeError) as e:
            # cut off at max_tokens mid-list: the items written out whole are still good
            items = [{"text": orjson.loads(f'"{m.group(1)}"'), "type": m.group(2)} for m in _ITEM.finditer(res.content or "")]
            if not items:
                self.stats.failures.append(f"{type(e).__name__}: {str(e)[:120]}")
        self.stats.calls += 1
        self.stats.tokens_in += res.tokens_in
        self.stats.tokens_out += res.tokens_out
        self.stats.seconds += time.perf_counter() - t0
        out = []
        for it in items if isinstance(items, list) else []:
            value, kind = (it.get("text"), it.get("type")) if isinstance(it, dict) else (None, None)
            if accept(piece, value, kind):
                assert isinstance(value, str) and isinstance(kind, str)
                out.append((kind, value.strip()))
            else:
                self.stats.rejected += 1
        self.stats.spans += len(out)
        return out


def occurrences(text: str, found: list[tuple[str, str]]) -> list[Entity]:
    """Every place each found value occurs in ``text``, as entities."""
    out = []
    for kind, value in found:
        at = text.find(value)
        while at >= 0:
            out.append(Entity(kind, at, at + len(value), value, 0.8, "model"))
            at = text.find(value, at + len(value))
    return out
