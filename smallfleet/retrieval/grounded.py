"""Grounded steps: evidence from the knowledge base with numbered citations, and a check that the
answer relies only on it.

A step is grounded when the request names a knowledge base (header ``x-smallfleet-kb``, or
``metadata.smallfleet_kb``) or its kind is listed in ``[grounding] kinds``. The last user message is
the query; the top chunks go into a system message as ``[1] … [k]``. When even the best chunk is a
weak match (cosine below ``min_relevance``), the model is told it may answer "not in the sources" and
the step starts one tier up. The ``evidence_grounded`` check then requires every number, name and
quoted span of the answer to appear in the evidence or the question (the same normalisation as the
verification machinery); an unsupported claim fails the check, so the cascade retries one tier up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..models.base import ChatResult
from ..spec import KindPolicy
from ..step import Step, message_text
from ..verdict import Verdict
from ..verify.grounding import Context
from ..verify.grounding import normalize as _norm
from .store import Hit

NOT_IN_SOURCES = "not in the sources"
_CITE = re.compile(r"\[(\d{1,2})\]")
_QUOTE = re.compile(r"[\"“]([^\"”]{4,200})[\"”]")
# a name: two or more capitalised words, or one word with an inner capital/digit/dot/underscore (ids, functions)
_NAME = re.compile(r"\b(?:[A-Z][\w'-]+(?:\s+(?:of|de|van|von|la|the|and|&)?\s*[A-Z][\w'-]+)+)|\b[\w]+(?:[._][\w]+)+\b"
                   r"|\b[a-z]+[A-Z]\w*\b")  # …and camelCase identifiers (reserveHotelRoom)
_WORD_NAME = re.compile(r"\b(?:[A-Z][a-z]{2,}|[A-Z]{2,}[a-z]*)\b")
_COMMON = {"i", "the", "a", "an", "it", "this", "that", "yes", "no", "ok", "however", "also", "note", "source", "sources",
           "true", "false", "none", "null"}  # code literals are not names
_NUMBER = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?=[A-Za-z%°]*\b|[^\w]|$)")
_ABSTAIN = re.compile(r"not (?:found )?in the (?:sources|evidence|documents)|sources do not (?:say|contain|mention)|"
                      r"(?:can(?:no|')t|unable to) (?:find|answer) (?:this |that )?(?:from|in) the (?:sources|evidence)", re.I)


@dataclass
class Evidence:
    index: str
    hits: list[Hit]
    relevance: list[float]          # cosine of each chunk to the question
    weak: bool
    cited: list[int] = field(default_factory=list)  # citation numbers the answer used

    @property
    def best(self) -> float:
        return max(self.relevance, default=0.0)

    def citations(self) -> list[dict[str, Any]]:
        return [{"n": i + 1, "id": h.id, "source": h.source, "score": round(h.score, 6), "relevance": round(r, 4),
                 "cited": (i + 1) in self.cited} for i, (h, r) in enumerate(zip(self.hits, self.relevance))]

    def header(self) -> str:
        used = [c for c in self.citations() if c["cited"]]
        return "; ".join(f"[{c['n']}] {c['source']}#{c['id']}" for c in used) or "none cited"


def render_chunk(i: int, h: Hit) -> str:
    """One evidence chunk exactly as the model sees it (the check judges against the same text)."""
    return f"[{i + 1}] ({h.source.rsplit('/', 1)[-1]}{' — ' + h.heading if h.heading else ''})\n{h.text.strip()}"


def evidence_message(ev: Evidence) -> dict[str, Any]:
    parts = [render_chunk(i, h) for i, h in enumerate(ev.hits)]
    rule = ("Answer from the numbered sources below only, and cite them like [1]. Every number, name and quote in "
            f"your answer must come from them or from the question. If they do not contain the answer, reply: {NOT_IN_SOURCES}.")
    if ev.weak:
        rule += " The sources found are weak matches for this question; say so rather than guess."
    return {"role": "system", "content": rule + "\n\n" + "\n\n".join(parts)}


def with_evidence(request: dict[str, Any], ev: Evidence) -> dict[str, Any]:
    """The request with the evidence as a system message just before the last user message."""
    msgs = list(request["messages"])
    last_user = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=len(msgs))
    return {**request, "messages": [*msgs[:last_user], evidence_message(ev), *msgs[last_user:]]}


def question_of(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return message_text(m)
    return ""


def claims(answer: str) -> list[tuple[str, str]]:
    """(kind, text) of every checkable claim in an answer: numbers, names, quoted spans (citations excluded)."""
    text = _CITE.sub(" ", answer)
    out: list[tuple[str, str]] = [("quote", q.strip()) for q in _QUOTE.findall(text)]
    spans = []
    for m in _NAME.finditer(text):
        name = m.group(0).strip()
        if not re.fullmatch(r"[\d.,]+", name):
            out.append(("name", name))
            spans.append((m.start(), m.end()))
    for m in _WORD_NAME.finditer(text):  # a lone capitalised word mid-sentence ("won by Germany") is a name too
        before = text[:m.start()].rstrip()
        sentence_start = not before or before[-1] in ".!?:\n" or before.endswith("]")
        if not sentence_start and not any(a <= m.start() < b for a, b in spans) and m.group(0).casefold() not in _COMMON:
            out.append(("name", m.group(0)))
    out += [("number", m.group(1)) for m in _NUMBER.finditer(text)]
    return out


def unsupported(answer: str, evidence_texts: list[str], question: str) -> list[str]:
    """Claims of ``answer`` that neither the evidence nor the question supports."""
    answer = _ABSTAIN.sub(" ", answer)  # "not in the sources" claims nothing; whatever else the answer says is checked
    ctx = Context([*evidence_texts, question])
    raw = "\n".join([*evidence_texts, question])
    bad: list[str] = []
    for kind, c in claims(answer):
        if kind == "number":
            v = float(c.replace(",", ""))
            written = re.search(rf"(?<![\d.]){re.escape(c)}(?![\d])", raw)
            if not written and not ctx.number_grounded(v):
                bad.append(f"number {c}")
        elif kind == "quote":
            if _norm(c) not in ctx.text:  # a quote claims the exact words
                bad.append(f"quote {c[:60]!r}")
        elif ctx.string_grounded(c) is False:
            bad.append(f"name {c!r}")
    return list(dict.fromkeys(bad))


def check_evidence_grounded(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    ev: Evidence | None = getattr(step, "evidence", None)
    if ev is None:
        return None
    answer = result.message.get("content") or ""
    ev.cited = sorted({int(n) for n in _CITE.findall(answer) if 1 <= int(n) <= len(ev.hits)})
    if not _CITE.sub(" ", answer).strip(" .,;:\n\t"):
        return Verdict("evidence_grounded", False, "the answer is only citation marks: it names nothing")
    bad = unsupported(answer, [render_chunk(i, h) for i, h in enumerate(ev.hits)], question_of(step.messages))
    if bad:
        return Verdict("evidence_grounded", False, "not in the evidence: " + ", ".join(bad[:5]))
    return Verdict("evidence_grounded", True)

