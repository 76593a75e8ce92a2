"""Specialise (S5), data: a cluster's accepted steps as fine-tuning data, and preference pairs.

Formats (one JSON object a line):
- ``openai``: OpenAI's chat fine-tuning format, ``{"messages": [...], "tools": [...]}``, the accepted
  answer last (tool calls as ``tool_calls``);
- ``chat-jsonl``: ``{"messages": [...]}`` with tool calls written as the JSON text the local models
  produce (``{"name": ..., "arguments": {...}}``), for training a model whose chat template has no
  tool-call format (the shipped Qwen GGUFs);
- ``dpo``: OpenAI's preference format, ``{"input": {"messages", "tools"}, "preferred_output": [accepted],
  "non_preferred_output": [rejected]}``, where a cheaper model's answer was rejected: a captured
  attempt that failed its checks before the step escalated, or a replayed answer that disagreed.
Everything comes from the trace store, so it is pseudonymised already.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from ..capture.trace import Trace

FORMATS = ("openai", "chat-jsonl", "dpo")


def _call_text(msg: Mapping[str, Any]) -> str:
    calls = []
    for c in msg.get("tool_calls") or []:
        f = c.get("function") or {}
        try:
            args = orjson.loads(f.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            args = f.get("arguments")
        calls.append({"name": f.get("name"), "arguments": args})
    return orjson.dumps(calls[0] if len(calls) == 1 else calls).decode()


def _plain(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages with tool calls as JSON text and tool results as user-visible text (no tool roles)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.get("tool_calls"):
            out.append({"role": "assistant", "content": _call_text(m)})
        elif m.get("role") == "tool":
            out.append({"role": "user", "content": f"Tool result: {m.get('content')}"})
        else:
            out.append({"role": m.get("role"), "content": m.get("content")})
    return out


def _answer(msg: Mapping[str, Any]) -> dict[str, Any]:
    keep = {"role": "assistant", "content": msg.get("content")}
    if msg.get("tool_calls"):
        keep["tool_calls"] = [{"id": c.get("id", f"call_{i}"), "type": "function", "function": c.get("function")}
                              for i, c in enumerate(msg["tool_calls"])]
    return keep


def rejected_answers(t: Trace, replayed: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Cheaper answers rejected for this step: attempts that failed before escalation, a replay that disagreed."""
    out = [a.message for a in t.attempts[:-1] if a.message is not None and not a.passed]
    r = (replayed or {}).get(t.id)
    if r is not None and not r.get("agree") and r.get("replayed"):
        out.append(dict(r["replayed"]))
    return out


def export_rows(traces: Sequence[Trace], fmt: str, replayed: Mapping[str, Mapping[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    for t in traces:
        msgs = t.request.get("messages") or []
        tools = t.request.get("tools")
        if fmt == "openai":
            yield {"messages": [*msgs, _answer(t.final)], **({"tools": tools} if tools else {})}
        elif fmt == "chat-jsonl":
            final = {"role": "assistant", "content": _call_text(t.final)} if t.final.get("tool_calls") else \
                {"role": "assistant", "content": t.final.get("content")}
            yield {"messages": [*_plain(msgs), final]}
        else:
            for bad in rejected_answers(t, replayed):
                yield {"input": {"messages": msgs, **({"tools": tools} if tools else {})},
                       "preferred_output": [_answer(t.final)], "non_preferred_output": [_answer(bad)]}
