"""Stand-in values for the placeholders of a captured step, so a replay reads what the model reads live.

Captured steps are pseudonymised before they are stored (``<LOCATION_1>``, ``<PERSON_2>``): the real
values are gone by design. A local model serving live traffic reads the real values, though, and a
small model shown ``<LOCATION_1>`` tends to make one up ("London"), which a replay would count as a
disagreement the live step would not have. So before a replay each placeholder becomes a realistic,
invented value of its type (one value per placeholder, none already in the step's text), and after it
the values in the answer become the placeholders again, to compare with the accepted answer.
Placeholders of a type with no stand-ins stay as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from .match import PLACEHOLDER

# invented values, several per type so one step's placeholders get distinct ones
_VALUES: dict[str, tuple[str, ...]] = {
    "PERSON": ("Maria Lindqvist", "Tomas Okafor", "Priya Raman", "Daniel Moreau", "Keiko Tanabe", "Samuel Brandt"),
    "LOCATION": ("Lyon", "Porto", "Osaka", "Tampere", "Valparaiso", "Ghent"),
    "ORGANIZATION": ("Halvorsen Logistics", "Brightwater Labs", "Corvane Foods", "Mirela Textiles", "Ostrava Steelworks"),
    "NRP": ("Norwegian", "Chilean", "Portuguese", "Finnish"),
    "DATE_TIME": ("14 March 2026", "2 June 2026", "21 September 2026", "9 November 2026"),
    "EMAIL_ADDRESS": ("m.lindqvist@example.org", "t.okafor@example.net", "p.raman@example.com"),
    "PHONE_NUMBER": ("+44 20 7946 0321", "+1 415 555 0187", "+33 1 84 88 20 45"),
    "STREET_ADDRESS": ("14 Harbour Road", "7 Linden Avenue", "221 Quayside Street"),
    "ZIP_CODE": ("90210", "75011", "10115"),
    "URL": ("https://example.org/account", "https://example.net/orders"),
    "IP_ADDRESS": ("192.0.2.44", "198.51.100.7", "203.0.113.19"),
    "AGE": ("34", "51", "27"),
    "TITLE": ("Dr", "Ms", "Mr"),
}
_TYPED = re.compile(r"<([A-Z_]+)_(\d+)>")


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _map(obj: Any, fn: Any) -> Any:
    if isinstance(obj, str):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_map(v, fn) for v in obj]
    return obj


class Surrogates:
    """One step's placeholder <-> stand-in value map."""

    def __init__(self, *objs: Any) -> None:
        texts = [s for o in objs for s in _strings(o)]
        found = sorted({m.group(0) for s in texts for m in PLACEHOLDER.finditer(s)},
                       key=lambda p: (p.rsplit("_", 1)[0], int(p.rsplit("_", 1)[1].rstrip(">"))))
        low = "\n".join(texts).lower()
        self.forward: dict[str, str] = {}
        for ph in found:
            m = _TYPED.fullmatch(ph)
            values = _VALUES.get(m.group(1), ()) if m else ()
            free = [v for v in values if v.lower() not in low and v not in self.forward.values()]
            if free:
                self.forward[ph] = free[0]
        self._fwd = re.compile("|".join(map(re.escape, self.forward))) if self.forward else None
        # longest first, so "Maria Lindqvist" goes back before a bare "Maria" could
        back = sorted(self.forward.items(), key=lambda kv: -len(kv[1]))
        self._back = [(re.compile(re.escape(v), re.IGNORECASE), ph) for ph, v in back]

    def fill(self, obj: Any) -> Any:
        """``obj`` with every placeholder this map knows replaced by its stand-in."""
        if self._fwd is None:
            return obj
        pat = self._fwd
        return _map(obj, lambda s: pat.sub(lambda m: self.forward[m.group(0)], s))

    def restore(self, obj: Any) -> Any:
        """``obj`` with the stand-ins put back as placeholders (in any letter case)."""
        if not self._back:
            return obj

        def back(s: str) -> str:
            for pat, ph in self._back:
                s = pat.sub(ph, s)
            return s
        return _map(obj, back)
