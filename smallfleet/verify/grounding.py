"""Grounding: is a value the model produced traceable to what it was given?

A value is grounded when it appears in the conversation (user, system, tool results) after
normalising case, spacing, punctuation and number formats, or is a simple derivation of numbers that
appear there (a sum, difference, product or quotient of two, or a percentage). Dates and times
match across formats ("2024-03-05T14:00" is "March 5th at 2pm"; "tomorrow" derives one from today's
date or a date the conversation gives; see dates.py). Long free text is
composed, not copied, so it is not judged here, and a short phrase passes when most of its words
come from the conversation; enum and boolean choices are not values.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from ..step import message_text
from ..textcache import text_cached
from .arith import known_values, numbers
from .dates import DateContext, parse_date_value

_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w@.+:/-]+")


def _norm(s: str) -> str:
    return _SPACE.sub(" ", _PUNCT.sub(" ", s.casefold())).strip()


normalize = _norm  # the comparison form other modules share (grounded answers)


_CURRENCY = r"(?:[$€£¥₹]|\b(?:USD|EUR|GBP|JPY|CHF|CAD|AUD|INR|CNY)\b)"
_SCALE = {"k": 1e3, "thousand": 1e3, "m": 1e6, "mn": 1e6, "million": 1e6, "b": 1e9, "bn": 1e9, "billion": 1e9}
_NUMBER_VALUE = re.compile(rf"^\s*{_CURRENCY}?\s*(?P<sign>[-+])?\s*{_CURRENCY}?\s*"
                           rf"(?P<num>\d{{1,3}}(?:[,  ']\d{{3}})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)\s*"
                           rf"(?P<scale>k|m|mn|b|bn|thousand|million|billion)?\s*%?\s*{_CURRENCY}?\s*$", re.I)
# in the conversation: "3k", "1.5M", "$2bn" (arith.numbers, shared with the verifier, reads "3k" as algebra)
_SCALED = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?(k|m|mn|bn|b)\b", re.I)
_EUROPEAN = re.compile(r"(?<![\d.,])(\d{1,3}(?:\.\d{3})+,\d{1,2})(?![\d,])")  # 1.234,56


def as_number(s: str) -> float | None:
    """A string that is only a number — with currency, thousands separators, a scale word or a percent
    sign ("USD 1,234.56", "1.5M", "15 %") — as a float; else None."""
    m = _NUMBER_VALUE.match(s)
    if m is None:
        return None
    digits = re.sub(r"[,  ']", "", m["num"])
    try:
        v = float(digits)
    except ValueError:
        return None
    v *= _SCALE.get((m["scale"] or "").lower(), 1.0)
    return -v if m["sign"] == "-" else v


def _other_numbers(text: str) -> set[float]:
    out = {round(float(n) * _SCALE[u.lower()], 4) for n, u in _SCALED.findall(text)}
    out |= {round(float(n.replace(".", "").replace(",", ".")), 4) for n in _EUROPEAN.findall(text)}
    return out


@dataclass(frozen=True)
class _TextFacts:
    norm: str
    words: frozenset[str]
    digits: str
    values: frozenset[float]
    numbers: frozenset[float]


@text_cached(max_entries=256, max_bytes=8 << 20)
def _facts(text: str) -> _TextFacts:
    """One message's lookups, cached by its text: agents re-send the whole history with every step, and
    reading a long tool result's numbers and equations costs milliseconds each time."""
    norm = _norm(text)
    extra = _other_numbers(text)
    return _TextFacts(norm, frozenset(re.findall(r"\w+", norm)), re.sub(r"\D", "", text), frozenset(known_values([text]) | extra),
                      frozenset(numbers(text)) | extra)


class Context:
    """Everything the model was shown, prepared for fast lookups."""

    def __init__(self, texts: list[str], today: date | None = None) -> None:
        self.texts = texts
        self.today = today
        self._dates: DateContext | None = None  # parsed on the first date-like value only
        parts = [_facts(t) for t in texts]
        self.text = " ".join(p.norm for p in parts)
        self.words: set[str] = set().union(*(p.words for p in parts))
        self.digits = "".join(p.digits for p in parts)
        self.values: set[float] = set().union(*(p.values for p in parts))
        nums = sorted(set().union(*(p.numbers for p in parts)))[:60]
        derived: set[float] = set()
        for a, b in itertools.combinations(nums, 2):
            derived.update({round(a + b, 4), round(abs(a - b), 4), round(a * b, 4)})
            if b:
                derived.add(round(a / b, 4))
            if a:
                derived.add(round(b / a, 4))
        self.derived = derived

    @classmethod
    def from_messages(cls, messages: list[dict[str, Any]]) -> Context:
        texts = []
        for m in messages:
            if m.get("role") in ("user", "system", "developer", "tool"):
                texts.append(message_text(m))
            for tc in m.get("tool_calls") or []:  # earlier calls' arguments were seen by the model too
                texts.append(str((tc.get("function") or {}).get("arguments", "")))
        return cls(texts)

    def number_grounded(self, v: float) -> bool:
        k = round(v, 4)
        return k in self.values or k in self.derived or (v.is_integer() and 0 <= v <= 10)

    def string_grounded(self, s: str) -> bool | None:
        """True/False, or None when the string is free text this check does not judge."""
        t = _norm(s)
        if not t:
            return True
        if len(t.split()) > 6:
            return None
        if t in self.text:
            return True
        if any(c.isdigit() for c in s):
            n = as_number(s)
            if n is not None:  # "1234.56" for "$1,234.56", "1.5M" for "1.5 million"; or an id in digits
                return self.number_grounded(n) or self._digits_grounded(s)
            when = parse_date_value(s)
            if when is not None:
                if self._dates is None:
                    self._dates = DateContext(self.texts, self.today)
                return self._dates.grounded(when)
        words = [w for w in re.findall(r"\w+", t) if len(w) > 1]
        if len(words) >= 2:  # a phrase composed from the conversation's words (a search query, a summary)
            return sum(w in self.words for w in words) / len(words) >= 0.6
        return self._digits_grounded(s)

    def _digits_grounded(self, s: str) -> bool:
        """Phone numbers and ids written with other separators: the same run of 5+ digits."""
        d = re.sub(r"\D", "", s)
        return len(d) >= 5 and d in self.digits


def ungrounded(value: Any, ctx: Context, schema: dict[str, Any] | None, path: str = "") -> list[str]:
    """Paths of values in ``value`` that the context does not support (enum/boolean fields skipped)."""
    schema = schema if isinstance(schema, dict) else {}
    if "enum" in schema or "const" in schema or schema.get("type") == "boolean":
        return []
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float)):
        return [] if ctx.number_grounded(float(value)) else [f"{path or '(value)'} = {value}"]
    if isinstance(value, str):
        ok = ctx.string_grounded(value)
        return [] if ok in (True, None) else [f"{path or '(value)'} = {value[:40]!r}"]
    if isinstance(value, list):
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        return [p for i, v in enumerate(value) for p in ungrounded(v, ctx, items, f"{path}[{i}]")]
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        return [p for k, v in value.items() for p in ungrounded(v, ctx, props.get(k), f"{path}.{k}" if path else k)]
    return []
