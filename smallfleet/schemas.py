"""JSON schemas a client sends, bounded before any model (or grammar builder) sees them.

A schema becomes a llama.cpp grammar for constrained decoding. Measured on the packaged 0.5B: a
string with ``minLength`` above ``maxLength`` made the grammar builder allocate until the kernel
killed the process (repetition ``{500,200}``); 2,000 optional properties cost 16 s of CPU, 5,000 enum
values 48 s; a ``minLength`` over 2,000 is a grammar llama.cpp cannot parse. So every schema is walked
once, iteratively, and refused with a 400 that names the keyword when it is contradictory, recursive,
too large or too deep. The bounds are generous for real tool and extraction schemas (OpenAI's
structured outputs allow 5,000 properties and 1,000 enum values across a schema; most agent schemas
have a few dozen of each). Measured at the bounds on the 0.5B (``bench/schema_limits.py``): building
the grammar takes at most 0.4 s, and 30 tokens under it at most 3.5 s (64 ``anyOf`` branches); past
them, 20-33 s and 6.5 GB before llama.cpp gives up.

Keywords the grammar cannot enforce (``uniqueItems``, ``multipleOf``, ``not``, ``if``...) are allowed:
the ``schema_valid`` check validates the answer against the full schema afterwards.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

import jsonschema
import orjson

from .errors import InvalidRequestError

MAX_DEPTH = 16            # nested subschemas
MAX_NODES = 2_000         # subschemas in one schema
MAX_BYTES = 64 << 10      # serialised size
MAX_PROPERTIES = 256      # per object
MAX_TOTAL_PROPERTIES = 1_024
MAX_ENUM = 256            # values per enum
MAX_TOTAL_ENUM = 1_024
MAX_BRANCHES = 64         # anyOf / oneOf / allOf / prefixItems entries
MAX_COUNT = 65_536        # maxLength / maxItems / maxProperties (the answer is cut by max_tokens long before)
MAX_MIN_COUNT = 2_000     # minLength / minItems / minProperties: llama.cpp's grammar cannot repeat more
MAX_PATTERN = 512         # characters in a pattern
MAX_REPEAT = 1_000        # a {n} or {n,m} count inside a pattern

_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
_SUBSCHEMA_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
                  "unevaluatedItems", "unevaluatedProperties", "additionalItems")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_REFUSED = {"$dynamicRef": "dynamic references", "$recursiveRef": "recursive references",
            "$dynamicAnchor": "dynamic anchors", "$recursiveAnchor": "recursive anchors"}
_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_REPEAT = re.compile(r"\{(\d+)(?:,(\d*))?\}")
_REF = re.compile(r"^#/(\$defs|definitions)/([^/]+)$")
# raw control characters (a newline, ESC) have no place in a pattern or a property name, and llama.cpp
# prints a grammar it cannot parse to the server log, where they would forge lines or colours
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _bad(msg: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(msg, param=param)


def _count(v: Any, key: str, where: str, param: str, cap: int) -> int | None:
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise _bad(f"{param}: {where}{key} must be a non-negative integer, got {_show(v)}.", param)
    if v > cap:
        raise _bad(f"{param}: {where}{key} = {v} is above the gateway's limit of {cap}.", param)
    return v


def _number(v: Any, key: str, where: str, param: str) -> float | None:
    if v is None:
        return None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise _bad(f"{param}: {where}{key} must be a finite number, got {_show(v)}.", param)
    return float(v)


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _pair(lo: float | None, hi: float | None, lo_key: str, hi_key: str, where: str, param: str) -> None:
    if lo is not None and hi is not None and lo > hi:
        raise _bad(f"{param}: {where}{lo_key} ({lo:g}) is above {hi_key} ({hi:g}); no value can satisfy both.", param)


def _check_pattern(p: Any, where: str, param: str) -> None:
    if not isinstance(p, str):
        raise _bad(f"{param}: {where}pattern must be a string.", param)
    if len(p) > MAX_PATTERN:
        raise _bad(f"{param}: {where}pattern is {len(p)} characters; the limit is {MAX_PATTERN}.", param)
    if _CONTROL.search(p):
        raise _bad(f"{param}: {where}pattern contains a raw control character; write it escaped (\\n, \\t).", param)
    repeats = _REPEAT.findall(p)
    for lo, hi in repeats:
        n, m = int(lo), int(hi) if hi else None
        if n > MAX_REPEAT or (m is not None and m > MAX_REPEAT):
            raise _bad(f"{param}: {where}pattern repeats a part more than {MAX_REPEAT} times.", param)
        if m is not None and n > m:
            raise _bad(f"{param}: {where}pattern has the repetition {{{n},{m}}}, whose minimum is above its maximum.", param)
    try:
        re.compile(p)
    except re.error as e:
        raise _bad(f"{param}: {where}pattern is not a valid regular expression ({e}).", param) from None


def check_schema(schema: Any, param: str) -> None:
    """Raise InvalidRequestError (400, naming ``param``) unless ``schema`` is a bounded, consistent JSON schema."""
    if not isinstance(schema, dict):
        raise _bad(f"{param} must be a JSON schema object, got {type(schema).__name__}.", param)
    try:
        text = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError) as e:  # too deep for the encoder, or a non-JSON value
        raise _bad(f"{param} cannot be serialised ({e}).", param) from None
    if len(text) > MAX_BYTES:
        raise _bad(f"{param} is {len(text) >> 10} KiB; the gateway's limit for a schema is {MAX_BYTES >> 10} KiB.", param)
    err = _check_cached(text.decode(), param)
    if err:
        raise _bad(err, param)


@lru_cache(maxsize=512)  # keys are at most MAX_BYTES: at most 32 MiB of text cached
def _check_cached(text: str, param: str) -> str | None:
    try:
        _walk(orjson.loads(text), param)
        jsonschema.Draft202012Validator.check_schema(orjson.loads(text))
    except InvalidRequestError as e:
        return e.message
    except jsonschema.SchemaError as e:
        return f"{param} is not a valid JSON schema: {e.message[:200]}."
    except RecursionError:
        return f"{param} is nested too deeply."
    return None


def _walk(root: dict[str, Any], param: str) -> None:
    """One iterative pass over every subschema: shape, bounds, references."""
    stack: list[tuple[Any, str, int, str]] = [(root, "", 0, "#")]  # node, where, depth, owning definition
    nodes = props_total = enum_total = 0
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        if isinstance(root.get(key), dict):
            defs.update({f"#/{key}/{name}": sub for name, sub in root[key].items()})
    refs: dict[str, set[str]] = {}  # definition -> definitions it refers to (for cycle detection)
    while stack:
        node, where, depth, owner = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise _bad(f"{param} has more than {MAX_NODES} subschemas.", param)
        if depth > MAX_DEPTH:
            raise _bad(f"{param} nests subschemas more than {MAX_DEPTH} deep (at {where or 'the root'}).", param)
        if isinstance(node, bool):
            continue
        if not isinstance(node, dict):
            raise _bad(f"{param}: {where or 'the root'} must be a schema object or true/false, got {type(node).__name__}.", param)
        at = f"{where}." if where else ""
        for k, what in _REFUSED.items():
            if k in node:
                raise _bad(f"{param}: {at}{k}: {what} are not supported.", param)
        ref = node.get("$ref")
        if ref is not None:
            if not isinstance(ref, str) or not _REF.match(ref) or ref not in defs:
                raise _bad(f"{param}: {at}$ref {_show(ref)} must point into this schema's own $defs "
                           f"(\"#/$defs/NAME\"); other references are not followed.", param)
            refs.setdefault(owner, set()).add(ref)
        t = node.get("type")
        types = t if isinstance(t, list) else [t] if t is not None else []
        if not all(isinstance(x, str) and x in _TYPES for x in types) or (isinstance(t, list) and not t):
            raise _bad(f"{param}: {at}type {_show(t)} must be one of {', '.join(sorted(_TYPES))} (or a list of them).", param)
        # bounds that would make the grammar impossible or huge
        lo = _count(node.get("minLength"), "minLength", at, param, MAX_MIN_COUNT)
        hi = _count(node.get("maxLength"), "maxLength", at, param, MAX_COUNT)
        _pair(lo, hi, "minLength", "maxLength", at, param)
        lo = _count(node.get("minItems"), "minItems", at, param, MAX_MIN_COUNT)
        hi = _count(node.get("maxItems"), "maxItems", at, param, MAX_COUNT)
        _pair(lo, hi, "minItems", "maxItems", at, param)
        lo = _count(node.get("minProperties"), "minProperties", at, param, MAX_MIN_COUNT)
        hi = _count(node.get("maxProperties"), "maxProperties", at, param, MAX_COUNT)
        _pair(lo, hi, "minProperties", "maxProperties", at, param)
        mn = _number(node.get("minimum"), "minimum", at, param)
        mx = _number(node.get("maximum"), "maximum", at, param)
        _pair(mn, mx, "minimum", "maximum", at, param)
        xmn = _number(node.get("exclusiveMinimum"), "exclusiveMinimum", at, param)
        xmx = _number(node.get("exclusiveMaximum"), "exclusiveMaximum", at, param)
        if xmn is not None and xmx is not None and xmn >= xmx:
            raise _bad(f"{param}: {at}exclusiveMinimum ({xmn:g}) is not below exclusiveMaximum ({xmx:g}).", param)
        _number(node.get("multipleOf"), "multipleOf", at, param)
        if "pattern" in node:
            _check_pattern(node["pattern"], at, param)
        if "enum" in node:
            e = node["enum"]
            if not isinstance(e, list) or not e:
                raise _bad(f"{param}: {at}enum must be a non-empty list.", param)
            if len(e) > MAX_ENUM:
                raise _bad(f"{param}: {at}enum has {len(e)} values; the limit is {MAX_ENUM}.", param)
            enum_total += len(e)
            if enum_total > MAX_TOTAL_ENUM:
                raise _bad(f"{param} has more than {MAX_TOTAL_ENUM} enum values in all.", param)
        req = node.get("required")
        if req is not None and (not isinstance(req, list) or not all(isinstance(r, str) for r in req)):
            raise _bad(f"{param}: {at}required must be a list of property names.", param)
        # children
        for key in _SUBSCHEMA_MAPS:
            if key not in node:
                continue
            sub = node[key]
            if not isinstance(sub, dict):
                raise _bad(f"{param}: {at}{key} must be an object of schemas.", param)
            if key == "properties":
                if len(sub) > MAX_PROPERTIES:
                    raise _bad(f"{param}: {at}properties has {len(sub)} entries; the limit is {MAX_PROPERTIES} per object.", param)
                props_total += len(sub)
                if props_total > MAX_TOTAL_PROPERTIES:
                    raise _bad(f"{param} has more than {MAX_TOTAL_PROPERTIES} properties in all.", param)
            for name, s in sub.items():
                if key == "properties" and (_CONTROL.search(name) or len(name) > 256):
                    raise _bad(f"{param}: {at}properties has a name with control characters or over 256 characters.", param)
                own = f"#/{key}/{name}" if node is root and key in ("$defs", "definitions") else owner
                stack.append((s, f"{at}{key}.{name}", depth + 1, own))
        for key in _SUBSCHEMA_ONE:
            if key in node:
                stack.append((node[key], f"{at}{key}", depth + 1, owner))
        for key in _SUBSCHEMA_LISTS:
            if key not in node:
                continue
            sub = node[key]
            if not isinstance(sub, list) or (key != "prefixItems" and not sub):
                raise _bad(f"{param}: {at}{key} must be a non-empty list of schemas.", param)
            if len(sub) > MAX_BRANCHES:
                raise _bad(f"{param}: {at}{key} has {len(sub)} entries; the limit is {MAX_BRANCHES}.", param)
            for i, s in enumerate(sub):
                stack.append((s, f"{at}{key}[{i}]", depth + 1, owner))
    _no_cycles(refs, param)


def _no_cycles(refs: dict[str, set[str]], param: str) -> None:
    """Recursive schemas (a definition that reaches itself) have no finite grammar here: refuse them."""
    state: dict[str, int] = {}
    for start in refs:
        if state.get(start):
            continue
        path = [(start, iter(sorted(refs.get(start, ()))))]
        state[start] = 1
        while path:
            node, it = path[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                path.pop()
                continue
            if state.get(nxt) == 1:
                raise _bad(f"{param}: {nxt} refers back to itself; recursive schemas are not supported.", param)
            if not state.get(nxt):
                state[nxt] = 1
                path.append((nxt, iter(sorted(refs.get(nxt, ())))))
