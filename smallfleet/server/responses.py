"""The OpenAI Responses API (``POST /v1/responses``) on top of the same cascade as chat completions.

A Responses request is translated into a chat-completions request (instructions → system message,
input items → messages, ``function_call`` / ``function_call_output`` items → the assistant's
``tool_calls`` and ``role: "tool"`` messages, ``text.format`` → ``response_format``), run through the
engine exactly like ``/v1/chat/completions`` (validation, step kind, checks, escalation, guards,
privacy, ledger), and the answer comes back as a ``response`` object — or, with ``stream: true``, as
the Responses event stream (verified: the step is checked first, then streamed).

``previous_response_id`` works within one gateway process: the last responses (their full input and
output) are kept in memory, bounded, and scoped to the API key that made them. Nothing else is
stored; ``store`` is accepted and ignored.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any

import orjson

from ..errors import InvalidRequestError, ResponseNotFoundError
from ..outcome import Outcome
from ..shared import SharedState
from .render import summary
from .sse import word_pieces

TEXT_PARTS = {"input_text", "output_text", "text"}
MAX_ITEMS = 4_096


def _bad(msg: str, param: str, hint: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(msg, param=param, hint=hint)


def _text_of(content: Any, p: str) -> str:
    """A message item's content as text (text parts only)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(f"{p}.content must be a string or a list of content parts.", f"{p}.content")
    out = []
    for j, part in enumerate(content):
        q = f"{p}.content[{j}]"
        if not isinstance(part, dict):
            raise _bad(f"{q} must be an object.", q)
        t = part.get("type")
        if t in TEXT_PARTS:
            if not isinstance(part.get("text"), str):
                raise _bad(f"{q}.text must be a string.", f"{q}.text")
            out.append(part["text"])
        elif t == "refusal":
            out.append(str(part.get("refusal") or ""))
        else:
            kind = t if isinstance(t, str) else type(t).__name__
            raise _bad(f"{q}: content parts of type {kind[:40]!r} are not supported; the fleet's models read text only.",
                       f"{q}.type", "send input_text parts (images, audio and files are not accepted)")
    return "\n".join(out)


def _messages(body: dict[str, Any], history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _bad("'instructions' must be a string.", "instructions")
        if instructions:
            msgs.append({"role": "system", "content": instructions})
    msgs.extend(history)
    inp = body.get("input")
    if isinstance(inp, str):
        msgs.append({"role": "user", "content": inp})
        return msgs
    if not isinstance(inp, list) or (not inp and not history):
        raise _bad("'input' must be a string or a non-empty list of input items.", "input",
                   'e.g. "input": "hi" or "input": [{"role": "user", "content": "hi"}]')
    if len(inp) > MAX_ITEMS:
        raise _bad(f"'input' has {len(inp)} items; the limit is {MAX_ITEMS}.", "input")
    made = {c.get("id") for m in history if m.get("role") == "assistant" for c in m.get("tool_calls") or []}  # call ids so far
    for i, item in enumerate(inp):
        p = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(f"{p} must be an object.", p)
        t = item.get("type", "message")
        if t == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _bad(f"{p}.role must be user, assistant, system or developer.", f"{p}.role")
            msgs.append({"role": role, "content": _text_of(item.get("content"), p)})
        elif t == "function_call":
            call_id, name, args = item.get("call_id"), item.get("name"), item.get("arguments", "{}")
            if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(args, str):
                raise _bad(f"{p}: a function_call item needs string call_id, name and arguments.", p)
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            made.add(call_id)
            last = msgs[-1] if msgs else None
            prev = inp[i - 1] if i > 0 and isinstance(inp[i - 1], dict) else {}
            same_turn = prev.get("type") == "function_call" or (prev.get("type", "message") == "message" and prev.get("role") == "assistant")
            if last is not None and last["role"] == "assistant" and same_turn:
                last.setdefault("tool_calls", []).append(call)  # a turn's text and its (parallel) calls share a message
            else:
                msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif t == "function_call_output":
            call_id, out = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str):
                raise _bad(f"{p}: a function_call_output item needs a string call_id.", f"{p}.call_id")
            if call_id not in made:
                raise _bad(f"{p}: no function_call with call_id {call_id[:64]!r} precedes this output.", f"{p}.call_id",
                           "send the function_call item (or previous_response_id) before its function_call_output")
            text = out if isinstance(out, str) else _text_of(out, p) if isinstance(out, list) else None
            if text is None:
                raise _bad(f"{p}.output must be a string (or a list of text parts).", f"{p}.output")
            msgs.append({"role": "tool", "tool_call_id": call_id, "content": text})
        elif t == "reasoning":
            continue  # a reasoning model's summary from an earlier turn: nothing for these models to read
        else:
            kind = t if isinstance(t, str) else type(t).__name__
            raise _bad(f"{p}: input items of type {kind[:40]!r} are not supported.", f"{p}.type",
                       "send message, function_call and function_call_output items")
    return msgs


