"""Matching a request to a learned cluster on the request path: no model call, well under a millisecond.

The structure signature (a hash of kind, tools, schema, system prompt and loop phase) picks the
clusters of that structure; when there are several, the nearest centroid wins in a hashed bag-of-words
space (words of the task text hashed into ``DIM`` buckets, unit length). The clusters themselves were
found with MiniLM (:mod:`.clusters`); these centroids are the cheap stand-in built from their members.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

from ..retrieval.terms import STOPWORDS

DIM = 1 << 16
_WORD = re.compile(r"[a-z0-9]+")
PLACEHOLDER = re.compile(r"<[A-Z_]+_\d+>")  # a pseudonymised value: not a word of the task


def term_vector(text: str, max_words: int = 400) -> dict[int, float]:
    """Hashed words (and word pairs) of ``text``, unit length; only the first ``max_words`` words count."""
    words = [w for w in _WORD.findall(PLACEHOLDER.sub(" ", text[:8000]).lower()) if w not in STOPWORDS][:max_words]
    c: Counter[int] = Counter(zlib.crc32(w.encode()) % DIM for w in words)
    c.update(zlib.crc32(f"{a} {b}".encode()) % DIM for a, b in pairwise(words))
    norm = math.sqrt(sum(v * v for v in c.values())) or 1.0
    return {k: v / norm for k, v in c.items()}


@dataclass(frozen=True)
class Entry:
    cluster: str
    signature: str
    centroid: dict[int, float]


class Matcher:
    """Which learned cluster (if any) a step belongs to."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self._by_sig: dict[str, list[Entry]] = {}
        for e in entries:
            self._by_sig.setdefault(e.signature, []).append(e)

    def match(self, signature: str, text: str) -> str | None:
        cands = self._by_sig.get(signature)
        if not cands:
            return None
        if len(cands) == 1:
            return cands[0].cluster
        v = term_vector(text)
        return max(cands, key=lambda e: sum(w * e.centroid.get(k, 0.0) for k, w in v.items())).cluster
