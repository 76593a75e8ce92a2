"""Validation of OpenAI chat-completions requests, before anything is routed.

Checks only what smallfleet relies on; unknown fields pass through untouched. Each failure names the
field (OpenAI's ``param``) and says what a valid value looks like.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import jsonschema
import orjson

from .errors import InvalidRequestError

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _bad(msg: str, param: str, hint: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(msg, param=param, hint=hint)


@lru_cache(maxsize=512)
def _check_schema_text(text: str) -> str | None:
    try:
        jsonschema.Draft202012Validator.check_schema(orjson.loads(text))
    except jsonschema.SchemaError as e:
        return e.message
    return None


def check_json_schema(schema: Any, param: str) -> None:
    if not isinstance(schema, dict):
        raise _bad(f"{param} must be a JSON schema object, got {type(schema).__name__}.", param)
    err = _check_schema_text(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode())
    if err:
        raise _bad(f"{param} is not a valid JSON schema: {err}.", param)


def validate_request(body: Any) -> dict[str, Any]:
    """Return the request dict if it is usable, else raise InvalidRequestError naming the field."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object.", "body")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise _bad("'messages' must be a non-empty list.", "messages",
                   'e.g. "messages": [{"role": "user", "content": "hi"}]')
    tool_ids: set[str] = set()
    for i, m in enumerate(msgs):
        p = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad(f"{p} must be an object.", p)
        role = m.get("role")
        if role not in ROLES:
            raise _bad(f"{p}.role = {role!r} is not one of {', '.join(sorted(ROLES))}.", f"{p}.role")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise _bad(f"{p}.content must be a string or a list of parts.", f"{p}.content")
        if role == "assistant":
            for j, tc in enumerate(m.get("tool_calls") or []):
                fn = tc.get("function") if isinstance(tc, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise _bad(f"{p}.tool_calls[{j}] needs function.name.", f"{p}.tool_calls[{j}]")
                if isinstance(tc.get("id"), str):
                    tool_ids.add(tc["id"])
        elif content is None:
            raise _bad(f"{p}.content is missing.", f"{p}.content")
        if role == "tool" and not isinstance(m.get("tool_call_id"), str):
            raise _bad(f"{p} (role tool) needs a string tool_call_id.", f"{p}.tool_call_id")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("'tools' must be a list.", "tools")
        names: set[str] = set()
        for i, t in enumerate(tools):
            p = f"tools[{i}]"
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(t, dict) or t.get("type", "function") != "function" or not isinstance(fn, dict):
                raise _bad(f"{p} must be {{'type': 'function', 'function': {{...}}}}.", p)
            name = fn.get("name")
            if not isinstance(name, str) or not _TOOL_NAME.match(name):
                raise _bad(f"{p}.function.name {name!r} must match [A-Za-z0-9_.-]{{1,64}}.", f"{p}.function.name")
            if name in names:
                raise _bad(f"{p}: tool name {name!r} is offered twice.", f"{p}.function.name")
            names.add(name)
            params = fn.get("parameters", {"type": "object", "properties": {}})
            check_json_schema(params, f"{p}.function.parameters")
            if params.get("type", "object") != "object":
                raise _bad(f"{p}.function.parameters must describe an object (type: object).", f"{p}.function.parameters")
        tc = body.get("tool_choice")
        if tc is not None and tc not in ("auto", "none", "required"):
            name = tc.get("function", {}).get("name") if isinstance(tc, dict) else None
            if name not in names:
                raise _bad(f"tool_choice {tc!r} must be auto, none, required or name an offered tool.", "tool_choice")
    rf = body.get("response_format")
    if rf is not None:
        if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
            raise _bad("response_format.type must be text, json_object or json_schema.", "response_format")
        if rf["type"] == "json_schema":
            js = rf.get("json_schema")
            if not isinstance(js, dict) or "schema" not in js:
                raise _bad("response_format.json_schema.schema is missing.", "response_format.json_schema",
                           '{"type": "json_schema", "json_schema": {"name": "x", "schema": {...}}}')
            check_json_schema(js["schema"], "response_format.json_schema.schema")
    for key in ("max_tokens", "max_completion_tokens", "n"):
        v = body.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise _bad(f"'{key}' must be a positive integer.", key)
    if body.get("n", 1) != 1:
        raise _bad("'n' > 1 is not supported: smallfleet returns one verified choice.", "n")
    t = body.get("temperature")
    if t is not None and (not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t <= 2):
        raise _bad("'temperature' must be a number between 0 and 2.", "temperature")
    if not isinstance(body.get("stream", False), bool):
        raise _bad("'stream' must be true or false.", "stream")
    model = body.get("model", "auto")
    if not isinstance(model, str):
        raise _bad("'model' must be a string.", "model")
    return body
