"""Anthropic Messages API behind the same interface: OpenAI request in, OpenAI-shaped result out.

The conversion is pure (``to_messages_request`` / ``from_messages_response``) and unit-tested; a live
call needs an Anthropic key, which these machines do not have.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ..spec import ModelSpec
from ..step import message_text
from ._toolcalls import make_call
from .base import ChatResult
from .openai_http import OpenAIHTTPBackend

_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


def to_messages_request(request: dict[str, Any], model: str, default_max: int) -> dict[str, Any]:
    system: list[str] = []
    out: list[dict[str, Any]] = []

    def push(role: str, block: dict[str, Any]) -> None:
        if out and out[-1]["role"] == role:  # Anthropic wants alternating roles
            out[-1]["content"].append(block)
        else:
            out.append({"role": role, "content": [block]})

    for m in request["messages"]:
        role = m["role"]
        if role in ("system", "developer"):
            system.append(message_text(m))
        elif role == "tool":
            push("user", {"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": message_text(m)})
        elif role == "assistant":
            if message_text(m):
                push("assistant", {"type": "text", "text": message_text(m)})
            for tc in m.get("tool_calls") or []:
                args = tc["function"].get("arguments") or "{}"
                push("assistant", {"type": "tool_use", "id": tc.get("id", "call"), "name": tc["function"]["name"],
                                   "input": orjson.loads(args) if isinstance(args, str) else args})
        else:
            push("user", {"type": "text", "text": message_text(m)})
    body: dict[str, Any] = {"model": model, "messages": out,
                            "max_tokens": min(request.get("max_tokens") or request.get("max_completion_tokens") or default_max,
                                              default_max)}
    if system:
        body["system"] = "\n\n".join(system)
    if request.get("temperature") is not None:
        body["temperature"] = min(float(request["temperature"]), 1.0)
    if request.get("tools") and request.get("tool_choice") != "none":
        body["tools"] = [{"name": t["function"]["name"], "description": t["function"].get("description", ""),
                          "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}}}
                         for t in request["tools"]]
        tc = request.get("tool_choice")
        if tc == "required":
            body["tool_choice"] = {"type": "any"}
        elif isinstance(tc, dict):
            body["tool_choice"] = {"type": "tool", "name": tc["function"]["name"]}
    rf = request.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        # Messages has no response_format: a forced single tool carries the schema instead.
        body["tools"] = [{"name": "respond", "description": "Return the answer.", "input_schema": rf["json_schema"]["schema"]}]
        body["tool_choice"] = {"type": "tool", "name": "respond"}
    return body


def from_messages_response(data: dict[str, Any], forced_json: bool) -> tuple[dict[str, Any], str, int, int]:
    texts, calls = [], []
    for block in data.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            if forced_json and block.get("name") == "respond":
                texts.append(orjson.dumps(block.get("input", {})).decode())
            else:
                calls.append(make_call(block["name"], block.get("input", {})))
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        msg["tool_calls"] = calls
    finish = _STOP.get(data.get("stop_reason") or "end_turn", "stop")
    if forced_json and finish == "tool_calls":
        finish = "stop"
    usage = data.get("usage") or {}
    return msg, finish, int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))


class AnthropicBackend(OpenAIHTTPBackend):
    """Reuses the HTTP plumbing (pooling, retries, error mapping); only the wire format differs."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.url = spec.location.rstrip("/") + "/v1/messages"
        self._headers = {"anthropic-version": "2023-06-01", "content-type": "application/json"}

    def load(self) -> None:
        self._headers["x-api-key"] = self.spec.resolved_api_key()

    async def chat(self, request: dict[str, Any]) -> ChatResult:
        body = to_messages_request(request, self.spec.remote_model or self.spec.name, self.spec.max_output)
        t0 = time.perf_counter()
        resp = await self._post(orjson.dumps(body))
        forced = isinstance(request.get("response_format"), dict) and request["response_format"].get("type") == "json_schema"
        msg, finish, tin, tout = from_messages_response(orjson.loads(resp.body), forced)
        return ChatResult(model=self.spec.name, message=msg, finish_reason=finish, tokens_in=tin, tokens_out=tout,
                          latency_ms=(time.perf_counter() - t0) * 1000)

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        # Verified streaming replays a finished result, so a non-streaming call is all the cascade needs.
        res = await self.chat(request)
        yield {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": res.message, "finish_reason": res.finish_reason}],
               "usage": {"prompt_tokens": res.tokens_in, "completion_tokens": res.tokens_out}}
