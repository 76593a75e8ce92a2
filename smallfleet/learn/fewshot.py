"""Specialise without training: a cluster's accepted answers shown to the small model as worked examples.

For a cluster, the ``k`` accepted steps nearest its centroid are the examples (typical, not odd ones).
They go into the prompt as one system message after the client's own system prompt: each example's
request (the last user message, and the tool result when the step answers one) and its accepted
answer, a call written as the JSON the local models produce. Replay measures what they are worth
(``smallfleet learn replay --few-shot K``); ``learn apply`` keeps them in a route only where they made
the cheaper tier good enough, and the cascade adds them for that tier's attempt only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..capture.trace import Trace, task_text
from .export import _call_text
from .match import term_vector

MAX_EXAMPLE_CHARS = 1500
HEADER = "Worked examples of this task, with answers that were accepted. Answer the new request the same way."


def pick_examples(members: Sequence[Trace], centroid: dict[int, float], k: int) -> list[Trace]:
    """The ``k`` members nearest the centroid, one per conversation (ties: the earlier step)."""
    scored = sorted(members, key=lambda t: (-sum(w * centroid.get(i, 0.0) for i, w in term_vector(task_text(t.request)).items()), t.ts))
    out: list[Trace] = []
    seen: set[str] = set()
    for t in scored:
        conv = t.trace or t.id
        if conv in seen:
            continue
        seen.add(conv)
        out.append(t)
        if len(out) == k:
            break
    return out


def _clip(text: str) -> str:
    return text if len(text) <= MAX_EXAMPLE_CHARS else text[:MAX_EXAMPLE_CHARS - 3] + "..."


def example_text(t: Trace) -> str:
    msgs = t.request.get("messages") or []
    parts = [f"Request: {_clip(task_text(t.request))}"]
    if msgs and msgs[-1].get("role") == "tool":
        parts.append(f"Tool result: {_clip(str(msgs[-1].get('content')))}")
    answer = _call_text(t.final) if t.final.get("tool_calls") else str(t.final.get("content") or "")
    parts.append(f"Answer: {_clip(answer)}")
    return "\n".join(parts)


def examples_message(examples: Sequence[Trace] | Sequence[str]) -> dict[str, Any]:
    texts = [e if isinstance(e, str) else example_text(e) for e in examples]
    return {"role": "system", "content": HEADER + "\n\n" + "\n\n".join(texts)}


def with_examples(request: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """The request with the examples message after its leading system messages (a copy)."""
    msgs = list(request.get("messages") or [])
    i = 0
    while i < len(msgs) and msgs[i].get("role") in ("system", "developer"):
        i += 1
    return {**request, "messages": [*msgs[:i], message, *msgs[i:]]}
