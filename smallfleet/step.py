"""The step: one chat request plus what kind of agent step it is.

The kind is derived from the request's *structure* first; wording is only consulted for the last two
buckets. Rules, first match wins:

1. an explicit override (header ``x-smallfleet-step-kind`` or ``metadata.smallfleet_step_kind``);
2. ``tools`` offered and the last message is a tool result → ``reshaping`` (turn the result into an
   answer; a follow-up tool call is still allowed and checked);
3. ``tools`` offered (``tool_choice`` not ``none``) → ``tool_choice``;
4. ``response_format`` with a JSON schema that is a closed label set (an ``enum``/``const`` at the
   root, or an object whose properties are all enums/booleans) → ``classification``;
5. any other JSON schema or ``json_object`` → ``extraction``;
6. last message is a tool result, or the last user message is mostly a data payload (JSON, a fenced
   block, a table) → ``reshaping``;
7. the last user message names a closed answer set ("answer with one of: a, b, c") → ``classification``;
8. the last user message is a problem (several numbers and a question, or plan/step-by-step wording)
   → ``reasoning``;
9. otherwise → ``generation``.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidRequestError

if TYPE_CHECKING:  # types only: the step is a leaf every stage imports
    from .guards.injection import Finding
    from .guards.trust import Context
    from .retrieval.grounded import Evidence


class StepKind(str, Enum):
    """What an agent step does; routing policies are per kind."""

    TOOL_CHOICE = "tool_choice"
    EXTRACTION = "extraction"
    CLASSIFICATION = "classification"
    RESHAPING = "reshaping"
    REASONING = "reasoning"
    GENERATION = "generation"


_LABEL_SET = re.compile(r"\b(?:one of|choose from|pick one of|label(?:s)?:|categor(?:y|ies):|answer (?:with|only with))\b[^\n]{0,200}[,|/]", re.I)
# the labels themselves, after the cue: up to the end of the line or sentence
_LABELS_AFTER = re.compile(r"\b(?:answer (?:only )?with(?: one of)?|choose from|pick one of|one of|labels?|categor(?:y|ies))"
                           r"(?!\s+(?:these|those|the|them|us|you|my|our|your|their|its|his|her)\b)\s*[:\-]?\s*"
                           r"(?:the (?:following|labels?|categories)\s*[:\-]?\s*)?([^\n]{1,300})", re.I)
_QUOTED = re.compile(r"[\"'`\u201c\u2018]([^\"'`\u201d\u2019\n]{1,40})[\"'`\u201d\u2019]")
_LABEL_SPLIT = re.compile(r"\s*(?:,|\||/|;|\bor\b)\s*", re.I)
_PLAN = re.compile(r"\b(step[- ]by[- ]step|plan|how many|how much|calculate|compute|prove|derive|figure out|what is the total)\b", re.I)
_SCAN = 64_000  # characters of the last user message the wording rules read
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?")


def last_user_index(messages: Sequence[dict[str, Any]]) -> int:
    """Index of the latest user message (len(messages) when there is none)."""
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], dict) and messages[i].get("role") == "user":
            return i
    return len(messages)


def message_text(msg: dict[str, Any]) -> str:
    """Plain text of a message's content (string or list of text parts)."""
    c = msg.get("content")
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        return "\n".join(p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _schema_of(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_schema":
        js = response_format.get("json_schema") or {}
        schema = js.get("schema") if isinstance(js, dict) else None
        return schema if isinstance(schema, dict) else None
    return None


def is_label_schema(schema: dict[str, Any]) -> bool:
    """A closed label set: enum/const at the root, or an object of enum/boolean properties only."""
    if "enum" in schema or "const" in schema:
        return True
    props = schema.get("properties")
    if schema.get("type") == "object" and isinstance(props, dict) and props:
        return all(isinstance(p, dict) and ("enum" in p or "const" in p or p.get("type") == "boolean") for p in props.values())
    return False


def _mostly_payload(text: str) -> bool:
    t = text.strip()
    if not t:
        return False
    if "```" in t:
        inside = sum(len(b) for b in t.split("```")[1::2])
        return inside >= 0.5 * len(t)
    brace = max(t.find("{"), t.find("["))
    if brace >= 0:
        tail = t[brace:]
        return len(tail) >= 0.6 * len(t) and tail.rstrip()[-1:] in "}]"
    lines = t.splitlines()
    return len(lines) >= 3 and sum(1 for ln in lines if ln.count("|") >= 2 or ln.count(",") >= 2 or ln.count("\t") >= 1) >= 0.6 * len(lines)


def classify_step(request: dict[str, Any], override: str | None = None) -> StepKind:
    """Decide the step kind of an OpenAI chat-completions request (rules in the module doc)."""
    meta = request.get("metadata")
    override = override or (meta.get("smallfleet_step_kind") if isinstance(meta, dict) else None)
    if override:
        try:
            return StepKind(override)
        except ValueError:
            raise InvalidRequestError(
                f"unknown step kind {override!r}.", param="x-smallfleet-step-kind",
                hint=f"use one of: {', '.join(k.value for k in StepKind)}",
            ) from None
    messages = request.get("messages") or []
    last = messages[-1] if messages else {}
    last_role = last.get("role") if isinstance(last, dict) else None
    tools = request.get("tools")
    if tools and request.get("tool_choice") != "none":
        return StepKind.RESHAPING if last_role == "tool" else StepKind.TOOL_CHOICE
    rf = request.get("response_format")
    schema = _schema_of(rf)
    if schema is not None:
        return StepKind.CLASSIFICATION if is_label_schema(schema) else StepKind.EXTRACTION
    if isinstance(rf, dict) and rf.get("type") == "json_object":
        return StepKind.EXTRACTION
    if last_role == "tool":
        return StepKind.RESHAPING
    user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    text = message_text(user) if user else ""
    if len(text) > _SCAN:  # the wording rules read the two ends of a huge message (a full scan stalls the gateway)
        text = text[: _SCAN // 2] + "\n" + text[-_SCAN // 2:]
    if _mostly_payload(text):
        return StepKind.RESHAPING
    if _LABEL_SET.search(text):
        return StepKind.CLASSIFICATION
    if (len(_NUMBER.findall(text)) >= 2 and "?" in text) or _PLAN.search(text):
        return StepKind.REASONING
    return StepKind.GENERATION



def label_set(text: str) -> tuple[str, ...]:
    """The closed answer set a prompt names ("answer with one of: billing, shipping or returns"), as
    written; empty when it names none that reads as a list of 2-30 short labels."""
    for m in _LABELS_AFTER.finditer(text[:_SCAN]):
        tail = re.split(r"(?<=[^\s.])\.(?:\s|$)|\s[-\u2014]\s|\. (?=[A-Z])", m.group(1), maxsplit=1)[0]
        quoted = _QUOTED.findall(tail)
        parts = quoted if len(quoted) >= 2 else [p.strip(" \t\"'`*()[]{}<>.?!").strip() for p in _LABEL_SPLIT.split(tail)]
        labels = tuple(dict.fromkeys(p for p in parts if p))
        if 2 <= len(labels) <= 30 and all(len(x) <= 40 and len(x.split()) <= 4 for x in labels):
            return labels
    return ()


def wants_json(request: dict[str, Any]) -> bool:
    """The request asks for a JSON answer (``response_format`` json_object or json_schema)."""
    rf = request.get("response_format")
    return isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")

@dataclass
class Step:
    """One agent step: the (validated) request and its metadata."""

    request: dict[str, Any]
    kind: StepKind
    step_id: str = field(default_factory=lambda: "step_" + uuid.uuid4().hex[:16])
    run_id: str | None = None
    session_id: str | None = None
    budget_usd: float | None = None
    notes: list[str] = field(default_factory=list)  # routing remarks that end up in the reason
    guard_mode: str | None = None  # per-request override of guards.mode (header x-smallfleet-guard)
    approved: frozenset[str] = frozenset()  # call tokens the user approved (header x-smallfleet-approve)
    datamark: bool | None = None  # per-request override of guards.datamark (header x-smallfleet-datamark)
    guard_ctx: tuple[Context, list[tuple[str, Finding]]] | None = None  # labelled context + detector findings, once per step
    kb: str | None = None  # knowledge base to ground this step in: its name ("default" = [grounding] index)
    kb_path: Path | None = None  # its file, resolved from the name by the engine; never from a request
    kb_where: dict[str, str] | None = None  # only documents with this metadata (x-smallfleet-kb-where)
    evidence: Evidence | None = None  # once retrieved
    reserved: float = 0.0  # budget reserved by this step's attempts, released when the step is written
    prompt_floor: int = -1  # a lower bound on the prompt's tokens, from its size (-1: not measured yet)
    # reasoning cross-checks, one per attempt: (answering model, its number, program writer, program's number
    # or None when it failed, code); the cross-checked figure is looked for here when no tier verified
    crosschecks: list[tuple[str, float, str, float | None, str]] = field(default_factory=list)
    capture: bool | None = None  # False: the client opted this step out of capture (x-smallfleet-capture: off)
    examples: tuple[str, dict[str, Any]] | None = None  # (tier, worked-examples message) from a learned route
    start_model: tuple[str, str] | None = None  # (tier, fleet model) a learned route starts on instead of the tier's own
    account: str | None = None  # the API key's ledger row: its budget and spend (None: a keyless gateway)
    account_reserved: float = 0.0  # what this step holds against that key's budget
    allowed: frozenset[str] | None = None  # fleet model or tier names the key may use (None: all)
    traceparent: str | None = None  # the client's W3C trace context: the step's span is its child
    started: float = field(default_factory=time.time)

    @property
    def privacy_key(self) -> str:
        """Whose vault: the session, else the agent run, else this step alone."""
        return self.session_id or self.run_id or self.step_id

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.request["messages"]
        return messages

    @property
    def tools(self) -> list[dict[str, Any]]:
        return self.request.get("tools") or []

    @property
    def schema(self) -> dict[str, Any] | None:
        return _schema_of(self.request.get("response_format"))

    def wants_json(self) -> bool:
        return wants_json(self.request)
