"""Guards: trust labels, provenance, tool policies and an injection detector.

``Guard.review(messages, tool_calls)`` labels everything the model read, scans untrusted text for
injected instructions, and decides each proposed tool call (allow / deny / confirm) with a reason.
The gateway applies it before a tool call reaches the client; the AgentDojo harness applies it inside
the agent loop. See ``policy.py`` for the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .injection import Finding, InjectionDetector
from .policy import Action, Capability, Decision, PolicyEngine, Role, ToolSpec, call_token, decode_args
from .quarantine import datamark, quarantined_extract
from .trust import Context, Evidence, Label, Segment, provenance

__all__ = ["Action", "Capability", "Context", "Decision", "Evidence", "Finding", "Guard", "InjectionDetector", "Label",
           "PolicyEngine", "Review", "Role", "Segment", "ToolSpec", "call_token", "datamark", "decode_args", "provenance",
           "quarantined_extract"]


@dataclass
class Review:
    decisions: list[Decision]
    flagged: list[tuple[str, Finding]] = field(default_factory=list)  # (segment source, finding)
    label: Label = Label.TRUSTED  # what the model's output inherits

    @property
    def blocked(self) -> list[Decision]:
        return [d for d in self.decisions if not d.allowed]

    @property
    def risk(self) -> str:
        if self.flagged:
            return "high"
        return "elevated" if self.label <= Label.UNTRUSTED else "low"


class Guard:
    """Policy + detector, applied to one step's messages and the tool calls a model proposed."""

    def __init__(self, policy: PolicyEngine | None = None, detector: InjectionDetector | None = None,
                 use_detector: bool = True) -> None:
        self.policy = policy or PolicyEngine()
        self.detector = (detector or InjectionDetector()) if use_detector else None

    def context(self, messages: list[dict[str, Any]]) -> tuple[Context, list[tuple[str, Finding]]]:
        """Labelled segments of ``messages`` and the detector's findings for the flagged ones."""
        ctx = self.policy.context(messages, detector=self.detector)
        flagged = [(s.source, self.detector.scan(s.text)) for s in ctx.segments
                   if s.label == Label.SUSPICIOUS] if self.detector is not None else []
        return ctx, flagged

    def review(self, messages: list[dict[str, Any]], tool_calls: list[dict[str, Any]],
               tools: list[dict[str, Any]] | None = None, approved: set[str] = frozenset(),  # type: ignore[assignment]
               context: tuple[Context, list[tuple[str, Finding]]] | None = None) -> Review:
        """Decide every call in ``tool_calls`` (OpenAI shape: {"function": {"name", "arguments"}})."""
        ctx, flagged = context if context is not None else self.context(messages)
        decisions: list[Decision] = []
        for tc in tool_calls:
            fn = (tc or {}).get("function") or {}
            name = str(fn.get("name") or "")
            args = decode_args(fn.get("arguments"))
            if not name:
                decisions.append(Decision(Action.DENY, "?", "a tool call without a function name", "malformed"))
                continue
            d = self.policy.decide(name, args, ctx)
            if not d.allowed and call_token(name, args) in approved:
                d = Decision(Action.ALLOW, name, f"approved by the user after: {d.reason}", "approved", d.argument, d.evidence)
            decisions.append(d)
        return Review(decisions, flagged, ctx.lowest)
