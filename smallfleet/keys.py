"""API keys: created and revoked by the operator (``smallfleet keys``), checked by the gateway.

A key is ``sf-<id>-<secret>``: the id names it in listings and logs, the secret is 192 random bits.
Only a SHA-256 digest is stored (a key this random needs no slow hash; the digest cannot be turned
back into a key). Once the store holds any active key, every endpoint of the gateway requires one.

A running gateway sees a key created or revoked from the CLI within ``KeyRing.REFRESH_S`` seconds:
it asks SQLite whether anyone committed to the file since its last look (``PRAGMA data_version``,
no table read) at most that often.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, InvalidRequestError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    digest TEXT NOT NULL UNIQUE,
    admin INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    revoked REAL
);
"""
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_KEY = re.compile(r"^sf-([0-9a-f]{8})-([A-Za-z0-9_\-]{32})$")


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    admin: bool
    created: float
    revoked: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """The key table in a SQLite file (default: ``keys.db`` beside the ledger)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=10, check_same_thread=False)
            if new:
                self.path.chmod(0o600)  # digests only, but nobody else needs to read them
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise ConfigError(f"cannot open the key store {self.path}: {e}.", hint="set SMALLFLEET_KEYS to a writable file") from e

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self, name: str, admin: bool = False) -> tuple[KeyInfo, str]:
        """A new key: (its info, the key itself, which is shown once and never stored)."""
        if not _NAME.match(name):
            raise InvalidRequestError(f"key name {name!r}: use 1-64 letters, digits, '_', '-', '.'.")
        if self._db.execute("SELECT 1 FROM api_keys WHERE name=?", (name,)).fetchone():
            raise InvalidRequestError(f"a key named {name!r} exists already.", hint="pick another name, or revoke that one first")
        kid = secrets.token_hex(4)
        key = f"sf-{kid}-{secrets.token_urlsafe(24)}"
        info = KeyInfo(kid, name, admin, time.time())
        self._db.execute("INSERT INTO api_keys (id, name, digest, admin, created) VALUES (?,?,?,?,?)",
                         (kid, name, digest(key), int(admin), info.created))
        return info, key

    def list(self) -> list[KeyInfo]:
        rows = self._db.execute("SELECT id, name, admin, created, revoked FROM api_keys ORDER BY created").fetchall()
        return [KeyInfo(r[0], r[1], bool(r[2]), r[3], r[4]) for r in rows]

    def revoke(self, name_or_id: str) -> KeyInfo | None:
        """Revoke by name or id; returns the key revoked, None when no active key matches."""
        row = self._db.execute("SELECT id FROM api_keys WHERE (name=? OR id=?) AND revoked IS NULL",
                               (name_or_id, name_or_id)).fetchone()
        if row is None:
            return None
        self._db.execute("UPDATE api_keys SET revoked=? WHERE id=?", (time.time(), row[0]))
        return next(k for k in self.list() if k.id == row[0])

    def active(self) -> dict[str, KeyInfo]:
        """digest -> key, for every key not revoked."""
        rows = self._db.execute("SELECT digest, id, name, admin, created FROM api_keys WHERE revoked IS NULL").fetchall()
        return {r[0]: KeyInfo(r[1], r[2], bool(r[3]), r[4]) for r in rows}

    def data_version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])


class KeyRing:
    """The gateway's view of the key store, refreshed at most every ``REFRESH_S`` seconds.

    The file is not created by the gateway: no file, no keys, and the gateway serves loopback only."""

    REFRESH_S = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._store: KeyStore | None = None
        self._keys: dict[str, KeyInfo] = {}
        self._version = -1
        self._checked = 0.0
        self._lock = threading.Lock()
        self.refresh(force=True)

    @property
    def enabled(self) -> bool:
        """Any active key: every endpoint requires one."""
        self.refresh()
        return bool(self._keys)

    @property
    def count(self) -> int:
        """Active keys."""
        self.refresh()
        return len(self._keys)

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.REFRESH_S:
            return
        with self._lock:
            self._checked = now
            if self._store is None:
                if not self.path.is_file():
                    self._keys = {}
                    return
                self._store = KeyStore(self.path)
            try:
                v = self._store.data_version()
                if v != self._version or force:
                    self._keys, self._version = self._store.active(), v
            except sqlite3.DatabaseError:  # the file was replaced or removed: look again next time
                self._store.close()
                self._store = None
                self._keys = {}

    def check(self, key: str) -> KeyInfo | None:
        """The active key this is, or None."""
        self.refresh()
        if not _KEY.match(key):
            return None
        d = digest(key)
        for known, info in self._keys.items():
            if hmac.compare_digest(known, d):
                return info
        return None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
