"""Trust labels and provenance: where in the conversation does a value come from?

Every piece of content a step reads becomes a ``Segment`` with a label:

- ``TRUSTED``   system/developer/user messages, and results of tools declared trusted;
- ``RECORD``    short structured fields of a tool result (ids, addresses, names, amounts): data a
                system of record returned, which an outsider controls at most for their own record;
- ``UNTRUSTED`` free text inside tool results (mail bodies, documents, web pages, messages):
                anyone can author it, so it may carry instructions;
- ``SUSPICIOUS`` untrusted free text the injection detector flagged.

Why split tool results: legitimate agent work takes ids, addresses and amounts from tool output all
the time, so "came from a tool" is too coarse; injected instructions live in authored free text, and
the policy only has to stop *that* from choosing where data, money or access goes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import orjson

from ..step import message_text
from ..textcache import text_cached

try:  # tool output is often YAML (AgentDojo, many Python agent loops); JSON is tried first
    import yaml as _yaml

    _YAML_LOADER = getattr(_yaml, "CSafeLoader", _yaml.SafeLoader)
except ImportError:  # pragma: no cover - pyyaml is a dependency
    _yaml = None


class Label(IntEnum):
    SUSPICIOUS = 0
    UNTRUSTED = 1
    RECORD = 2
    TRUSTED = 3


_FREE_KEYS = {"body", "content", "text", "description", "message", "messages", "snippet", "summary", "note", "notes",
              "review", "reviews", "comment", "comments", "html", "page", "markdown", "subject", "title", "bio", "about"}
_MAX_RECORD_WORDS = 6
MAX_TOOL_CHARS = 200_000  # longer tool output is cut for analysis (the model never sees more either)
# Untrusted structured text is parsed under hard bounds: YAML aliases are refused outright (an alias
# bomb of 600 bytes expands to billions of nodes), and any tool result with more nodes or deeper
# nesting than this is read as plain text instead.
MAX_YAML_CHARS = 64_000
MAX_NODES = 20_000
MAX_DEPTH = 32

# invisible characters attackers use to split words or hide text; removed before any comparison
_INVISIBLE = dict.fromkeys([0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD, 0x180E, 0x2061, 0x2062, 0x2063, 0x2064])


def clean(s: str) -> str:
    """NFKC + invisible characters removed: what a reader would see."""
    return unicodedata.normalize("NFKC", s).translate(_INVISIBLE)


def has_tricks(s: str) -> str | None:
    """Why a value looks deceptive (invisible characters, mixed scripts in one word), or None."""
    if any(ord(c) in _INVISIBLE for c in s):
        return "contains invisible characters"
    for word in re.findall(r"[^\s@./:_-]+", unicodedata.normalize("NFKC", s)):
        scripts = {_script(c) for c in word if c.isalpha()}
        scripts.discard("COMMON")
        if len(scripts) > 1:
            return f"mixes {' and '.join(sorted(scripts))} letters in {word!r} (look-alike characters)"
    return None


def _script(c: str) -> str:
    try:
        name = unicodedata.name(c)
    except ValueError:
        return "COMMON"
    return name.split(" ", 1)[0] if name.split(" ", 1)[0] in ("LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE") else "COMMON"


_SPACE = re.compile(r"\s+")


def norm(s: str) -> str:
    """Comparison form: cleaned, case-folded, whitespace collapsed, URL scheme dropped."""
    s = re.sub(r"\.(?=[A-Z][a-z])", ". ", clean(s))  # "example.com.They said": a sentence ends, the address does not go on
    s = _SPACE.sub(" ", s.casefold()).strip()
    return re.sub(r"\bhttps?://", "", s)


@dataclass(frozen=True)
class Segment:
    text: str            # original text
    label: Label
    source: str          # e.g. "user#0", "tool:get_webpage#3 .content"
    tool: str | None = None
    confidential: bool = False
    normed: str = field(default="", compare=False)
    field_value: bool = False  # one whole field of a structured result (a record reference if matched whole)

    def mentions(self, value: str) -> bool:
        return _mentions(self.normed, value)


def _mentions(hay: str, v: str) -> bool:
    """Is normalised value ``v`` written in ``hay`` as a whole token (not inside a longer word/number)?"""
    if not v:
        return False
    start = 0
    while True:
        i = hay.find(v, start)
        if i < 0:
            return False
        before = hay[i - 1] if i else " "
        j = i + len(v)
        after = hay[j] if j < len(hay) else " "
        # a URL or address continues with "/" or "." + letters: "example.com" must not match "example.com.evil"
        if (not (before.isalnum() or (v[0].isalnum() and before in "_")) and not (after.isalnum() or after == "_")
                and not (after == "." and j + 1 < len(hay) and hay[j + 1].isalnum())):
            return True
        start = i + 1


class _KeyName(str):
    """A mapping key, read as a value of its own (it can carry text too)."""


def _leaves(obj: Any) -> list[tuple[str, str, Any]]:
    """(path, last key, value) for every scalar in a parsed tool result, in document order.

    Iterative: a parsed result is bounded (:func:`_bounded`), but never walked on the call stack."""
    out: list[tuple[str, str, Any]] = []
    stack: list[tuple[Any, str]] = [(obj, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            # keys after values, as before: values first in document order, then the key names
            stack.extend((_KeyName(str(k)), f"{path}.{k}#key") for k in reversed(list(node)) if isinstance(k, str) and len(k) > 3)
            stack.extend((v, f"{path}.{k}") for k, v in reversed(list(node.items())))
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(node))))
        elif isinstance(node, _KeyName):
            out.append((path, "", str(node)))
        else:
            key = path.rsplit(".", 1)[-1].split("[", 1)[0] if path else ""
            out.append((path, key, node))
    return out


def _bounded(obj: Any) -> bool:
    """At most MAX_NODES containers and scalars, nested at most MAX_DEPTH deep."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    n = 0
    while stack:
        node, d = stack.pop()
        n += 1
        if n > MAX_NODES or d > MAX_DEPTH:
            return False
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return True


