"""Enforcing a guard review on the answer the client gets: a denied tool call is removed (mode
``block``) or held for the user's confirmation (``confirm``), and the answer says so in words; in
``flag`` mode the calls stay and only the headers tell."""

from __future__ import annotations

from typing import Any

from ..models.base import ChatResult
from . import Guard, Review
from .injection import Finding
from .policy import call_token, decode_args
from .trust import Context


def enforce(guard: Guard, result: ChatResult, mode: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
            approved: frozenset[str], context: tuple[Context, list[tuple[str, Finding]]] | None) -> Review | None:
    """Review the answer's tool calls against policy and provenance and apply ``mode`` to ``result``
    in place. None when there was nothing to decide (no call, no untrusted tool output read)."""
    calls = result.message.get("tool_calls") or []
    if not calls and not any(m.get("role") == "tool" for m in messages):
        return None  # nothing untrusted read and nothing to decide: keep the hot path free
    review = guard.review(messages, calls, tools, set(approved), context=context)
    if mode == "flag" or not review.blocked:
        return review
    keep = [tc for tc, d in zip(calls, review.decisions) if d.allowed]
    lines = []
    for tc, d in zip(calls, review.decisions):
        if d.allowed:
            continue
        fn = tc.get("function") or {}
        line = f"I did not call {d.tool}: {d.reason}."
        if mode == "confirm":
            line += (f" If you want it anyway, confirm and resend with header "
                     f"x-smallfleet-approve: {call_token(str(fn.get('name')), decode_args(fn.get('arguments')))}")
        lines.append(line)
    msg = dict(result.message)
    text = (msg.get("content") or "").strip()
    msg["content"] = (text + "\n\n" if text else "") + "\n".join(lines)
    if keep:
        msg["tool_calls"] = keep
    else:
        msg.pop("tool_calls", None)
        result.finish_reason = "stop"
    result.message = msg
    return review
