"""The vault: placeholder ↔ original value, consistent within a session or agent run.

The same value gets the same placeholder everywhere in a session (messages, turns, tool-call
arguments). Values are keyed by their exact text, so restoring is lossless: "Jane" and "Jane Doe", or
a card written with and without spaces, are kept apart rather than restored to one surface form.
Vaults live in memory; :meth:`Vault.save` / :meth:`Vault.load` persist one encrypted with a key
from the environment (``SMALLFLEET_VAULT_KEY``, a Fernet key).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import orjson

from ..errors import ConfigError, NotAvailableError

_WORD = re.compile(r"\w+")


def _bounded(text: str, start: int, end: int) -> bool:
    """No word character right before or after: a whole value, not part of a longer word."""
    return not (start > 0 and _WORD.match(text, start - 1)) and not (end < len(text) and _WORD.match(text, end))


class Vault:
    """Thread-safe mapping for one session; placeholders look like ``<PERSON_1>``."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], str] = {}
        self._values: dict[str, str] = {}  # placeholder -> original surface form (first seen)
        self._by_value: dict[str, str] = {}  # value -> its first placeholder, whatever type it was read as
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._added: list[tuple[str, str]] = []  # (type, value) in the order they came: what the index has not seen
        self._known: tuple[int, dict[str, list[tuple[str, int]]], dict[str, str], list[str]] = (0, {}, {}, [])

    def __len__(self) -> int:
        return len(self._values)

    @property
    def entries(self) -> int:
        """(type, value) pairs known: grows whenever the vault learns something."""
        return len(self._by_key)

    def placeholder_for(self, kind: str, value: str) -> str:
        key = (kind, value)
        with self._lock:
            ph = self._by_key.get(key)
            if ph is None and value in self._by_value:
                # the same text read as another type elsewhere ("Lyon" a person in prose, a place in a tool call):
                # one value, one placeholder, so the model sees that they are the same
                ph = self._by_key[key] = self._by_value[value]
                self._added.append(key)  # the known-values index keeps its "latest type wins" reading
            if ph is None:
                n = self._counts.get(kind, 0) + 1
                self._counts[kind] = n
                ph = f"<{kind}_{n}>"
                self._values[ph] = value
                self._by_key[key] = ph
                self._by_value[value] = ph
                self._added.append(key)
            return ph

    def find_known(self, text: str) -> list[tuple[int, int, str]]:
        """Where values already in the vault occur in ``text`` as whole words (three characters or
        more): (start, end, type), leftmost-longest and not overlapping. So a value detected once
        ("Lyon" in a sentence) is replaced where detection alone misses it (``{"city": "Lyon"}`` in a
        tool call's arguments).

        Found through an index of each value's first word, so the cost follows the text, not the vault:
        a long agent run collects hundreds of values, and one regex alternation of them all cost a
        recompile per new value and a try of every value at every position."""
        index, kinds, loose = self._index()
        if not kinds:
            return []
        hits: list[tuple[int, int, str]] = []
        for m in _WORD.finditer(text):
            for value, offset in index.get(m.group(), ()):  # longest first
                s = m.start() - offset
                if s >= 0 and text.startswith(value, s) and _bounded(text, s, s + len(value)):
                    hits.append((s, s + len(value), kinds[value]))
                    break
        for value in loose:  # no word character to index by (rare)
            at = text.find(value)
            while at >= 0:
                if _bounded(text, at, at + len(value)):
                    hits.append((at, at + len(value), kinds[value]))
                at = text.find(value, at + 1)
        hits.sort(key=lambda h: (h[0], h[0] - h[1]))
        out: list[tuple[int, int, str]] = []
        end = -1
        for h in hits:
            if h[0] >= end:
                out.append(h)
                end = h[1]
        return out

    def _index(self) -> tuple[dict[str, list[tuple[str, int]]], dict[str, str], list[str]]:
        """first word -> [(value, the word's offset in it)] longest first, value -> type, values without a
        word; extended by the entries added since the last call (a run's vault grows on most steps)."""
        with self._lock:
            n, index, kinds, loose = self._known
            if n == len(self._added):
                return index, kinds, loose
            for kind, v in self._added[n:]:
                if len(v) < 3 or kind == "LITERAL":
                    continue
                fresh = v not in kinds
                kinds[v] = kind  # the latest type of a value wins, as it always has
                if not fresh:
                    continue
                m = _WORD.search(v)
                if m is None:
                    loose.append(v)
                    loose.sort(key=len, reverse=True)
                    continue
                bucket = index.setdefault(m.group(), [])
                bucket.append((v, m.start()))
                bucket.sort(key=lambda e: len(e[0]), reverse=True)  # stable: equal lengths keep their order
            self._known = (len(self._added), index, kinds, loose)
            return index, kinds, loose

    def value(self, placeholder: str) -> str | None:
        return self._values.get(placeholder)

    def items(self) -> list[tuple[str, str]]:
        return list(self._values.items())

    # -- persistence -----------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        with self._lock:
            return orjson.dumps({"values": self._values, "keys": [[k, n, ph] for (k, n), ph in self._by_key.items()],
                                 "counts": self._counts})

    @classmethod
    def from_bytes(cls, data: bytes) -> Vault:
        obj = orjson.loads(data)
        v = cls()
        v._values = dict(obj["values"])
        for ph, value in v._values.items():
            v._by_value.setdefault(value, ph)
        v._by_key = {(k, n): ph for k, n, ph in obj["keys"]}
        v._added = list(v._by_key)
        v._counts = dict(obj["counts"])
        return v

    def save(self, path: str | Path, key: str | bytes | None = None) -> None:
        """Write the vault encrypted with ``key`` (default ``$SMALLFLEET_VAULT_KEY``)."""
        data = _fernet(key).encrypt(self.to_bytes())
        p = Path(path)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, p)  # never a half-written vault

    @classmethod
    def load(cls, path: str | Path, key: str | bytes | None = None) -> Vault:
        from cryptography.fernet import InvalidToken

        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"vault file {p} does not exist.")
        try:
            return cls.from_bytes(_fernet(key).decrypt(p.read_bytes()))
        except InvalidToken:
            raise ConfigError(f"cannot decrypt vault {p}: wrong key or not a smallfleet vault.",
                              hint="set SMALLFLEET_VAULT_KEY to the key it was written with") from None


def new_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _fernet(key: str | bytes | None):  # type: ignore[no-untyped-def]
    try:
        from cryptography.fernet import Fernet
    except ImportError as e:
        raise NotAvailableError("encrypted vaults need the 'cryptography' package.", hint="pip install cryptography") from e
    key = key or os.environ.get("SMALLFLEET_VAULT_KEY")
    if not key:
        raise ConfigError("no vault key: set SMALLFLEET_VAULT_KEY.",
                          hint="create one with: python -c 'from smallfleet.privacy import new_key; print(new_key())'")
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise ConfigError("SMALLFLEET_VAULT_KEY is not a valid key (32 url-safe base64 bytes).",
                          hint="create one with: python -c 'from smallfleet.privacy import new_key; print(new_key())'") from None
