"""Curate (S2): which captured steps are fit to learn from.

Dropped, in this order, each counted under its reason:
- ``error``: the step failed, or its answer is empty (no text, no tool call);
- ``refusal``: the model declined (OpenAI's ``refusal`` field, or a reply that opens with a refusal);
- ``unverified``: the final answer failed its checks (imported frontier answers were never checked
  and are kept: the agent accepted them);
- ``low_feedback``: the agent said the answer was wrong (feedback below ``min_feedback``);
- ``duplicate``: the same request and answer as a step kept before;
- ``near_duplicate``: same structure and the conversation's words (system prompt aside: it is part of
  the structure) overlap at least ``near`` (Jaccard of word 3-shingles, found with MinHash so the cost
  stays linear).
The texts were pseudonymised when captured; nothing here sees personal data.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import orjson

from .trace import Trace

_REFUSAL = re.compile(r"^\s*(?:i'?m sorry,? but i (?:can(?:'|no)t|am unable|won'?t)|i (?:can(?:'|no)t|am unable to|won'?t) "
                      r"(?:help|assist|comply|do that|provide)|as an ai\b)", re.I)
_WORD = re.compile(r"\w+")
_PRIME = (1 << 61) - 1
_PERMS = 64
_BANDS = 16  # 16 bands of 4 rows: pairs at Jaccard 0.9 meet in a band with probability > 0.999
_rng = np.random.default_rng(20261201)
_A = _rng.integers(1, _PRIME, _PERMS, dtype=np.uint64)
_B = _rng.integers(0, _PRIME, _PERMS, dtype=np.uint64)


@dataclass
class CurateReport:
    kept: list[Trace] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    duplicate_of: dict[str, str] = field(default_factory=dict)  # dropped id -> the kept id it repeats


def is_refusal(message: dict[str, object]) -> bool:
    if message.get("refusal"):
        return True
    c = message.get("content")
    return isinstance(c, str) and not message.get("tool_calls") and bool(_REFUSAL.match(c))


def _empty(message: dict[str, object]) -> bool:
    c = message.get("content")
    return not message.get("tool_calls") and not (isinstance(c, str) and c.strip())


def _words(t: Trace) -> list[str]:
    parts = []
    for m in t.request.get("messages") or []:
        if m.get("role") in ("system", "developer"):  # shared by every step of a task (and in its signature)
            continue
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts.extend(p.get("text", "") for p in c if isinstance(p, dict) and isinstance(p.get("text"), str))
    return _WORD.findall(" ".join(parts).lower())


def _signature(words: list[str]) -> np.ndarray | None:
    shingles = {" ".join(words[i:i + 3]) for i in range(max(1, len(words) - 2))} if words else set()
    if not shingles:
        return None
    x = np.fromiter((zlib.crc32(s.encode()) for s in shingles), dtype=np.uint64, count=len(shingles))
    # (a*x + b) mod p with x < 2^32 and a, b < 2^61: the product can pass 2^64, so fold a first
    h = ((_A[:, None] % (1 << 31)) * x[None, :] + _B[:, None]) % _PRIME
    mins: np.ndarray = h.min(axis=1)
    return mins


def _jaccard(a: list[str], b: list[str]) -> float:
    sa = {" ".join(a[i:i + 3]) for i in range(max(1, len(a) - 2))}
    sb = {" ".join(b[i:i + 3]) for i in range(max(1, len(b) - 2))}
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def curate(traces: Iterable[Trace], *, min_feedback: float = 0.5, near: float = 0.9,
           keep_unverified: bool = False) -> CurateReport:
    """The traces fit to learn from, in their order, and what was dropped why (see the module doc)."""
    out = CurateReport()
    exact: dict[bytes, str] = {}
    buckets: dict[tuple[str, int, bytes], list[int]] = {}
    kept_words: list[list[str]] = []
    for t in traces:
        if t.error or _empty(t.final):
            out.dropped["error"] += 1
            continue
        if is_refusal(t.final):
            out.dropped["refusal"] += 1
            continue
        if t.verified is False and not keep_unverified:
            out.dropped["unverified"] += 1
            continue
        if t.feedback is not None and t.feedback < min_feedback:
            out.dropped["low_feedback"] += 1
            continue
        key = orjson.dumps([t.signature, t.request.get("messages"), t.final], option=orjson.OPT_SORT_KEYS)
        if key in exact:
            out.dropped["duplicate"] += 1
            out.duplicate_of[t.id] = exact[key]
            continue
        words = _words(t)
        sig = _signature(words) if near < 1.0 else None
        twin = None
        if sig is not None:
            rows = _PERMS // _BANDS
            bands = [(t.signature, b, sig[b * rows:(b + 1) * rows].tobytes()) for b in range(_BANDS)]
            candidates = {i for band in bands for i in buckets.get(band, ())}
            twin = next((i for i in sorted(candidates) if _jaccard(words, kept_words[i]) >= near), None)
        if twin is not None:
            out.dropped["near_duplicate"] += 1
            out.duplicate_of[t.id] = out.kept[twin].id
            continue
        exact[key] = t.id
        idx = len(out.kept)
        out.kept.append(t)
        kept_words.append(words)
        if sig is not None:
            for band in bands:
                buckets.setdefault(band, []).append(idx)
    return out
