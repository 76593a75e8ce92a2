"""Does a replayed answer agree with the accepted one? Judged the way the step's kind is used.

- tool calls: the same calls (as a multiset), each by name and argument by argument, values
  normalised (case and spacing of strings, 3 == 3.0, key order);
- extraction (JSON): field by field, values normalised the same way;
- classification: the label;
- free text: the replayed answer passes the step's checks and carries every number of the accepted
  answer (an answer from a tool result that drops or changes a value is not the same answer).
Each verdict comes with a reason a person can read (``why``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import orjson

_NUM = re.compile(r"(?<![\w.])-?\d+(?:[.,]\d+)*(?:\.\d+)?(?![\w])")


def _norm(v: Any) -> Any:
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, float)):
        f = float(v)
        return round(f, 6) if math.isfinite(f) else str(f)
    if isinstance(v, str):
        s = " ".join(v.split()).casefold()
        try:  # "3" and 3 are one value in arguments a model wrote as text
            return round(float(s), 6)
        except ValueError:
            return s
    if isinstance(v, list):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _norm(x) for k, x in sorted(v.items())}
    return str(v)


def _args(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
    return raw


def _calls(msg: dict[str, Any]) -> list[tuple[str, Any]]:
    out = []
    for c in msg.get("tool_calls") or []:
        f = c.get("function") or {} if isinstance(c, dict) else {}
        out.append((str(f.get("name", "")), _norm(_args(f.get("arguments", "{}")))))
    return out


def _short(v: Any) -> str:
    s = orjson.dumps(v).decode() if not isinstance(v, str) else repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _diff_fields(a: Any, b: Any, where: str = "") -> list[str]:
    """Where two normalised JSON values differ, field by field (at most a few)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            p = f"{where}.{k}" if where else k
            if k not in b:
                out.append(f"{p} missing")
            elif k not in a:
                out.append(f"{p} added ({_short(b[k])})")
            else:
                out += _diff_fields(a[k], b[k], p)
        return out
    if a != b:
        return [f"{where or 'value'}: {_short(a)} vs {_short(b)}"]
    return []


def compare_calls(original: dict[str, Any], replayed: dict[str, Any]) -> tuple[bool, str]:
    oc, rc = _calls(original), _calls(replayed)
    if not rc:
        return False, "answered in words where the accepted answer called " + ", ".join(n for n, _ in oc)
    if not oc:
        return False, "called " + ", ".join(n for n, _ in rc) + " where the accepted answer was text"
    key = lambda c: orjson.dumps(c, option=orjson.OPT_SORT_KEYS)  # noqa: E731
    if Counter(map(key, oc)) == Counter(map(key, rc)):
        return True, "same calls: " + ", ".join(n for n, _ in oc)
    on, rn = Counter(n for n, _ in oc), Counter(n for n, _ in rc)
    if on != rn:
        return False, f"called {', '.join(sorted(rn.elements()))} instead of {', '.join(sorted(on.elements()))}"
    diffs = []
    for (name, a), (_, b) in zip(sorted(oc, key=key), sorted(rc, key=key)):
        diffs += [f"{name} {d}" for d in _diff_fields(a, b)]
    return False, "arguments differ: " + "; ".join(diffs[:4])


def _json(msg: dict[str, Any]) -> Any:
    c = msg.get("content")
    if not isinstance(c, str):
        return None
    try:
        return orjson.loads(c)
    except orjson.JSONDecodeError:
        return None


def compare_json(original: dict[str, Any], replayed: dict[str, Any]) -> tuple[bool, str]:
    a, b = _json(original), _json(replayed)
    if b is None:
        return False, "the replayed answer is not JSON"
    if a is None:
        return False, "the accepted answer is not JSON"
    diffs = _diff_fields(_norm(a), _norm(b))
    return (True, "same fields") if not diffs else (False, "fields differ: " + "; ".join(diffs[:4]))


def _label(msg: dict[str, Any]) -> str:
    c = msg.get("content")
    if not isinstance(c, str):
        return ""
    j = _json(msg)
    if isinstance(j, dict) and len(j) == 1:
        c = str(next(iter(j.values())))
    return " ".join(c.strip().strip(".").split()).casefold()


def compare_text(original: dict[str, Any], replayed: dict[str, Any], failed_checks: list[str]) -> tuple[bool, str]:
    text = replayed.get("content")
    if not isinstance(text, str) or not text.strip():
        return False, "no text in the replayed answer"
    if failed_checks:
        return False, "fails its checks: " + "; ".join(failed_checks[:3])
    want = {n.replace(",", "") for n in _NUM.findall(original.get("content") or "")}
    have = {n.replace(",", "") for n in _NUM.findall(text)}

    def same(n: str, pool: set[str]) -> bool:
        return n in pool or any(_norm(n) == _norm(m) for m in pool)

    missing = sorted(n for n in want if not same(n, have))
    if missing:
        return False, "drops values of the accepted answer: " + ", ".join(missing[:5])
    return True, "passes its checks" + (f" and keeps its values ({', '.join(sorted(want)[:5])})" if want else "")


def compare(original: dict[str, Any], replayed: dict[str, Any] | None, kind: str, *,
            wants_json: bool = False, failed_checks: list[str] | None = None) -> tuple[bool, str]:
    """(agree, why) for a replayed assistant message against the accepted one."""
    if replayed is None:
        return False, "no answer (the model failed)"
    if original.get("tool_calls") or replayed.get("tool_calls"):
        return compare_calls(original, replayed)
    if kind == "classification":
        ja, jb = _json(original), _json(replayed)
        if isinstance(ja, dict) and isinstance(jb, dict) and len(ja) > 1:  # several labels ({"category", "urgency"}): each
            return compare_json(original, replayed)
        a, b = _label(original), _label(replayed)
        return (True, f"same label {a!r}") if a == b else (False, f"label {b!r} instead of {a!r}")
    if wants_json or kind == "extraction":
        return compare_json(original, replayed)
    return compare_text(original, replayed, failed_checks or [])
