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


class Vault:
    """Thread-safe mapping for one session; placeholders look like ``<PERSON_1>``."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], str] = {}
        self._values: dict[str, str] = {}  # placeholder -> original surface form (first seen)
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._known: tuple[int, re.Pattern[str] | None, dict[str, str]] = (-1, None, {})

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
            if ph is None:
                n = self._counts.get(kind, 0) + 1
                self._counts[kind] = n
                ph = f"<{kind}_{n}>"
                self._values[ph] = value
            self._by_key[key] = ph
            return ph

    def known(self) -> tuple[re.Pattern[str] | None, dict[str, str]]:
        """A pattern matching every value already in the vault (as a whole word; three characters or
        more), and each value's type. So a value detected once ("Lyon" in a sentence) is replaced where
        detection alone misses it (``{"city": "Lyon"}`` in a tool call's arguments)."""
        with self._lock:
            n, pat, kinds = self._known
            if n == len(self._by_key):
                return pat, kinds
            kinds = {v: k for (k, v) in self._by_key if len(v) >= 3 and k != "LITERAL"}
            alts = "|".join(re.escape(v) for v in sorted(kinds, key=len, reverse=True))
            pat = re.compile(rf"(?<!\w)(?:{alts})(?!\w)") if alts else None
            self._known = (len(self._by_key), pat, kinds)
            return pat, kinds

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
        v._by_key = {(k, n): ph for k, n, ph in obj["keys"]}
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
