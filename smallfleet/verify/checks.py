"""Verifiers as cascade checks: grounding of tool arguments and extracted fields, and the process
verifier (plus a full arithmetic check) on reasoning answers. Registered in :mod:`smallfleet.checks`."""

from __future__ import annotations

import math
import re
import threading
from typing import Any

import orjson

from ..jsontext import json_value_spans, parse_json_answer
from ..models.base import ChatResult
from ..spec import KindPolicy
from ..step import Step, message_text
from ..verdict import Verdict
from .arith import equations
from .grounding import Context, ungrounded

_lock = threading.Lock()
_verifier: Any = None


def verifier() -> Any:
    """The shipped process verifier, loaded on first use."""
    global _verifier
    if _verifier is None:
        with _lock:
            if _verifier is None:
                from .process import ProcessVerifier

                _verifier = ProcessVerifier.load()
    return _verifier


def check_args_grounded(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    if not result.tool_calls:
        return None
    ctx = Context.from_messages(step.messages)
    params = {t["function"]["name"]: t["function"].get("parameters") or {} for t in step.tools}
    bad: list[str] = []
    for c in result.tool_calls:
        fn = c.get("function") or {}
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            continue  # tool_call_valid reports it
        bad += [f"{fn.get('name')}.{p}" for p in ungrounded(args, ctx, params.get(fn.get("name"), {}))]
    if bad:
        return Verdict("args_grounded", False, "appears nowhere in the conversation: " + "; ".join(bad[:4]))
    return Verdict("args_grounded", True)


_ANSWER_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\d])")


def check_answer_grounded(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    """An answer in words inside an agent loop states no number that the conversation (the user's words,
    the tool results) does not hold or simply derive. Measured on the local models: the 135M answered
    "what time is it in Madrid?" with "2:15 PM" without calling the time tool; a number is where an
    invented fact shows, and (unlike names, units and month words) it is cheap to check exactly."""
    if result.tool_calls or step.wants_json() or not result.content.strip():
        return None
    if not step.tools and not any(m.get("role") == "tool" for m in step.messages):
        return None
    ctx = Context.from_messages(step.messages)
    raw = "\n".join(message_text(m) for m in step.messages)
    bad = []
    for m in _ANSWER_NUMBER.finditer(result.content):
        text = m.group(0)
        v = float(text.replace(",", ""))
        if re.search(rf"(?<![\d.]){re.escape(text)}(?![\d])", raw) or ctx.number_grounded(v):
            continue
        bad.append(text)
    if bad:
        return Verdict("answer_grounded", False, "states numbers that no message or tool result holds: " + ", ".join(bad[:5]))
    return Verdict("answer_grounded", True)


def check_extraction_grounded(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    if not step.wants_json() or result.tool_calls:
        return None
    try:
        value = parse_json_answer(result.content)
    except orjson.JSONDecodeError:
        return None  # schema_valid reports it
    bad = ungrounded(value, Context.from_messages(step.messages), step.schema)
    if bad:
        return Verdict("extraction_grounded", False, "not found in the source: " + "; ".join(bad[:4]))
    return Verdict("extraction_grounded", True)


def _label_props(schema: dict[str, Any] | None) -> dict[str, list[str]]:
    props = (schema or {}).get("properties") or {}
    return {k: [str(x) for x in v["enum"]] for k, v in props.items() if isinstance(v, dict) and isinstance(v.get("enum"), list)}


def label_margins(step: Step, result: ChatResult) -> dict[str, float]:
    """For each enum field: p(chosen label) minus p(best other label), from the alternatives at the
    token where the label starts, renormalised over the allowed labels that appear there."""
    toks, tops = result.token_texts, result.top_logprobs
    labels = _label_props(step.schema)
    if not toks or not tops or not labels:
        return {}
    text = "".join(toks)
    starts, pos = [], 0
    for t in toks:
        starts.append(pos)
        pos += len(t)
    out: dict[str, float] = {}
    for a, b, key in json_value_spans(text):
        if key not in labels or a >= len(text):
            continue
        i = max(j for j, s0 in enumerate(starts) if s0 <= a)
        chosen = text[a:b]
        mass: dict[str, float] = {}
        for alt, lp in tops[i].items():
            frag = (text[starts[i]:a] + "").strip()
            piece = alt[len(frag):] if alt.startswith(frag) else alt.lstrip(' "')
            for lab in labels[key]:
                if piece and lab.startswith(piece):
                    mass[lab] = mass.get(lab, 0.0) + math.exp(lp)
                    break
        total = sum(mass.values())
        if total <= 0 or chosen not in labels[key]:
            continue
        ranked = sorted(((v / total, k) for k, v in mass.items()), reverse=True)
        p_chosen = mass.get(chosen, 0.0) / total
        p_other = max((p for p, k in ranked if k != chosen), default=0.0)
        out[key] = p_chosen - p_other
    return out


def check_label_margin(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    """Classification: a decision between two labels that were nearly as likely is flagged."""
    margins = label_margins(step, result)
    if not margins:
        return None
    key, m = min(margins.items(), key=lambda kv: kv[1])
    ok = m >= LABEL_MARGIN
    return Verdict("label_margin", ok, "" if ok else f"{key}: margin {m:.2f} over the next label < {LABEL_MARGIN}", m)


LABEL_MARGIN = 0.2
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\\])")


def split_steps(text: str) -> list[str]:
    """A free-text answer as reasoning steps: its lines, or its sentences when it is one paragraph."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) >= 2:
        return lines
    return [s.strip() for s in _SENT.split(text) if s.strip()]


def process_inputs(step: Step, result: ChatResult) -> tuple[str, list[str]] | None:
    """(problem, steps) of a free-text answer of two or more steps, else None (not a reasoning trace)."""
    if result.tool_calls or step.wants_json() or not result.content.strip():
        return None
    steps = split_steps(result.content)
    if len(steps) < 2:
        return None
    return next((message_text(m) for m in reversed(step.messages) if m.get("role") == "user"), ""), steps


def check_process(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    inputs = process_inputs(step, result)
    if inputs is None:
        return None
    problem, steps = inputs
    for i, s in enumerate(steps):  # full check first: a wrong computation is a certain error
        for eq in equations(s):
            if eq.ok is False:
                return Verdict("process", False, f"step {i + 1}: {eq.expr} = {eq.claimed:g} is wrong ({eq.actual:g})", 1.0)
    v = verifier()
    res = v.verify(problem, steps)
    if res.first_error_step >= 0:
        return Verdict("process", False, f"step {res.first_error_step + 1} looks wrong (p={res.p_flawed:.2f})", res.p_flawed)
    if res.p_wrong is not None and res.p_wrong > v.outcome.threshold:
        return Verdict("process", False, f"the final answer is more likely wrong than right (p_wrong={res.p_wrong:.2f})",
                       res.p_wrong)
    return Verdict("process", True, "", res.p_flawed)


def check_evidence_grounded(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    """Grounded steps only: every number, name and quote of the answer is in the evidence or the question."""
    if getattr(step, "evidence", None) is None:
        return None
    from ..retrieval.grounded import check_evidence_grounded as check  # the retrieval stack loads only when used

    return check(step, result, policy)
