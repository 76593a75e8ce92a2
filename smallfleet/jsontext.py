"""JSON in model answers: tolerant parsing, schema validation that never quotes values, value spans.

Shared by the checks and the verifiers (a leaf module)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import jsonschema
import orjson


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


def json_value_spans(text: str) -> list[tuple[int, int, str | None]]:
    """(start, end, key) of every scalar value in JSON text — strings and numbers, not keys or nulls.

    A tolerant scanner: it never fails, so a fenced or truncated answer still yields its spans.
    """
    return [(a, b, k) for a, b, k, is_key in _scan(text) if not is_key]


def json_key_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every object key in JSON text (inside its quotes); the same tolerant scanner."""
    return [(a, b) for a, b, _, is_key in _scan(text) if is_key]


def _scan(text: str) -> list[tuple[int, int, str | None, bool]]:
    spans: list[tuple[int, int, str | None, bool]] = []
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
                spans.append((i + 1, j, None, True))
            else:
                spans.append((i + 1, j, last_key, False))
            i = j + 1
        elif c == "-" or c.isdigit():
            j = i + 1
            while j < n and (text[j].isdigit() or text[j] in ".eE+-"):
                j += 1
            spans.append((i, j, last_key, False))
            i = j
        else:
            i += 1
    return spans
