"""Reversible pseudonymisation: text → ``<PERSON_1>``-style placeholders → text again.

- Placeholder-like strings already in the input (a user typing ``<PERSON_1>``) are themselves
  pseudonymised as ``<LITERAL_n>``, so restoring never turns the user's literal into someone's name.
- Restoration repairs placeholders a model mangled (``[PERSON 1]``, ``person_1``, ``<PERSON-1>``) when
  the type and number name a vault entry, and reports them; unknown placeholders (the model invented
  ``<PERSON_9>``) are left as they are and reported, never guessed.
- Tool-call arguments are handled value by value inside their JSON; streamed text is restored by
  :class:`StreamRestorer`, which holds back a possible half placeholder until it is complete.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..jsontext import json_key_spans, json_value_spans
from .detector import Detector, chunk_text
from .entities import ENTITY_TYPES, Entity
from .vault import Vault

_TYPES = "|".join(sorted(ENTITY_TYPES + ("LITERAL",), key=len, reverse=True))
PLACEHOLDER = re.compile(rf"<({_TYPES})_(\d+)>")
_LITERAL_LIKE = re.compile(r"<[A-Z][A-Z_]*_\d+>")
# Mangled forms: any bracket and case with a separator ("[person 1]", "<PERSON-1>", "<PERSON_1"), or bare
# upper case ("PERSON_1"); lower-case bare words ("person 1") are ordinary text and stay as they are.
_MANGLED = re.compile(rf"(?i:[<\[{{(]\s*({_TYPES})[\s_-]?(\d+)\s*[>\]}})]?)|\b({_TYPES})[_-]?(\d+)\b")
_PARTIAL_TAIL = re.compile(rf"(?:<[A-Za-z_]*\d*|[\[{{(]?\s*(?:{_TYPES})[\s_-]?\d*)$", re.I)


_NAME_PART = re.compile(r"(?<![\w-])[A-ZÀ-ÖØ-Þ][\w'’-]{2,}")  # a capitalised word of 3+ letters in a name
# words of organisation names that name no one: a later "Software" or "Bank" alone is not the company
_GENERIC_WORDS = """inc ltd llc gmbh corp plc group games software robotics analytics services solutions systems
technologies tech labs bank savings insurance university college school academy institute hospital clinic apartments
hotel cafe café restaurant press studio studios partners consulting logistics automotive pharmacy dental veterinary realty
properties motors airlines media foods bakery fitness credit union capital holdings ventures agency international global
national american british european north south east west new the and of for de la del los las der die das und"""
_GENERIC_PARTS = frozenset(_GENERIC_WORDS.split())
_COMMON_CAPS = frozenset({"The", "This", "That", "Dear", "Best", "Senior", "Junior", "Team", "Customer", "Service", "Support"})


# JSON keys whose string value is personal data of a known type, whatever the NER reads in it
_KEYED: dict[str, str] = {
    **{k: "PERSON" for k in ("name", "customer_name", "customer", "full_name", "fullname", "first_name", "firstname",
                            "last_name", "lastname", "surname", "given_name", "family_name", "contact_name", "person",
                            "patient_name", "employee_name", "recipient_name", "sender_name", "passenger_name")},
    **{k: "EMAIL_ADDRESS" for k in ("email", "email_address", "e_mail", "customer_email")},
    **{k: "PHONE_NUMBER" for k in ("phone", "phone_number", "mobile", "telephone", "tel")},
    **{k: "STREET_ADDRESS" for k in ("address", "street", "street_address", "home_address", "shipping_address")},
}


def message_texts(messages: list[dict[str, Any]]) -> list[str]:
    """The texts of chat messages that detection reads as a whole (contents and text parts)."""
    texts: list[str] = []
    for m in messages:
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, str):
            texts.append(c)
        elif isinstance(c, list):
            texts.extend(p["text"] for p in c if isinstance(p, dict) and isinstance(p.get("text"), str))
    return texts


@dataclass
class Redaction:
    text: str
    entities: list[dict[str, Any]]  # {type, start, end, placeholder}: offsets into the input
    chunks: int = 1


@dataclass
class Restoration:
    text: str
    restored: int = 0
    mangled: list[str] = field(default_factory=list)  # repaired forms, e.g. "[PERSON 1]"
    unknown: list[str] = field(default_factory=list)  # placeholders the vault does not know

    def absorb(self, other: Restoration) -> str:
        """Add another restoration's counts to this report; return its text."""
        self.restored += other.restored
        self.mangled += other.mangled
        self.unknown += other.unknown
        return other.text