def _tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, Any]:
    tools = body.get("tools")
    out = None
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("'tools' must be a list.", "tools")
        out = []
        for i, t in enumerate(tools):
            if not isinstance(t, dict) or t.get("type") != "function":
                kind = t.get("type") if isinstance(t, dict) else type(t).__name__
                raise _bad(f"tools[{i}]: tools of type {str(kind)[:40]!r} are not available here; only function tools are.",
                           f"tools[{i}].type")
            fn = {k: t[k] for k in ("name", "description", "parameters") if k in t}
            if fn.get("parameters") is None:
                fn.pop("parameters", None)
            out.append({"type": "function", "function": fn})
    tc = body.get("tool_choice")
    if tc is None or tc in ("auto", "none", "required"):
        return out, tc
    if isinstance(tc, dict) and tc.get("type") == "function" and isinstance(tc.get("name"), str):
        return out, {"type": "function", "function": {"name": tc["name"]}}
    raise _bad("tool_choice must be auto, none, required or {\"type\": \"function\", \"name\": ...}.", "tool_choice")


def _format(body: dict[str, Any]) -> dict[str, Any] | None:
    text = body.get("text")
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _bad("'text' must be an object, e.g. {\"format\": {\"type\": \"json_schema\", ...}}.", "text")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise _bad("text.format.type must be text, json_object or json_schema.", "text.format")
    if fmt["type"] == "json_schema":
        if "schema" not in fmt:
            raise _bad("text.format.schema is missing.", "text.format.schema")
        return {"type": "json_schema", "json_schema": {"name": str(fmt.get("name") or "output"), "schema": fmt["schema"],
                                                       "strict": bool(fmt.get("strict", False))}}
    return {"type": fmt["type"]}


def to_chat(body: Any, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat-completions request for a Responses request (validated like any chat request afterwards)."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object.", "body")
    for key, why in (("conversation", "conversation objects are not kept here; send the history, or previous_response_id"),
                     ("prompt", "stored prompt templates are not available here; send instructions and input")):
        if body.get(key) is not None:
            raise _bad(f"'{key}' is not supported: {why}.", key)
    req: dict[str, Any] = {"model": body.get("model") or "auto", "messages": _messages(body, history)}
    tools, tc = _tools(body)
    if tools:
        req["tools"] = tools
    if tc is not None:
        req["tool_choice"] = tc
    rf = _format(body)
    if rf is not None:
        req["response_format"] = rf
    for src, dst in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p"),
                     ("parallel_tool_calls", "parallel_tool_calls"), ("metadata", "metadata"), ("user", "user"),
                     ("stream", "stream"), ("top_logprobs", "top_logprobs")):
        if body.get(src) is not None:
            req[dst] = body[src]
    return req


_PARAMS = (("max_tokens", "max_output_tokens"), ("response_format.json_schema.schema", "text.format.schema"),
           ("response_format", "text.format"))


