"""Facts from one message, by a small local model under a JSON schema, then checked against the text.

Stages, cheapest first:

1. :func:`split_trust` decides whose words a message holds. A ``tool`` message, or one the client
   marked ``"smallfleet_trust": "untrusted"``, is untrusted as a whole; inside a user message, text
   between ``<untrusted>`` and ``</untrusted>`` (a pasted e-mail, a web page) is untrusted and the rest
   is the user's. An unclosed ``<untrusted>`` marks everything after it: the safe reading.
2. :func:`looks_factual` is a regex pre-filter: a message with nothing fact-like (no first-person
   statement, no id, number or e-mail address; a plain question or small talk) skips the model call.
3. :class:`Extractor` asks the model for ``{"facts": [{"key", "value"}]}`` with constrained decoding;
   then a second pass reads, one by one, the fact-like clauses the first answer left uncovered (the
   0.5B model tends to stop after three facts).
4. Every fact is checked: its value must be *grounded* (every number-bearing token verbatim in the
   message, at least 2/3 of its other words present) and fit its key (an order id holds a digit, a
   contact channel names one, a name follows "I'm"/"my name is"/"call me"...). Constrained decoding
   guarantees the shape, not the content: without these checks the 0.5B model copies the prompt's
   examples, invents ids, and files a city under ``order_id`` or a company under ``name``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

import orjson

from ..errors import BackendError
from ..models.base import Backend, ChatResult
from ..step import message_text
from .store import MAX_KEY, MAX_VALUE, Trust, normalize_key

UNTRUSTED_ROLES = frozenset({"tool", "function"})
TRUST_FIELD = "smallfleet_trust"  # message-level marker a client may set: "untrusted"
_MARKED = re.compile(r"<untrusted>(.*?)(?:</untrusted>|$)", re.S | re.I)
MAX_MESSAGE_CHARS = 4000  # longer text is cut before extraction: facts a user states are in short turns

MAX_FACTS = 8
FACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "facts": {
            "type": "array",
            "maxItems": MAX_FACTS,
            "items": {
                "type": "object",
                # maxLength: constrained decoding guarantees structure, not termination; without a cap a
                # tiny model can write one string until max_tokens.
                "properties": {"key": {"type": "string", "minLength": 1, "maxLength": 40},
                               "value": {"type": "string", "minLength": 1, "maxLength": 120}},
                "required": ["key", "value"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["facts"],
    "additionalProperties": False,
}

_SYSTEM = (
    "You extract facts that the user states about themselves in ONE message. Answer with JSON "
    '{"facts": [{"key": ..., "value": ...}]}. Keys (snake_case): name (what the user is called); order_id, '
    "account_id, ticket_id (identifiers); email, phone, address, city (contact and location); employer, job; "
    "preferred_contact (email, phone, SMS...); preferred_language; diet, allergy; likes, dislikes; decision (what "
    "the user decided or chose); another short snake_case key when none fits. value: the exact words from the "
    "message, as short as possible. List every fact the message states, in the order they appear. Questions and "
    "requests state no facts: answer {\"facts\": []}. Never guess."
)
# Few-shot turns: a fixed prefix, so llama.cpp reuses its KV cache across calls (the per-call part,
# known keys + the message, comes last).
_EXAMPLES: list[tuple[str, str]] = [
    ("Hi, I'm Dana Whitfield from Leeds. My account number is AC-55120. Please use email, not phone.",
     '{"facts": [{"key": "name", "value": "Dana Whitfield"}, {"key": "city", "value": "Leeds"}, '
     '{"key": "account_id", "value": "AC-55120"}, {"key": "preferred_contact", "value": "email"}]}'),
    ("How do I convert a string to an integer in Python?", '{"facts": []}'),
    ("Marco Bianchi here. I'm based in Turin and I'm a nurse at St. Mary's. No dairy for me, I'm lactose intolerant.",
     '{"facts": [{"key": "name", "value": "Marco Bianchi"}, {"key": "city", "value": "Turin"}, '
     '{"key": "job", "value": "nurse"}, {"key": "employer", "value": "St. Mary\'s"}, '
     '{"key": "diet", "value": "no dairy"}, {"key": "allergy", "value": "lactose intolerant"}]}'),
    ("What is my account number again?", '{"facts": []}'),
    ("Let's go with the blue logo. I'd like the docs in Spanish.",
     '{"facts": [{"key": "decision", "value": "go with the blue logo"}, {"key": "preferred_language", "value": "Spanish"}]}'),
    ("Known keys: name, preferred_contact\nActually, call me Dee. And we decided to go with the annual plan.",
     '{"facts": [{"key": "name", "value": "Dee"}, {"key": "decision", "value": "go with the annual plan"}]}'),
]

# -- trust ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    text: str
    trust: Trust


def split_trust(message: dict[str, Any]) -> list[Segment]:
    """The message's text, split into the user's own words and untrusted content."""
    text = message_text(message)
    if not text.strip():
        return []
    if message.get("role") in UNTRUSTED_ROLES or message.get(TRUST_FIELD) == "untrusted":
        return [Segment(text, "untrusted")]
    out: list[Segment] = []
    last = 0
    for m in _MARKED.finditer(text):
        if text[last:m.start()].strip():
            out.append(Segment(text[last:m.start()], "trusted"))
        if m.group(1).strip():
            out.append(Segment(m.group(1), "untrusted"))
        last = m.end()
    if text[last:].strip():
        out.append(Segment(text[last:], "trusted"))
    return out


# -- pre-filter -----------------------------------------------------------------------------------
# A statement about the speaker: "my X is", "I am/I'm", "call me", "I live/work/prefer/...", "we decided".
_FIRST_PERSON_STATEMENT = re.compile(
    r"\b(?:my|our)\s+[\w\- ]{1,40}?\s+(?:is|are|was|=|:|changed|moved)\b"
    r"|\b(?:i\s+am|i'm|i’m|im)\s+(?!(?:trying|wondering|looking|going|not sure|curious|asking|getting|having|"
    r"stuck|confused|working on|learning|new to|using)\b)"
    r"|\bcall\s+me\b|\bname'?s\b|\b(?:update|change|set|switch|correct)\b.{0,40}\b(?:my|our)\b"
    # not after an auxiliary: "how do I prefer ...?" asks, "I prefer ..." states
    r"|(?<!\bdo )(?<!\bdid )(?<!\bcan )(?<!\bshould )(?<!\bwould )(?<!\bcould )(?<!\bwill )(?<!\bmay )"
    r"\b(?:i|we)\s+(?:live|work|prefer|like|love|hate|dislike|want|need|use|chose|choose|picked|decided|"
    r"agreed|moved|ordered|bought|paid|have|own|was born|speak|don't\s+(?:like|want|use|eat|drink)|"
    r"do\s+not\s+(?:like|want|use|eat|drink)|would\s+(?:like|rather|prefer)|'d\s+(?:like|rather|prefer))\b"
    r"|\b(?:let's|let\s+us)\s+(?:go|use|pick|choose|stick)\b"
    r"|\b(?:remember|note)\s+that\b|\bfrom\s+now\s+on\b|\bplease\s+(?:use|send|contact|reach)\b",
    re.I)
# Ids, numbers, e-mail addresses: worth a model call even inside a question ("can you check order 4412?").
_ID_LIKE = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b|\b(?=[A-Za-z\-]*\d)[A-Za-z0-9]+(?:[-_/][A-Za-z0-9]+)+\b|\b\d{3,}\b")
_QUESTION = re.compile(r"^\s*(?:what|what's|whats|who|whom|whose|which|when|where|why|how|can|could|would|should|"
                       r"is|are|do|does|did|will|shall|may|might|tell me|explain|show me|give me|write|list)\b", re.I)


_SMALLTALK = re.compile(r"^\W*(?:thanks?(?: you)?(?: so much| a lot)?|thank you|thx|ok(?:ay)?|yes|yeah|yep|no|nope|sure|sorry|oops|"
                        r"great|cool|nice|perfect|got it|hi|hello|hey|bye|goodbye|good (?:morning|night))\W*$", re.I)


def looks_factual(text: str) -> bool:
    """False when a message surely states no fact, so the model call can be skipped.

    Tuned to miss no fact (a false positive only costs one model call): anything with an id-like
    token or a first-person statement passes; a question or request without either is skipped.
    """
    t = text.strip()
    if not t or _SMALLTALK.match(t):
        return False
    if _ID_LIKE.search(t) or _FIRST_PERSON_STATEMENT.search(t):
        return True
    return not (_QUESTION.match(t) or t.endswith("?"))


# -- clauses ---------------------------------------------------------------------------------------
# Not before "not"/"instead": "my id is X, not Y" read as two clauses would make Y a fact.
_CLAUSE_SPLIT = re.compile(r"(?<=[.!?;:])\s+|,\s+(?!not\b|instead\b|rather\b)(?:and\s+|but\s+|so\s+)?"
                           r"|\s+and\s+(?=(?:i|i'm|my|we|our|please)\b)", re.I)
_SALIENT = re.compile(r"(?<!^)(?<![.!?]\s)\b(?!I\b|I'm\b|I'd\b|I've\b)[A-Z][\w'-]*|\b\w*\d[\w-]*")


_NEGATED = re.compile(r",?\s+(?:not|instead\s+of|rather\s+than)\b", re.I)


def clauses(text: str) -> list[str]:
    """Sentences and comma/"and"-joined clauses of a message (two words or more), for the second pass."""
    return [c.strip() for c in _CLAUSE_SPLIT.split(text) if c and len(c.split()) >= 2]


def _uncovered(clause: str, values: list[str]) -> bool:
    """A clause none of the found values speaks for, or with a name or number no found value holds."""
    found = {w for v in values for w in _words(v)}
    words = {w for w in _words(clause) if w not in _FILLER}
    if not words & found:
        return True
    stated = _NEGATED.split(clause.strip(), maxsplit=1)[0]  # "X, not Y": Y is what the user does not mean
    return any(not set(_words(m.group())) <= found for m in _SALIENT.finditer(stated))


# -- grounding --------------------------------------------------------------------------------------
_WORD = re.compile(r"[^\W_]+(?:[-.'’@/][^\W_]+)*", re.U)
_FILLER = frozenset(["a", "an", "the", "my", "our", "me", "i", "i'm", "im", "is", "are", "am", "was", "of", "to", "for",
                     "and", "or", "in", "on", "at", "by", "with", "your", "you", "it", "this", "that", "be", "not", "no"])


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def grounded(value: str, text: str) -> bool:
    """A value the message supports: number-bearing tokens verbatim, at least 2/3 of the other words."""
    hay = text.lower()
    hay_words = set(_words(text))
    words = [w for w in _words(value) if w not in _FILLER]
    if not words:
        return False  # "my name", "it", "?": nothing was stated
    for w in words:
        # whole-token match: "120" is not grounded by "T-77120"
        if any(c.isdigit() for c in w) and not re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", hay):
            return False  # an id or number that is not in the message was invented
    present = sum(1 for w in words if w in hay_words or w in hay)
    return present * 3 >= len(words) * 2


def snap(value: str, text: str) -> str | None:
    """The message's own spelling of a value the model rewrote ("Lisboa" for "Lisbon", "Jon" for "John"):
    the span of as many words with the same first letter and a similarity of at least 0.8, else None.
    Never for values with digits: an id or number the message does not hold stays invented."""
    if any(c.isdigit() for c in value) or len(value) < 4:
        return None
    n = len(value.split())
    if not 1 <= n <= 3:
        return None
    words = list(_WORD.finditer(text))
    best, best_ratio = None, 0.8
    for i in range(len(words) - n + 1):
        span = text[words[i].start():words[i + n - 1].end()]
        if span[:1].lower() != value[:1].lower():
            continue
        r = SequenceMatcher(None, value.lower(), span.lower()).ratio()
        if r >= best_ratio:
            best, best_ratio = span, r
    return best


# A value must look like what its key names: the 0.5B model sometimes files a fact under a wrong key
# ("Postgres" as preferred_contact), and a wrong key would supersede a right fact. Checked for the
# canonical keys only; other keys pass.
_CHANNEL = re.compile(r"\b(?:e-?mail|mail|phone|call|calls|telephone|sms|text|texts|whatsapp|signal|telegram|"
                      r"post|letter|chat|slack|teams|fax|in person|mobile)\b", re.I)
_KEY_SHAPE: dict[str, Any] = {
    "preferred_contact": lambda v: bool(_CHANNEL.search(v)),
    "email": lambda v: "@" in v,
    "phone": lambda v: sum(c.isdigit() for c in v) >= 5,
    "order_id": lambda v: any(c.isdigit() for c in v),
    "account_id": lambda v: any(c.isdigit() for c in v),
    "ticket_id": lambda v: any(c.isdigit() for c in v),
    "name": lambda v: not any(c.isdigit() for c in v) and len(v.split()) <= 5,
}


# A name must follow a cue that introduces the speaker; "I work at Northwind" names a company.
_NAME_CUE = (r"(?:name\s+is|name's|names\s+is|call\s+me|i'm|i’m|i\s+am|this\s+is|it's|regards,?|thanks,?|cheers,?|^)"
             r"\W*(?:(?:now|actually|really|just|still|called|dr|mr|mrs|ms|miss|prof)\.?\s+)?")


def fits_key(norm_key: str, value: str, text: str = "") -> bool:
    """Whether a value has the shape its (canonical) key names; keys without a rule always fit."""
    check = _KEY_SHAPE.get(norm_key)
    if check is not None and not check(value):
        return False
    if norm_key == "name" and text:
        first = re.escape(value.split()[0]) if value.split() else ""
        return bool(first) and re.search(rf"{_NAME_CUE}{first}", text, re.I | re.M) is not None
    return True


_PLACE_CUE = r"(?:live|living|lives|based|located|moved|relocated|reside|residing|stay|staying)\s+(?:in|to|near|at)|from"


def _placed(value: str, text: str) -> bool:
    """The value follows a place cue ("based in X", "from X") in the message."""
    words = value.split()
    return bool(words) and re.search(rf"\b{_PLACE_CUE}\s+{re.escape(words[0])}", text, re.I) is not None


# -- the extractor ----------------------------------------------------------------------------------


@dataclass
class ExtractorStats:
    """Counters the gateway can report: how much memory cost and how much the pre-filter saved."""

    model_calls: int = 0
    skipped: int = 0  # messages/segments the pre-filter skipped: no model call
    tokens_in: int = 0
    tokens_out: int = 0
    facts_kept: int = 0
    facts_rejected: int = 0  # well-formed but not grounded in the message, or not the shape its key names
    errors: int = 0
    rejected_examples: list[dict[str, str]] = field(default_factory=list)  # last few, for debugging

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "rejected_examples"}


class Extractor:
    """``await Extractor(fleet.get("qwen2.5-coder-0.5b")).extract("My name is Ada")`` → ``[("name", "Ada")]``."""

    def __init__(self, backend: Backend, *, max_tokens: int = 200, prefilter: bool = True,
                 max_extra_calls: int = 3) -> None:
        self.backend = backend
        self.max_extra_calls = max_extra_calls
        self.max_tokens = max_tokens
        self.prefilter = prefilter
        self.stats = ExtractorStats()

    def request(self, text: str, known_keys: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
        """The chat request for one message (public so benchmarks and tests can inspect it)."""
        msgs: list[dict[str, Any]] = [{"role": "system", "content": _SYSTEM}]
        for u, a in _EXAMPLES:
            msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
        prefix = f"Known keys: {', '.join(known_keys[:20])}\n" if known_keys else ""
        msgs.append({"role": "user", "content": prefix + text[:MAX_MESSAGE_CHARS]})
        return {"messages": msgs, "max_tokens": self.max_tokens, "temperature": 0.0, "logprobs": False,
                "response_format": {"type": "json_schema", "json_schema": {"name": "facts", "schema": FACT_SCHEMA}}}

    async def extract(self, text: str, known_keys: list[str] | tuple[str, ...] = (), *,
                      calls: list[ChatResult] | None = None) -> list[tuple[str, str]]:
        """Grounded (key, value) pairs stated in ``text``; [] when there are none.

        One call for the whole message; then one call per fact-like clause that none of the found
        values covers (at most ``max_extra_calls``). The 0.5B model tends to stop after the first few
        facts of a long message ("... and I prefer post. I live in Bologna." loses the city), but
        finds a fact reliably in a short clause; the second pass costs nothing when the first was complete.
        A second-pass fact only adds a new key: a clause read without its sentence must not overrule it.

        Raises :class:`BackendError` when the model fails or answers something that is not the schema
        (the caller decides whether a turn is retried); a grounded-check failure is not an error.
        Every completed model call is appended to ``calls`` when given (for the ledger).
        """
        if not isinstance(text, str):
            raise TypeError("extract() takes the message text as a string.")
        text = text[:MAX_MESSAGE_CHARS]
        if self.prefilter and not looks_factual(text):
            self.stats.skipped += 1
            return []
        pairs = await self._call(text, list(known_keys), calls=calls)
        found = {normalize_key(k) for k, _ in pairs}
        extra = 0
        for clause in clauses(text):
            if extra >= self.max_extra_calls:
                break
            if not looks_factual(clause) or not _uncovered(clause, [v for _, v in pairs]):
                continue
            extra += 1
            # without the keys just found: given them, the model files the clause's fact under one of them
            for k, v in await self._call(clause, list(known_keys), context=text, calls=calls):
                if normalize_key(k) not in found and not any(v.lower() == old.lower() for _, old in pairs):
                    found.add(normalize_key(k))
                    pairs.append((k, v))
        return pairs

    async def _call(self, text: str, known_keys: list[str], context: str | None = None,
                    calls: list[ChatResult] | None = None) -> list[tuple[str, str]]:
        try:
            res = await self.backend.chat(self.request(text, known_keys))
        except Exception:
            self.stats.errors += 1
            raise
        if calls is not None:
            calls.append(res)
        self.stats.model_calls += 1
        self.stats.tokens_in += res.tokens_in
        self.stats.tokens_out += res.tokens_out
        return self.validate(res.content, text, context=context)

    def validate(self, answer: str, text: str, context: str | None = None) -> list[tuple[str, str]]:
        """Parse and check the model's answer against ``text``; merge repeated keys.

        ``context``: the whole message when ``text`` is one clause of it (name cues may sit outside the clause).
        """
        try:
            data = orjson.loads(answer)
        except orjson.JSONDecodeError as e:
            # finish_reason "length" under a grammar: the JSON was cut off.
            self.stats.errors += 1
            raise BackendError(f"fact extraction: the model's answer is not JSON ({e}).") from e
        items = data.get("facts") if isinstance(data, dict) else None
        if not isinstance(items, list):
            self.stats.errors += 1
            raise BackendError("fact extraction: the model's answer has no 'facts' list.")
        merged: dict[str, tuple[str, list[str]]] = {}
        for it in items[:MAX_FACTS]:
            if not isinstance(it, dict):
                continue
            key, value = it.get("key"), it.get("value")
            if not isinstance(key, str) or not isinstance(value, str):
                continue
            key, value = " ".join(key.split())[:MAX_KEY], " ".join(value.split())[:MAX_VALUE]
            norm = normalize_key(key)
            if value and not grounded(value, text):
                value = snap(value, text) or value  # the small model translates or respells what it copies
            if norm == "name" and not fits_key("name", value, context or text) and _placed(value, context or text):
                key = norm = "city"  # "I'm based in Tampere": the 0.5B model reads "I'm X" as a name
            # a value that only repeats its key ("name = my name") answers a question, it states nothing
            if not norm or not value or not grounded(value, text) or not fits_key(norm, value, context or text) \
                    or {w for w in _words(value) if w not in _FILLER} <= set(norm.split("_")):
                self.stats.facts_rejected += 1
                self.stats.rejected_examples = (self.stats.rejected_examples + [{"key": key, "value": value}])[-10:]
                continue
            if any(value.lower() == v.lower() for k, (_, vs) in merged.items() if k != norm for v in vs):
                continue  # the same value under a second key is the model repeating itself, not a new fact
            _label, values = merged.setdefault(norm, (key, []))
            if not any(v.lower() == value.lower() for v in values):
                values.append(value)  # "my order ids are 4412 and 4413": one key, both values
        out = [(label, ", ".join(values)) for label, values in merged.values()]
        self.stats.facts_kept += len(out)
        return out