class Pseudonymizer:
    """Replaces personal data with placeholders (``<PERSON_1>``) kept in a vault, and restores them in answers."""

    def __init__(self, detector: Detector | None = None, vault: Vault | None = None) -> None:
        self.detector = detector or Detector()
        self.vault = vault if vault is not None else Vault()
        self.types: dict[str, int] = {}  # entities replaced by redact_messages, per type (no values): for the ledger

    # -- text ---------------------------------------------------------------------------------
    def redact(self, text: str, entities: list[Entity] | None = None) -> Redaction:
        """Replace personal data by placeholders; ``entities`` may come from a batched detection."""
        if not text:
            return Redaction(text, [], 1)
        literals = [(m.start(), m.end()) for m in _LITERAL_LIKE.finditer(text)]
        spans: list[tuple[int, int, str]] = [(s, e, "LITERAL") for s, e in literals]
        claimed = list(literals)  # where the detector's entities may not go
        head = text.lstrip()[:3]
        # JSON keys are the answer's structure, never personal data ("order_id" read as a name broke answers)
        is_json = head[:1] in ("{", "[") or head == "```"
        keys = json_key_spans(text) if is_json else []
        claimed += keys
        if is_json:  # a value under a key that says what it is: a name the NER misses in JSON ("customer_name": "Ana Lopez")
            for a, b, key in json_value_spans(text):
                kind = _KEYED.get((key or "").lower().replace("-", "_"))
                if kind and b > a and text[a] != "<" and not text[a:b].replace(".", "").isdigit():
                    spans.append((a, b, kind))
                    claimed.append((a, b))  # the detector's reading of the same span is not added again
        for ent in (self.detector.detect(text) if entities is None else entities):
            if not any(ent.start < e and s < ent.end for s, e in claimed):
                spans.append((ent.start, ent.end, ent.type))
        self._learn_parts(text, spans)
        for ks, ke, kind in self.vault.find_known(text):  # values this vault already holds, wherever detection missed them
            if not any(ks < e and s < ke for s, e, _ in spans) and not any(ks < e and s < ke for s, e in keys):
                spans.append((ks, ke, kind))
        spans.sort()
        out, ents, pos = [], [], 0
        for s, e, kind in spans:
            ph = self.vault.placeholder_for(kind, text[s:e])
            out.append(text[pos:s])
            out.append(ph)
            ents.append({"type": kind, "start": s, "end": e, "placeholder": ph})
            pos = e
        out.append(text[pos:])
        return Redaction("".join(out), ents, len(chunk_text(text)))

    def _learn_parts(self, text: str, spans: list[tuple[int, int, str]]) -> None:
        """A name said once in full is often said again in part: "Tidepool Robotics", then "before Tidepool";
        "Jane Doe", then "Ms. Doe". The distinctive words of a detected person or organisation that occur on their
        own elsewhere in the text become vault values too, so the known-values pass below replaces them."""
        for s, e, kind in spans:
            if kind not in ("PERSON", "ORGANIZATION"):
                continue
            words = _NAME_PART.findall(text[s:e])
            if len(words) < 2:
                continue
            for w in words:
                if w.lower() in _GENERIC_PARTS or w in _COMMON_CAPS or text.count(w) < 2:
                    continue  # (said only once, inside the name itself: nothing to look for)
                for m in re.finditer(rf"(?<!\w){re.escape(w)}(?!\w)", text):
                    if not any(a <= m.start() < b for a, b, _ in spans):
                        self.vault.placeholder_for(kind, w)
                        break

    def restore(self, text: str) -> Restoration:
        res = Restoration(text)
        if not text:
            return res

        # unknown placeholders are shielded from the mangled pass below by a character the text does not
        # hold (it was NUL, which turned a user's real NUL characters into "<")
        shield = next(chr(c) for c in range(0xE000, 0xF900) if chr(c) not in text)

        def exact(m: re.Match[str]) -> str:
            val = self.vault.value(m.group())
            if val is None:
                res.unknown.append(m.group())
                return shield + m.group()[1:]
            res.restored += 1
            return val

        text = PLACEHOLDER.sub(exact, text)

        def mangled(m: re.Match[str]) -> str:
            kind, num = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            ph = f"<{kind.upper()}_{num}>"
            val = self.vault.value(ph)
            if val is None or m.group() == ph:
                return m.group()
            res.mangled.append(m.group())
            res.restored += 1
            return val

        # Only forms carrying a type and number the vault knows are repaired; plain words stay words.
        text = _MANGLED.sub(mangled, text).replace(shield, "<")
        res.text = text
        return res

    # -- chat structures ---------------------------------------------------------------------
    def _map_json_strings(self, raw: str, fn: Callable[[str], str]) -> str:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return fn(raw)

        def walk(v: Any) -> Any:
            if isinstance(v, str):
                return fn(v)
            if isinstance(v, list):
                return [walk(x) for x in v]
            if isinstance(v, dict):
                return {k: walk(x) for k, x in v.items()}
            return v

        return orjson.dumps(walk(obj)).decode()

    def redact_messages(self, messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """A redacted deep copy of chat messages (content, text parts, tool-call arguments) and the entity count."""
        count = 0
        # independent copies (deepcopy keeps aliases: a message passed twice would be redacted twice and
        # its placeholders turned into <LITERAL_n>)
        out: list[dict[str, Any]] = orjson.loads(orjson.dumps(messages))
        # One batched detection for every text in the conversation (one spaCy pass, cached per text).
        texts = message_texts(out)
        found = dict(zip(texts, self.detector.detect_batch(texts))) if texts else {}

        def red(t: str) -> str:
            nonlocal count
            r = self.redact(t, found.get(t))
            count += len(r.entities)
            for e in r.entities:
                self.types[e["type"]] = self.types.get(e["type"], 0) + 1
            return r.text

        for m in out:
            c = m.get("content")
            if isinstance(c, str):
                m["content"] = red(c)
            elif isinstance(c, list):
                for part in c:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        part["text"] = red(part["text"])
            self._map_tool_args(m, red)
        return out, count

    def restore_message(self, message: dict[str, Any]) -> tuple[dict[str, Any], Restoration]:
        """Restore an assistant message's content and tool-call arguments; the report covers both."""
        total = Restoration("")
        msg = copy.deepcopy(message)

        def rest(t: str) -> str:
            return total.absorb(self.restore(t))

        if isinstance(msg.get("content"), str):
            msg["content"] = rest(msg["content"])
        self._map_tool_args(msg, rest)
        return msg, total

    def _map_tool_args(self, message: dict[str, Any], fn: Callable[[str], str]) -> None:
        """Apply ``fn`` to every string value inside the message's tool-call arguments, in place."""
        for tc in message.get("tool_calls") or []:
            f = tc.get("function") or {}
            if isinstance(f.get("arguments"), str):
                f["arguments"] = self._map_json_strings(f["arguments"], fn)

    def stream_restorer(self) -> StreamRestorer:
        return StreamRestorer(self)


class StreamRestorer:
    """Restores placeholders in streamed text, even when one is split across chunks."""

    def __init__(self, pz: Pseudonymizer) -> None:
        self.pz = pz
        self.buf = ""
        self.report = Restoration("")

    def _emit(self, text: str) -> str:
        return self.report.absorb(self.pz.restore(text))

    def feed(self, delta: str) -> str:
        self.buf += delta
        m = _PARTIAL_TAIL.search(self.buf)
        cut = m.start() if m and len(self.buf) - m.start() < 40 else len(self.buf)
        ready, self.buf = self.buf[:cut], self.buf[cut:]
        return self._emit(ready) if ready else ""

    def flush(self) -> str:
        ready, self.buf = self.buf, ""
        return self._emit(ready) if ready else ""