def responses_param(param: str | None) -> str | None:
    """The Responses API's name for a chat-completions field in an error (messages keep their chat index)."""
    if param is None:
        return None
    for chat, resp in _PARAMS:
        if param.startswith(chat):
            return resp + param[len(chat):]
    return re.sub(r"^tools\[(\d+)\]\.function\.", r"tools[\1].", param)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def response_object(outcome: Outcome, body: dict[str, Any], resp_id: str) -> dict[str, Any]:
    """The ``response`` object for a finished step."""
    res = outcome.final.result
    assert res is not None
    msg = res.message
    output: list[dict[str, Any]] = []
    text = msg.get("content") or ""
    if text:
        output.append({"type": "message", "id": new_id("msg"), "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
    for tc in msg.get("tool_calls") or []:
        fn = tc.get("function") or {}
        output.append({"type": "function_call", "id": new_id("fc"), "call_id": tc.get("id") or new_id("call"),
                       "name": fn.get("name"), "arguments": fn.get("arguments") or "{}", "status": "completed"})
    cut = res.finish_reason == "length"
    fmt = body.get("text") if isinstance(body.get("text"), dict) else {"format": {"type": "text"}}
    tc = body.get("tool_choice", "auto")
    return {
        "id": resp_id, "object": "response", "created_at": int(time.time()),
        "status": "incomplete" if cut else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "error": None, "model": outcome.final.spec.name, "output": output,
        "instructions": body.get("instructions"), "previous_response_id": body.get("previous_response_id"),
        "max_output_tokens": body.get("max_output_tokens"), "temperature": body.get("temperature", 0.0),
        "top_p": body.get("top_p", 1.0), "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "tool_choice": tc if tc is not None else "auto", "tools": body.get("tools") or [], "text": fmt,
        "truncation": body.get("truncation") or "disabled", "metadata": body.get("metadata") or {},
        "store": False, "reasoning": {"effort": None, "summary": None}, "user": body.get("user"),
        "usage": {"input_tokens": res.tokens_in, "output_tokens": res.tokens_out,
                  "total_tokens": res.tokens_in + res.tokens_out,
                  "input_tokens_details": {"cached_tokens": res.cached_tokens},
                  "output_tokens_details": {"reasoning_tokens": 0}},
        "smallfleet": summary(outcome),
    }


def events(resp: dict[str, Any]) -> list[dict[str, Any]]:
    """A finished response as the Responses event stream (``response.created`` … ``response.completed``)."""
    seq = 0
    out: list[dict[str, Any]] = []

    def emit(kind: str, **data: Any) -> None:
        nonlocal seq
        out.append({"type": kind, "sequence_number": seq, **data})
        seq += 1

    start = {**resp, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    emit("response.created", response=start)
    emit("response.in_progress", response=start)
    for i, item in enumerate(resp["output"]):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            emit("response.output_item.added", output_index=i, item={**item, "status": "in_progress", "content": []})
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            emit("response.content_part.added", item_id=item["id"], output_index=i, content_index=0, part=empty)
            for piece in word_pieces(text):
                emit("response.output_text.delta", item_id=item["id"], output_index=i, content_index=0, delta=piece, logprobs=[])
            emit("response.output_text.done", item_id=item["id"], output_index=i, content_index=0, text=text, logprobs=[])
            emit("response.content_part.done", item_id=item["id"], output_index=i, content_index=0, part=item["content"][0])
        else:
            emit("response.output_item.added", output_index=i, item={**item, "status": "in_progress", "arguments": ""})
            emit("response.function_call_arguments.delta", item_id=item["id"], output_index=i, delta=item["arguments"])
            emit("response.function_call_arguments.done", item_id=item["id"], output_index=i, arguments=item["arguments"],
                 name=item["name"])
        emit("response.output_item.done", output_index=i, item=item)
    emit("response.incomplete" if resp["status"] == "incomplete" else "response.completed", response=resp)
    return out


class ResponseStore:
    """Recent responses, for ``previous_response_id``: bounded, scoped by owner. In this process's
    memory, or, where several gateway processes serve one client, in the shared session state
    (encrypted; kept ``shared.RETENTION_S``)."""

    def __init__(self, max_items: int = 1_000, max_bytes: int = 64 << 20, shared: SharedState | None = None) -> None:
        self.max_items, self.max_bytes = max_items, max_bytes
        self.shared = shared
        self._data: OrderedDict[str, tuple[str | None, list[dict[str, Any]], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def remote(self) -> bool:
        """Kept across the network: call off the event loop."""
        return self.shared is not None and self.shared.remote

    def put(self, resp_id: str, owner: str | None, history: list[dict[str, Any]], answer: dict[str, Any]) -> None:
        """Keep the conversation as it stands after this response: its messages (without the request's
        instructions, which a later request does not inherit) plus the answer."""
        convo = [*history, {k: v for k, v in answer.items() if k in ("role", "content", "tool_calls")}]
        raw = orjson.dumps(convo)
        size = len(raw)
        if size > self.max_bytes // 4:
            return
        if self.shared is not None:
            self.shared.db.execute("INSERT INTO stored_responses (id, owner, data, created) VALUES (?,?,?,?)",
                                   (resp_id, owner, self.shared.seal(raw), time.time()))
            return
        with self._lock:
            self._data[resp_id] = (owner, convo, size)
            self._bytes += size
            while len(self._data) > self.max_items or self._bytes > self.max_bytes:
                _, (_, _, s) = self._data.popitem(last=False)
                self._bytes -= s

    def get(self, resp_id: str, owner: str | None) -> list[dict[str, Any]]:
        hit: tuple[str | None, list[dict[str, Any]], int] | None
        if self.shared is not None:
            rows = self.shared.db.query("SELECT owner, data FROM stored_responses WHERE id=?", (resp_id,))
            hit = (rows[0][0], orjson.loads(self.shared.unseal(rows[0][1])), 0) if rows else None
        else:
            with self._lock:
                hit = self._data.get(resp_id)
        if hit is None or hit[0] != owner:
            raise ResponseNotFoundError(f"no response {resp_id[:64]!r} is kept by this gateway.",
                                   hint="responses are kept by the gateway for a while (in memory unless a session store is "
                                        "shared); send the whole history in 'input' instead", param="previous_response_id")
        return [dict(m) for m in hit[1]]
