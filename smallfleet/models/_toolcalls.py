"""Tool calls for models whose chat template has no native tool-call output (the local Qwen GGUFs).

They write the call as JSON text. For ``tool_choice`` ``required`` or a named tool, decoding is
constrained to a schema whose branches are ``{"name": <tool>, "arguments": <its parameters>}``; with
``auto`` the model writes freely and a JSON call in its text is lifted into ``tool_calls``.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..guards.trust import parse_tool_output

_WORD = re.compile(r"[\w.@+:/-]+")
_FENCE = re.compile(r"```(?:json|tool_call)?\s*(.*?)```", re.S)


# Measured (bench/tool_turns.py): given a tool result, the packaged 0.5B and 1.5B answered with the call
# again or the result echoed on every single-step task; with this line after the result both answered
# all six. Sent to local models only, after the last tool message; the client never sees it.
RESULT_NUDGE = ("Above is the result of the tool call. Answer the user's question now in plain sentences, using the values "
                "from the result. If, and only if, the question cannot be answered without another tool, call a different "
                "tool instead.")
RESULT_NUDGE_NO_TOOLS = ("Above is the result of the tool call. Answer the user's question now in plain sentences, using "
                         "the values from the result.")


def with_result_nudge(messages: list[dict[str, Any]], tools_offered: bool) -> list[dict[str, Any]]:
    """The messages with the answer-now instruction after a final tool result (unchanged otherwise)."""
    if not messages or messages[-1].get("role") != "tool":
        return messages
    return [*messages, {"role": "system", "content": RESULT_NUDGE if tools_offered else RESULT_NUDGE_NO_TOOLS}]


def _has_ref(node: Any, depth: int = 0) -> bool:
    # The gateway bounds a request's schema depth before a backend sees it; the cap here only keeps
    # the walk safe for library callers.
    if depth > 64:
        return False
    if isinstance(node, dict):
        return "$ref" in node or any(_has_ref(v, depth + 1) for v in node.values())
    if isinstance(node, list):
        return any(_has_ref(v, depth + 1) for v in node)
    return False


def _rebase_refs(node: Any, base: str, depth: int = 0) -> Any:
    """A copy of ``node`` whose local ``$ref`` pointers ("#", "#/…") point under ``base`` instead."""
    if depth > 64:
        return node
    if isinstance(node, dict):
        out = {k: _rebase_refs(v, base, depth + 1) for k, v in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str) and (ref == "#" or ref.startswith("#/")):
            out["$ref"] = base + ref[1:]
        return out
    if isinstance(node, list):
        return [_rebase_refs(v, base, depth + 1) for v in node]
    return node


def call_schema(tools: list[dict[str, Any]], tool_choice: Any) -> dict[str, Any]:
    """JSON schema that admits exactly one call of an offered (or the named) tool.

    A tool's parameters may use local references (pydantic writes ``{"$ref": "#/$defs/Permission"}``
    for an enum). They point into the parameters object, which here sits under ``arguments``, so such
    parameters move to the root's ``$defs`` (``tool_N``) with their pointers rebased: llama.cpp
    resolves a pointer from the root and rejected the whole request otherwise (AgentDojo's workspace
    tools did). Parameters without references are inlined as they come."""
    named = tool_choice.get("function", {}).get("name") if isinstance(tool_choice, dict) else None
    branches = []
    defs: dict[str, Any] = {}
    for i, t in enumerate(tools):
        fn = t["function"]
        if named and fn["name"] != named:
            continue
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        if _has_ref(params):
            defs[f"tool_{i}"] = _rebase_refs(params, f"#/$defs/tool_{i}")
            params = {"$ref": f"#/$defs/tool_{i}"}
        branches.append({
            "type": "object",
            "properties": {"name": {"const": fn["name"]}, "arguments": params},
            "required": ["name", "arguments"],
        })
    schema: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    return {**schema, "$defs": defs} if defs else schema


# The next-step pass (see LlamaCppBackend.chat): one call of any offered tool, or an answer.
_ANSWER_BRANCH = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 1000}}, "required": ["answer"]}


def next_step_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    calls = dict(call_schema(tools, "auto"))
    defs = calls.pop("$defs", None)
    schema: dict[str, Any] = {"anyOf": [*calls.get("anyOf", [calls]), _ANSWER_BRANCH]}
    return {**schema, "$defs": defs} if defs else schema


def after_tool_result(messages: list[dict[str, Any]]) -> bool:
    return bool(messages) and messages[-1].get("role") == "tool"


@dataclass
class Answered:
    """The calls made since the last user message and what they returned."""

    calls: set[tuple[str, bytes]] = field(default_factory=set)  # (name, canonical arguments)
    names: set[str] = field(default_factory=set)
    values: set[str] = field(default_factory=set)  # the values in their results, lower-cased


def answered_calls(messages: list[dict[str, Any]]) -> Answered:
    out = Answered()
    for m in reversed(messages):
        role = m.get("role")
        if role == "user":
            break
        if role == "tool" and isinstance(m.get("content"), str):
            obj = parse_tool_output(m["content"])  # bounded in size and depth, cached: the checks parse it too
            if obj is None:
                out.values.update(w.lower() for w in _WORD.findall(m["content"][:20_000]))
            else:
                out.values.update(_scalars(obj))
        for tc in m.get("tool_calls") or [] if role == "assistant" else []:
            fn = tc.get("function") if isinstance(tc, dict) else None
            if isinstance(fn, dict):
                out.calls.add((str(fn.get("name")), _canonical(fn.get("arguments"))))
                out.names.add(str(fn.get("name")))
    return out


def _norm(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)  # 189.0 and 189 are the same argument
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_norm(x) for x in v]
    return v


def _canonical(arguments: Any) -> bytes:
    if isinstance(arguments, str):
        text: str = arguments
        arguments = parse_tool_output(text)  # a client's arguments may nest deeper than recursion allows: bounded
        if arguments is None:
            return text.encode()
    try:
        return orjson.dumps(_norm(arguments), option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return repr(arguments).encode()


def _scalars(v: Any) -> list[str]:
    if isinstance(v, dict):
        return [s for x in v.values() for s in _scalars(x)]
    if isinstance(v, list):
        return [s for x in v for s in _scalars(x)]
    if isinstance(v, bool) or v is None:
        return []
    return [str(_norm(v)).lower()]


def next_call(text: str, tool_names: set[str], done: Answered) -> dict[str, Any] | None:
    """The call a next-step pass chose, if it is a *new* call of an offered tool.

    Not new: the same call again (arguments compared as values), or the same tool fed a value out of
    a result it already returned (the 0.5B converted 120 USD, then converted the 111.11 EUR it got
    back, and so on until the client's step limit)."""
    obj = parse_tool_output(text)
    if not isinstance(obj, dict) or obj.get("name") not in tool_names or not isinstance(obj.get("arguments"), dict):
        return None
    name, args = obj["name"], obj["arguments"]
    if (name, _canonical(args)) in done.calls:
        return None
    if name in done.names and any(v in done.values for v in _scalars(args)):
        return None
    return make_call(name, args)


def _candidates(text: str) -> list[str]:
    out = [m.group(1).strip() for m in _FENCE.finditer(text)]
    t = text.strip()
    if t.startswith("<tool_call>"):
        t = t.removeprefix("<tool_call>").split("</tool_call>")[0].strip()
    out.append(t)
    i = t.find("{")
    if i > 0:
        out.append(t[i:])
    return out


def parse_tool_calls(text: str, tool_names: set[str]) -> list[dict[str, Any]]:
    """Lift JSON tool calls out of model text; [] when the text is not a call of an offered tool."""
    for cand in _candidates(text):
        try:
            obj = orjson.loads(cand)
        except orjson.JSONDecodeError:
            continue
        items = obj if isinstance(obj, list) else [obj]
        calls = []
        for it in items:
            if not isinstance(it, dict):
                break
            fn = it.get("function")
            name = fn.get("name") if isinstance(fn, dict) else it.get("name")
            args = fn.get("arguments") if isinstance(fn, dict) else it.get("arguments", it.get("parameters", {}))
            if not isinstance(name, str) or name not in tool_names:
                break
            if isinstance(args, str):
                try:
                    args = orjson.loads(args)
                except orjson.JSONDecodeError:
                    pass
            calls.append(make_call(name, args))
        else:
            if calls:
                return calls
    return []


def make_call(name: str, arguments: Any) -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
    return {"id": "call_" + uuid.uuid4().hex[:24], "type": "function", "function": {"name": name, "arguments": args}}