def _yaml_safe(text: str) -> bool:
    """The YAML event stream has no anchors or aliases and stays within the node and depth bounds.

    Events are read one at a time from libyaml's parser, which never expands anything, so this costs
    time linear in the text; only then is the text composed into Python objects."""
    assert _yaml is not None
    n = depth = 0
    try:
        for ev in _yaml.parse(text, Loader=_YAML_LOADER):
            n += 1
            if n > 2 * MAX_NODES or isinstance(ev, _yaml.AliasEvent) or getattr(ev, "anchor", None):
                return False
            if isinstance(ev, (_yaml.MappingStartEvent, _yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    return False
            elif isinstance(ev, (_yaml.MappingEndEvent, _yaml.SequenceEndEvent)):
                depth -= 1
    except Exception:
        return False
    return True


def parse_tool_output(text: str) -> Any | None:
    """Structured form of a tool result (JSON or YAML mapping/list), else None for plain text.

    Cached by text: an agent re-sends the same tool results every turn. Callers must not mutate the result.
    """
    return _parse_cached(text)


@text_cached(max_entries=1024, max_bytes=64 << 20, weight=10)  # parsed objects: ~10 bytes per character of JSON
def _parse_cached(text: str) -> Any | None:
    t = text.strip()
    if not t:
        return None
    if t[0] in "[{":
        try:
            obj = orjson.loads(t)
        except orjson.JSONDecodeError:
            pass
        else:
            return obj if _bounded(obj) else None
    if _yaml is not None and ("\n" in t or ": " in t) and len(t) <= MAX_YAML_CHARS and _yaml_safe(t):
        try:
            obj = _yaml.load(t, Loader=_YAML_LOADER)  # libyaml's C loader: the pure-Python one costs ~15 ms per 5 kB
        except Exception:
            return None
        if isinstance(obj, (dict, list)) and _bounded(obj):
            return obj
    return None


def is_free_text(key: str, value: str) -> bool:
    return key.casefold() in _FREE_KEYS or "\n" in value.strip() or len(value.split()) > _MAX_RECORD_WORDS


Detector = Callable[[str], bool]


def tool_segments(text: str, source: str, tool: str | None, *, trusted: bool = False, confidential: bool = False,
                  detector: Detector | None = None) -> list[Segment]:
    """Split one tool result into labelled segments (structured fields vs free text); cached, since an
    agent re-sends its tool results every turn (``detector`` must be a stable object, e.g. an InjectionDetector)."""
    return list(_tool_segments(text, source, tool, trusted, confidential, detector))


@text_cached(max_entries=2048, max_bytes=64 << 20, weight=20)  # labelled segments: ~20 bytes per character
def _tool_segments(text: str, source: str, tool: str | None, trusted: bool, confidential: bool,
                   detector: Detector | None) -> tuple[Segment, ...]:
    return tuple(_split_tool_output(text, source, tool, trusted=trusted, confidential=confidential, detector=detector))


def _split_tool_output(text: str, source: str, tool: str | None, *, trusted: bool, confidential: bool,
                       detector: Detector | None) -> list[Segment]:
    text = text[:MAX_TOOL_CHARS]
    if trusted:
        return [Segment(text, Label.TRUSTED, source, tool, confidential, norm(text))]
    obj = parse_tool_output(text)
    if obj is None:
        leaves = [("", "", text)]
    else:
        leaves = _leaves(obj)
    out: list[Segment] = []
    for path, key, value in leaves:
        if value is None or isinstance(value, bool):
            continue
        s = str(value)
        if not s.strip():
            continue
        # a bare value ("DE89…", "1000.0") returned as plain text is a record; any sentence is authored text
        free = is_free_text(key, s) if obj is not None else len(s.split()) > 2 or "\n" in s.strip()
        label = Label.UNTRUSTED if free else Label.RECORD
        if label == Label.UNTRUSTED and detector is not None and detector(s):
            label = Label.SUSPICIOUS
        out.append(Segment(s, label, f"{source} {path}".rstrip(), tool, confidential, norm(s), field_value=obj is not None))
    return out


@dataclass
class Context:
    """All labelled segments of a conversation, plus the trusted request text (for intent)."""
    segments: list[Segment]
    request: str = ""  # the user's own words (all user messages), used for intent grants

    def trusted_text(self) -> str:
        return "\n".join(s.text for s in self.segments if s.label == Label.TRUSTED)

    @property
    def flagged(self) -> list[Segment]:
        return [s for s in self.segments if s.label == Label.SUSPICIOUS]

    @property
    def lowest(self) -> Label:
        """The label a model output inherits: the least trusted thing it read."""
        return min((s.label for s in self.segments), default=Label.TRUSTED)

    @classmethod
    def from_messages(cls, messages: list[dict[str, Any]], *, trusted_tools: set[str] = frozenset(),  # type: ignore[assignment]
                      confidential_tools: set[str] = frozenset(), detector: Detector | None = None) -> Context:  # type: ignore[assignment]
        """Label an OpenAI-style message list: tool messages are untrusted unless their tool is declared trusted."""
        names: dict[str, str] = {}  # tool_call_id -> function name, to know which tool produced a result
        segs: list[Segment] = []
        request: list[str] = []
        for i, m in enumerate(messages):
            role = m.get("role")
            if role == "assistant":
                for tc in m.get("tool_calls") or []:
                    if isinstance(tc, dict):
                        names[str(tc.get("id"))] = str((tc.get("function") or {}).get("name", ""))
                continue  # model text is derived, never a source of its own
            text = message_text(m)
            if role == "tool":
                tool = m.get("name") or names.get(str(m.get("tool_call_id")), "")
                segs += tool_segments(text, f"tool:{tool or '?'}#{i}", tool or None, trusted=tool in trusted_tools,
                                      confidential=tool in confidential_tools, detector=detector)
            elif role in ("system", "developer", "user"):
                segs.append(Segment(text, Label.TRUSTED, f"{role}#{i}", normed=norm(text)))
                if role == "user":
                    request.append(text)
        return cls(segs, "\n".join(request))


@dataclass(frozen=True)
class Evidence:
    """Where a value was found: its best label, and every source that mentions it."""
    value: str
    label: Label | None            # None: the value appears nowhere (invented by the model)
    sources: tuple[str, ...] = ()
    suspicious: tuple[str, ...] = ()  # flagged injected text that names the value

    @property
    def found(self) -> bool:
        return self.label is not None


_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{1,2}):(\d{2}))?")
_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december"]


