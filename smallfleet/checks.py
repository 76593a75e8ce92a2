"""Checks on a model's answer: the cascade's accept-or-escalate signal.

A check is any callable ``(step, result, policy) -> Verdict | None`` (None: does not apply to this
answer) registered under a name; routing policies list check names per step kind. New verifiers
(grounding, process verification) plug in with :func:`register_check` — the cascade does not change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema
import orjson

from .config import KindPolicy
from .models.base import ChatResult
from .step import Step


@dataclass(frozen=True)
class Verdict:
    check: str
    passed: bool
    reason: str = ""
    score: float | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"check": self.check, "passed": self.passed}
        if self.reason:
            d["reason"] = self.reason
        if self.score is not None:
            d["score"] = round(self.score, 4)
        return d


Check = Callable[[Step, ChatResult, KindPolicy], "Verdict | None"]
_REGISTRY: dict[str, Check] = {}


def register_check(name: str, check: Check) -> None:
    """Make a check available to routing policies under ``name``."""
    _REGISTRY[name] = check


def registered_checks() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def run_checks(names: tuple[str, ...] | list[str], step: Step, result: ChatResult, policy: KindPolicy) -> list[Verdict]:
    out = []
    for n in names:
        v = _REGISTRY[n](step, result, policy)
        if v is not None:
            out.append(v)
    return out


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    schema = orjson.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def validate_json(instance: Any, schema: dict[str, Any]) -> str | None:
    """First validation error as text, or None when the instance is valid."""
    v = _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode())
    err = next(iter(v.iter_errors(instance)), None)
    if err is None:
        return None
    where = "/".join(str(p) for p in err.absolute_path) or "(root)"
    return f"{where}: {err.message}"


_FENCED = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def parse_json_answer(text: str) -> Any:
    """The JSON in an answer, tolerating one surrounding code fence (small models add them)."""
    t = text.strip()
    m = _FENCED.match(t)
    return orjson.loads(m.group(1) if m else t)


def check_schema_valid(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    if not step.wants_json():
        return None
    try:
        value = parse_json_answer(result.content)
    except orjson.JSONDecodeError as e:
        cut = " (output cut off at max_tokens)" if result.finish_reason == "length" else ""
        return Verdict("schema_valid", False, f"not valid JSON{cut}: {e}")
    schema = step.schema
    if schema is None:
        return Verdict("schema_valid", isinstance(value, (dict, list)), "" if isinstance(value, (dict, list)) else "JSON is not an object")
    err = validate_json(value, schema)
    return Verdict("schema_valid", err is None, err or "")


def check_tool_call_valid(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    if not step.tools:
        return None
    offered = {t["function"]["name"]: t["function"] for t in step.tools}
    calls = result.tool_calls
    tc = step.request.get("tool_choice", "auto")
    if not calls:
        if tc == "required" or isinstance(tc, dict):
            return Verdict("tool_call_valid", False, "tool_choice demands a call but the answer has none")
        try:  # text that looks like a call of a tool that does not exist
            obj = parse_json_answer(result.content)
        except orjson.JSONDecodeError:
            return None
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            return Verdict("tool_call_valid", False, f"calls {obj['name']!r}, which was not offered")
        return None
    for c in calls:
        fn = c.get("function") or {}
        name = fn.get("name")
        if name not in offered:
            return Verdict("tool_call_valid", False, f"calls {name!r}, which was not offered")
        if isinstance(tc, dict) and tc.get("function", {}).get("name") != name:
            return Verdict("tool_call_valid", False, f"calls {name!r} but tool_choice names another tool")
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError as e:
            return Verdict("tool_call_valid", False, f"{name}: arguments are not JSON ({e})")
        if not isinstance(args, dict):
            return Verdict("tool_call_valid", False, f"{name}: arguments are not an object")
        params = offered[name].get("parameters") or {"type": "object"}
        err = validate_json(args, params)
        if err:
            return Verdict("tool_call_valid", False, f"{name}: {err}")
    return Verdict("tool_call_valid", True)


def check_nonempty(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    if result.tool_calls or result.content.strip():
        return Verdict("nonempty", True)
    return Verdict("nonempty", False, "empty answer")


_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry, (but )?i|i (can(no|')t|cannot|am unable to|'m unable to|won'?t) (help|assist|do|provide|answer|comply)"
    r"|as an ai( language model)?,? i (can(no|')t|cannot|don'?t))", re.I)


def check_not_refusal(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    if result.tool_calls:
        return None
    if _REFUSAL.search(result.content[:200]):
        return Verdict("not_refusal", False, "the model refused")
    return Verdict("not_refusal", True)


def check_confidence(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    p = result.mean_token_prob()
    if p is None or policy.min_confidence <= 0:
        return None  # backend gives no log-probabilities: the check abstains rather than guesses
    ok = p >= policy.min_confidence
    return Verdict("confidence", ok, "" if ok else f"mean token probability {p:.2f} < {policy.min_confidence:.2f}", p)


for _name, _fn in (("schema_valid", check_schema_valid), ("tool_call_valid", check_tool_call_valid),
                   ("nonempty", check_nonempty), ("not_refusal", check_not_refusal), ("confidence", check_confidence)):
    register_check(_name, _fn)
