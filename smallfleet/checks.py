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
    if err.validator in ("required", "additionalProperties", "dependentRequired"):
        return f"{where}: {err.message}"  # names keys only
    # Other messages quote the offending value, which may be personal data: say what rule failed instead.
    rule = orjson.dumps(err.validator_value).decode()
    return f"{where}: fails {err.validator} {rule[:80]}"


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


def _text_call(result: ChatResult) -> dict[str, Any] | None:
    """A tool call written as the whole answer text (small models echo the call format)."""
    try:
        obj = parse_json_answer(result.content)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("name"), str) and ("arguments" in obj or "parameters" in obj):
        return obj
    return None


def check_tool_call_valid(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    if not step.tools:
        if result.tool_calls or step.wants_json():
            return None
        obj = _text_call(result)
        if obj is None:
            return None
        return Verdict("tool_call_valid", False, f"answered with a call of {obj['name']!r} as text, but no tools were offered")
    offered = {t["function"]["name"]: t["function"] for t in step.tools}
    calls = result.tool_calls
    tc = step.request.get("tool_choice", "auto")
    if not calls:
        if tc == "required" or isinstance(tc, dict):
            return Verdict("tool_call_valid", False, "tool_choice demands a call but the answer has none")
        obj = _text_call(result)  # a call written as text instead of an answer
        if obj is not None:
            if tc == "none" or obj["name"] not in offered:
                why = "tool_choice is none" if obj["name"] in offered else "that tool was not offered"
                return Verdict("tool_call_valid", False, f"wrote a call of {obj['name']!r} as text, but {why}")
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


def json_value_spans(text: str) -> list[tuple[int, int, str | None]]:
    """(start, end, key) of every scalar value in JSON text — strings and numbers, not keys or nulls.

    A tolerant scanner: it never fails, so a fenced or truncated answer still yields its spans.
    """
    spans: list[tuple[int, int, str | None]] = []
    i, n = 0, len(text)
    last_key: str | None = None
    expect_key = False
    stack: list[str] = []
    while i < n:
        c = text[i]
        if c in "{[":
            stack.append(c)
            expect_key = c == "{"
            i += 1
        elif c in "}]":
            if stack:
                stack.pop()
            i += 1
        elif c == ",":
            expect_key = bool(stack) and stack[-1] == "{"
            i += 1
        elif c == ":":
            expect_key = False
            i += 1
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if expect_key:
                last_key = text[i + 1:j]
            else:
                spans.append((i + 1, j, last_key))
            i = j + 1
        elif c == "-" or c.isdigit():
            j = i + 1
            while j < n and (text[j].isdigit() or text[j] in ".eE+-"):
                j += 1
            spans.append((i, j, last_key))
            i = j
        else:
            i += 1
    return spans


def _enum_keys(schema: dict[str, Any] | None) -> set[str]:
    """Property names (any depth) whose values are closed sets."""
    keys: set[str] = set()
    stack = [schema] if isinstance(schema, dict) else []
    while stack:
        node = stack.pop()
        for k, sub in (node.get("properties") or {}).items():
            if isinstance(sub, dict):
                if "enum" in sub or "const" in sub:
                    keys.add(k)
                stack.append(sub)
        for key in ("anyOf", "oneOf", "allOf", "items"):
            v = node.get(key)
            stack.extend(x for x in (v if isinstance(v, list) else [v]) if isinstance(x, dict))
    return keys


def value_token_probs(result: ChatResult, skip_keys: set[str]) -> list[float]:
    """Probabilities of the tokens that spell *copyable* JSON values: numbers and single-word strings
    (ids, codes, e-mail addresses). Multi-word free text is generative, so its low-probability tokens
    say nothing about invention; it is left out, as are values under ``skip_keys``."""
    import math

    toks, lps = result.token_texts, result.token_logprobs
    if not toks or not lps:
        return []
    text = "".join(toks)  # offsets come from the tokens themselves, so they always line up
    spans = [(a, b) for a, b, k in json_value_spans(text) if k not in skip_keys and b > a and not any(ch.isspace() for ch in text[a:b])]
    probs, pos, si = [], 0, 0
    for tok, lp in zip(toks, lps):
        end = pos + len(tok)
        while si < len(spans) and spans[si][1] <= pos:
            si += 1
        if si < len(spans) and spans[si][0] < end and tok.strip():
            probs.append(math.exp(lp))
        pos = end
    return probs


def check_confidence(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    """Token-probability confidence.

    Free text: mean probability of all generated tokens. JSON (schema output or tool call): the
    *lowest* probability among the tokens that spell scalar values — an invented amount or id shows
    up there. llama.cpp reports the unconstrained distribution, so tokens forced by a grammar (JSON
    punctuation, keys, enum labels) carry no signal and are left out; with none left, it abstains.
    """
    if policy.min_confidence <= 0 or not result.token_logprobs:
        return None  # backend gives no log-probabilities: abstain rather than guess
    if step.wants_json() or result.tool_calls:
        skip = _enum_keys(step.schema)
        if result.tool_calls:
            skip.add("name")  # the tool name is a grammar-forced choice, not a copied value
        for t in step.tools:
            skip |= _enum_keys(t["function"].get("parameters"))
        probs = value_token_probs(result, skip)
        if not probs:
            return None
        p, what = min(probs), "lowest value-token probability"
    else:
        p, what = result.mean_token_prob() or 0.0, "mean token probability"
    ok = p >= policy.min_confidence
    return Verdict("confidence", ok, "" if ok else f"{what} {p:.2f} < {policy.min_confidence:.2f}", p)


for _name, _fn in (("schema_valid", check_schema_valid), ("tool_call_valid", check_tool_call_valid),
                   ("nonempty", check_nonempty), ("not_refusal", check_not_refusal), ("confidence", check_confidence)):
    register_check(_name, _fn)

# The verifiers register themselves the same way a plug-in would (imported last: they use this module).
from .verify import checks as _verify_checks  # noqa: E402,F401
