"""Validation of OpenAI chat-completions requests, before anything is routed.

Every field smallfleet or a backend reads is type-checked here, so a client mistake is a 400 that
names the field (OpenAI's ``param``) and never reaches a model as a 5xx. Sizes and nesting are
bounded: no client can make the gateway walk, render or compile something unbounded. Unknown
fields pass through untouched (and are never forwarded to the embedded models).
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from .errors import InvalidRequestError
from .schemas import check_schema

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

MAX_DEPTH = 64          # JSON nesting of the whole body (a schema is 16 subschemas deep at most)
MAX_MESSAGES = 4_096
MAX_TOOLS = 128
MAX_PARTS = 256         # content parts per message
MAX_TOOL_CALLS = 64     # per assistant message
MAX_STOP = 4            # stop sequences, as OpenAI
MAX_STOP_CHARS = 256
MAX_ID = 256            # tool-call ids, names, run ids
TEXT_PARTS = frozenset({"text", "input_text", "output_text"})


def _bad(msg: str, param: str, hint: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(msg, param=param, hint=hint)


def check_depth(obj: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` (iterative: a deep body cannot exhaust the stack here)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, d = stack.pop()
        if d > limit:
            raise _bad(f"the request nests objects and lists more than {limit} levels deep.", "body")
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node if isinstance(v, (dict, list)))


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _content(content: Any, p: str, role: str) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _bad(f"{p}.content must be a string or a list of parts, got {type(content).__name__}.", f"{p}.content")
    if len(content) > MAX_PARTS:
        raise _bad(f"{p}.content has {len(content)} parts; the limit is {MAX_PARTS}.", f"{p}.content")
    for j, part in enumerate(content):
        q = f"{p}.content[{j}]"
        if not isinstance(part, dict):
            raise _bad(f"{q} must be an object like {{\"type\": \"text\", \"text\": \"...\"}}.", q)
        t = part.get("type")
        if t == "refusal" and role == "assistant":
            if not isinstance(part.get("refusal"), str):
                raise _bad(f"{q}.refusal must be a string.", f"{q}.refusal")
            continue
        if t not in TEXT_PARTS:
            kind = t if isinstance(t, str) else type(t).__name__
            raise _bad(f"{q}: content parts of type {kind[:40]!r} are not supported; the fleet's models read text only.",
                       f"{q}.type", "send {\"type\": \"text\", \"text\": \"...\"} parts (images, audio and files are not accepted)")
        if not isinstance(part.get("text"), str):
            raise _bad(f"{q}.text must be a string.", f"{q}.text")


def _tool_calls(calls: Any, p: str, ids: set[str]) -> None:
    if calls is None:
        return
    if not isinstance(calls, list):
        raise _bad(f"{p}.tool_calls must be a list.", f"{p}.tool_calls")
    if len(calls) > MAX_TOOL_CALLS:
        raise _bad(f"{p}.tool_calls has {len(calls)} calls; the limit is {MAX_TOOL_CALLS}.", f"{p}.tool_calls")
    for j, tc in enumerate(calls):
        q = f"{p}.tool_calls[{j}]"
        if not isinstance(tc, dict):
            raise _bad(f"{q} must be an object.", q)
        fn = tc.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad(f"{q} needs function.name.", q)
        if len(fn["name"]) > MAX_ID:
            raise _bad(f"{q}.function.name is too long.", f"{q}.function.name")
        if tc.get("type", "function") != "function":
            raise _bad(f"{q}.type must be \"function\".", f"{q}.type")
        cid = tc.get("id")
        if cid is not None:
            if not isinstance(cid, str) or len(cid) > MAX_ID:
                raise _bad(f"{q}.id must be a string of at most {MAX_ID} characters.", f"{q}.id")
            ids.add(cid)
        args = fn.get("arguments", "{}")
        if not isinstance(args, str):
            raise _bad(f"{q}.function.arguments must be a JSON string (OpenAI sends the arguments encoded).",
                       f"{q}.function.arguments")
        try:
            orjson.loads(args or "{}")
        except orjson.JSONDecodeError:
            raise _bad(f"{q}.function.arguments is not valid JSON.", f"{q}.function.arguments") from None


def _messages(msgs: Any) -> None:
    if not isinstance(msgs, list) or not msgs:
        raise _bad("'messages' must be a non-empty list.", "messages", 'e.g. "messages": [{"role": "user", "content": "hi"}]')
    if len(msgs) > MAX_MESSAGES:
        raise _bad(f"'messages' has {len(msgs)} entries; the limit is {MAX_MESSAGES}.", "messages")
    open_calls: set[str] | None = None  # ids of the calls the latest assistant message made; None: no calls open
    for i, m in enumerate(msgs):
        p = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad(f"{p} must be an object.", p)
        role = m.get("role")
        if not isinstance(role, str) or role not in ROLES:
            shown = repr(role)[:40] if isinstance(role, (str, int, float, bool)) or role is None else type(role).__name__
            raise _bad(f"{p}.role = {shown} is not one of {', '.join(sorted(ROLES))}.", f"{p}.role")
        content = m.get("content")
        _content(content, p, role)
        name = m.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > MAX_ID):
            raise _bad(f"{p}.name must be a string of at most {MAX_ID} characters.", f"{p}.name")
        if role == "assistant":
            ids: set[str] = set()
            _tool_calls(m.get("tool_calls"), p, ids)
            open_calls = ids if m.get("tool_calls") else None
        elif content is None:
            raise _bad(f"{p}.content is missing.", f"{p}.content")
        if role == "tool":
            tcid = m.get("tool_call_id")
            if not isinstance(tcid, str) or len(tcid) > MAX_ID:
                raise _bad(f"{p} (role tool) needs a string tool_call_id.", f"{p}.tool_call_id")
            # as OpenAI: a tool result answers a call of the assistant message before it
            if open_calls is None:
                raise _bad(f"{p} (role tool) must follow an assistant message with tool_calls.", f"{p}.tool_call_id",
                           "send the assistant message that made the call, then one tool message per call")
            if open_calls and tcid not in open_calls:
                raise _bad(f"{p}.tool_call_id {tcid[:64]!r} answers no call of the preceding assistant message "
                           f"(its calls: {', '.join(sorted(open_calls))[:200]}).", f"{p}.tool_call_id")
        elif role != "assistant":
            open_calls = None


def _tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("'tools' must be a list.", "tools")
        if len(tools) > MAX_TOOLS:
            raise _bad(f"'tools' offers {len(tools)} tools; the limit is {MAX_TOOLS}.", "tools")
        for i, t in enumerate(tools):
            p = f"tools[{i}]"
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(t, dict) or t.get("type", "function") != "function" or not isinstance(fn, dict):
                raise _bad(f"{p} must be {{'type': 'function', 'function': {{...}}}}.", p)
            name = fn.get("name")
            if not isinstance(name, str) or not _TOOL_NAME.match(name):
                shown = repr(name)[:70] if isinstance(name, str) or name is None else type(name).__name__
                raise _bad(f"{p}.function.name {shown} must match [A-Za-z0-9_.-]{{1,64}}.", f"{p}.function.name")
            if name in names:
                raise _bad(f"{p}: tool name {name!r} is offered twice.", f"{p}.function.name")
            names.add(name)
            desc = fn.get("description")
            if desc is not None and not isinstance(desc, str):
                raise _bad(f"{p}.function.description must be a string.", f"{p}.function.description")
            params = fn.get("parameters", {"type": "object", "properties": {}})
            check_schema(params, f"{p}.function.parameters")
            if params.get("type", "object") != "object":
                raise _bad(f"{p}.function.parameters must describe an object (type: object).", f"{p}.function.parameters")
    tc = body.get("tool_choice")
    if tc is None or tc in ("auto", "none", "required"):
        if tc == "required" and not names:
            raise _bad("tool_choice 'required' needs 'tools'.", "tool_choice")
        return
    fn = tc.get("function") if isinstance(tc, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str) or name not in names:
        raise _bad("tool_choice must be auto, none, required or {\"type\": \"function\", \"function\": {\"name\": "
                   "an offered tool}}.", "tool_choice")


def _response_format(rf: Any) -> None:
    if rf is None:
        return
    if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
        raise _bad("response_format.type must be text, json_object or json_schema.", "response_format")
    if rf["type"] == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict) or "schema" not in js:
            raise _bad("response_format.json_schema.schema is missing.", "response_format.json_schema",
                       '{"type": "json_schema", "json_schema": {"name": "x", "schema": {...}}}')
        check_schema(js["schema"], "response_format.json_schema.schema")


def _sampling(body: dict[str, Any]) -> None:
    for key in ("max_tokens", "max_completion_tokens", "n"):
        v = body.get(key)
        if v is not None and (not _is_int(v) or v < 1):
            raise _bad(f"'{key}' must be a positive integer.", key)
    if body.get("n", 1) != 1:
        raise _bad("'n' > 1 is not supported: smallfleet returns one verified choice.", "n")
    for key, lo, hi in (("temperature", 0, 2), ("top_p", 0, 1), ("presence_penalty", -2, 2), ("frequency_penalty", -2, 2)):
        v = body.get(key)
        if v is not None and (not _is_num(v) or not lo <= v <= hi):
            raise _bad(f"'{key}' must be a number between {lo} and {hi}.", key)
    seed = body.get("seed")
    if seed is not None and (not _is_int(seed) or not -(2 ** 63) <= seed < 2 ** 64):
        raise _bad("'seed' must be an integer.", "seed")
    for key in ("logprobs", "stream", "cache_prompt", "parallel_tool_calls", "store"):
        if body.get(key) is not None and not isinstance(body[key], bool):
            raise _bad(f"'{key}' must be true or false.", key)
    tl = body.get("top_logprobs")
    if tl is not None and (not _is_int(tl) or not 0 <= tl <= 20):
        raise _bad("'top_logprobs' must be an integer between 0 and 20.", "top_logprobs")
    stop = body.get("stop")
    if stop is not None:
        seq = [stop] if isinstance(stop, str) else stop
        if not isinstance(seq, list) or len(seq) > MAX_STOP or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in seq):
            raise _bad(f"'stop' must be a string or a list of at most {MAX_STOP} non-empty strings of up to "
                       f"{MAX_STOP_CHARS} characters.", "stop")
    so = body.get("stream_options")
    if so is not None:
        if not isinstance(so, dict):
            raise _bad("'stream_options' must be an object, e.g. {\"include_usage\": true}.", "stream_options")
        if so.get("include_usage") is not None and not isinstance(so["include_usage"], bool):
            raise _bad("stream_options.include_usage must be true or false.", "stream_options.include_usage")
    model = body.get("model", "auto")
    if not isinstance(model, str) or len(model) > MAX_ID:
        raise _bad("'model' must be a string.", "model")
    user = body.get("user")
    if user is not None and (not isinstance(user, str) or len(user) > MAX_ID):
        raise _bad(f"'user' must be a string of at most {MAX_ID} characters.", "user")
    meta = body.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict) or len(meta) > 16:
            raise _bad("'metadata' must be an object of at most 16 string values.", "metadata")
        for k, v in meta.items():
            if not isinstance(v, str) or len(k) > 64 or len(v) > 512:
                raise _bad(f"metadata.{str(k)[:64]} must be a string of at most 512 characters (keys up to 64).", f"metadata.{str(k)[:64]}")


def validate_request(body: Any, raw: bytes | None = None) -> dict[str, Any]:
    """Return the request dict if it is usable, else raise InvalidRequestError naming the field.

    ``raw``, the JSON the body was parsed from, lets the nesting check be skipped when the text has
    too few brackets to nest that deep (most requests)."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object.", "body")
    if raw is None or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        check_depth(body)
    _messages(body.get("messages"))
    _tools(body)
    _response_format(body.get("response_format"))
    _sampling(body)
    return body