def _date_mentioned(normed_text: str, y: int, mo: int, d: int) -> bool:
    """Is the date written in prose ("May 1st, 2024", "the 1st to the 5th of May", "1 may") or ISO form?"""
    if f"{y:04d}-{mo:02d}-{d:02d}" in normed_text:
        return True
    month = _MONTHS[mo - 1]
    for m in re.finditer(rf"\b{month[:3]}[a-z]*\b", normed_text):
        window = normed_text[max(0, m.start() - 30): m.end() + 14]
        if re.search(rf"(?<!\d){d}(?:st|nd|rd|th)?(?!\d)", window):
            return True
    return False


def provenance(value: Any, ctx: Context) -> Evidence:
    """Trace one argument value to the conversation (exact normalised mention, dates also in prose)."""
    s = str(value)
    v = norm(s)
    best: Label | None = None
    sources: list[str] = []
    susp: list[str] = []
    dm = _DATE.match(s.strip())
    for seg in ctx.segments:
        hit = seg.mentions(v) if v else False
        if not hit and dm:
            hit = _date_mentioned(seg.normed, int(dm.group(1)), int(dm.group(2)), int(dm.group(3)))
        if not hit and isinstance(value, (int, float)) and not isinstance(value, bool):
            alt = f"{float(value):.2f}".rstrip("0").rstrip(".")
            hit = alt != v and seg.mentions(alt)
        if hit:
            sources.append(seg.source)
            label = seg.label
            if seg.label == Label.SUSPICIOUS:
                susp.append(seg.source)
            if seg.field_value and seg.normed == v:
                # the value *is* a whole field of a record (a channel's name, a file's id): choosing that record is a
                # reference to it, even when its text is odd; identifiers merely written inside a field are not
                label = max(label, Label.RECORD)
            best = label if best is None else max(best, label)
    return Evidence(s, best, tuple(sources), tuple(susp))
