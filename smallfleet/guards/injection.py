"""Injection detector: a second layer that flags instructions hidden in untrusted content.

It never decides alone whether a call runs (the policy does, from provenance); a flag lowers the
label of the text it found (``SUSPICIOUS``), is logged, and raises the step's risk. Weighted
heuristics, applied to what a reader would see: invisible characters are removed, look-alike letters
folded to Latin, and base64 blobs decoded and scanned too.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from ..textcache import TextCache
from .trust import clean

# Cyrillic/Greek letters that look Latin: folded so "іgnore previоus" reads as "ignore previous"
_CONFUSABLE = str.maketrans("аеорсухіјԁӏѕԛԝАВЕКМНОРСТХІЈЅαοτνΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
                            "aeopcyxijdlsqwABEKMHOPCTXIJSaotvABEZHIKMNOPTYX")

_RULES: list[tuple[float, str, re.Pattern[str]]] = [
    (1.0, "asks to ignore earlier instructions",
     re.compile(r"\b(ignore|disregard|forget|override)\b.{0,30}\b(previous|prior|above|earlier|all|your|the)\b.{0,20}"
                r"\b(instructions?|prompts?|rules|directions|guidelines|task)\b", re.I | re.S)),
    (1.0, "claims to outrank the user's task",
     re.compile(r"\bbefore (?:you )?(?:can |could )?(?:solve|do|complete|continue|finish|start|answer)\b"
                r".{0,40}\b(task|request|question)\b", re.I | re.S)),
    (0.8, "addresses the AI directly",
     re.compile(r"\b(?:to you|dear|hey|attention|note to)\b,?\s*(?:the\s+)?"
                r"(?:ai|assistant|agent|model|llm|chatbot|gpt[\w.-]*|claude|gemini|llama|qwen)\b"
                r"|\b(?:ai|assistant|agent|language model)\b[,:]?\s+(?:you must|please|now)\b|\bmessage from me\b.{0,40}\bto you\b", re.I | re.S)),
    (0.8, "announces new or important instructions",
     re.compile(r"\b(?:new|updated|important|urgent|additional|secret|hidden|system)\s+(?:instructions?|task|orders?|directive|message from)\b"
                r"|\bdo the following\b|\bfollow(?:ing)? these (?:steps|instructions)\b"
                r"|\byour (?:new|real|actual|true) (?:task|goal|instructions?)\b", re.I)),
    (0.8, "fake role or system markup",
     re.compile(r"<\s*/?\s*(?:information|important|instructions?|system|admin|im_start|im_end|inst|sys)\s*>|\[/?INST\]|<\|im_start\|>|"
                r"^\s*(?:###\s*)?(?:system|assistant)\s*:|\bsystem prompt\b|\bdeveloper mode\b|\bjailbreak\b", re.I | re.M)),
    (0.6, "tells the reader to act on an outside address",
     re.compile(r"\b(?:send|forward|email|e-mail|transfer|wire|pay|post|upload|share|invite|visit|go to|open)\b.{0,80}"
                r"(?:[\w.+-]+@[\w-]+\.[\w.-]+|\bhttps?://|\bwww\.|\b[A-Z]{2}\d{2}[A-Z0-9]{10,30}\b)", re.I | re.S)),
    (0.5, "demands secrecy or urgency from the reader",
     re.compile(r"\b(?:do not|don't|never)\s+(?:tell|inform|mention|reveal|show)\b.{0,20}\b(?:user|anyone|them)\b"
                r"|\bwithout (?:asking|telling|informing|confirmation)\b|\bfill them in without asking\b", re.I | re.S)),
    (0.4, "imperative to change credentials or delete",
     re.compile(r"\b(?:change|update|reset|set)\b.{0,20}\bpassword\b.{0,20}\bto\b"
                r"|\bdelete (?:all|every|the)\b.{0,40}\b(?:files?|emails?|messages?|records?)\b", re.I | re.S)),
]
_B64 = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")
THRESHOLD = 1.0


@dataclass(frozen=True)
class Finding:
    score: float
    reasons: tuple[str, ...]

    @property
    def flagged(self) -> bool:
        return self.score >= THRESHOLD


def _visible(text: str) -> str:
    return clean(text).translate(_CONFUSABLE)


def _decoded_blobs(text: str) -> list[str]:
    out = []
    for m in _B64.finditer(text):
        blob = m.group(0)
        try:
            raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
        except (binascii.Error, ValueError):
            continue
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if sum(c.isprintable() or c.isspace() for c in s) >= 0.95 * len(s) and re.search(r"[a-zA-Z]{3,} [a-zA-Z]{2,}", s):
            out.append(s)
    return out


class InjectionDetector:
    """``scan(text)`` → Finding (score, reasons); ``detector(text)`` → flagged? (the shape trust.py takes).

    Heuristic rules plus the small trained classifier (``classifier.py``): a classifier probability p
    above 0.5 adds 2·(p − 0.5) to the score, so it flags alone only when it is near certain.
    """

    def __init__(self, threshold: float = THRESHOLD, classifier: bool = True) -> None:
        self.threshold = threshold
        self.classifier = None
        if classifier:
            from .classifier import ARTIFACT, InjectionClassifier

            if ARTIFACT.is_file():
                self.classifier = InjectionClassifier.load(ARTIFACT)
        self._cache = TextCache(max_entries=4096, max_bytes=16 << 20)

    def scan(self, text: str) -> Finding:
        """Cached by text: conversations re-send the same tool output every turn."""
        return self._cache.get(text, lambda: self._scan(text))

    def _scan(self, text: str) -> Finding:
        if not text:
            return Finding(0.0, ())
        texts = [_visible(text[:100_000])]
        encoded = [_visible(b) for b in _decoded_blobs(texts[0])]
        reasons: list[str] = []
        score = 0.0
        for t, tag in [(texts[0], "")] + [(b, " (inside base64)") for b in encoded]:
            for weight, why, pat in _RULES:
                if pat.search(t) and why + tag not in reasons:
                    reasons.append(why + tag)
                    score += weight
        if self.classifier is not None:
            p = max(self.classifier.prob(t) for t in texts + encoded)
            if p > 0.5:
                reasons.append(f"trained classifier p={p:.2f}")
                score += 2 * (p - 0.5)
        if encoded and score > 0:
            reasons.append("hides text in base64")
            score += 0.5
        if clean(text) != text and any(ord(c) in (0x200B, 0x200C, 0x200D, 0x2060) for c in text) and score > 0:
            reasons.append("hides words with invisible characters")
            score += 0.3
        return Finding(round(score, 3), tuple(reasons))

    def __call__(self, text: str) -> bool:
        return self.scan(text).score >= self.threshold
