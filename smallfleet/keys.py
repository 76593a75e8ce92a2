"""API keys: created and revoked by the operator (``smallfleet keys``), checked by the gateway.

A key is ``sf-<id>-<secret>``: the id names it in listings and logs, the secret is 192 random bits.
Only a SHA-256 digest is stored (a key this random needs no slow hash; the digest cannot be turned
back into a key). Once the store holds any active key, every endpoint of the gateway requires one.

A key may carry limits: requests per minute and the models (or tiers) it may use, kept here, and a
budget, kept in the ledger (the spend it is checked against lives there; see ``ledger.account``).

The store is ``keys.db`` beside the ledger, or the shared PostgreSQL database when one is set, so
every replica sees the same keys. A running gateway sees a key created, limited or revoked within
``KeyRing.REFRESH_S`` seconds: on SQLite it asks whether anyone committed to the file since its last
look (``PRAGMA data_version``, no table read); on PostgreSQL it reads the small key table again.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .db import Database, DatabaseUnavailable, Dialect, ddl, is_url, redact_url
from .errors import ConfigError, InvalidRequestError

_V1 = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    digest TEXT NOT NULL UNIQUE,
    admin INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    revoked REAL
)
"""
_V2 = """
ALTER TABLE api_keys ADD COLUMN rpm INTEGER;
ALTER TABLE api_keys ADD COLUMN models TEXT
"""
MIGRATIONS: dict[Dialect, list[str]] = {d: [ddl(_V1, d), _V2] for d in ("sqlite", "postgresql")}
_COLS = "id, name, admin, created, revoked, rpm, models"
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_KEY = re.compile(r"^sf-([0-9a-f]{8})-([A-Za-z0-9_\-]{32})$")
_MODEL = re.compile(r"^[A-Za-z0-9_.:/\-]{1,128}$")
MAX_RPM = 1_000_000


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    admin: bool
    created: float
    revoked: float | None = None
    rpm: int | None = None  # requests per minute, across every replica (None: no limit)
    models: frozenset[str] | None = None  # fleet model or tier names it may use (None: all)

    @property
    def active(self) -> bool:
        return self.revoked is None

    @property
    def account(self) -> str:
        """The ledger row its spend and budget are kept in."""
        return account(self.id)

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "admin": self.admin, "created": self.created, "revoked": self.revoked,
                "rpm": self.rpm, "models": sorted(self.models) if self.models is not None else None}


ACCOUNT = "@key:"  # an API key's own row in the ledger's runs: its budget and spend


def account(key_id: str) -> str:
    """A key's ledger account: a run id no client can name (client run ids may not start with '@')."""
    return ACCOUNT + key_id


def sliding_wait(prev_n: int, cur_n: int, frac: float, rpm: int) -> float:
    """Seconds until a request may go under ``rpm``, 0 if now: a sliding minute estimated from two fixed
    ones (``cur_n`` requests so far in this minute, this one included, ``frac`` of it gone; the last
    minute's ``prev_n`` weighted by the share of it the window still covers)."""
    if prev_n * (1 - frac) + cur_n <= rpm:
        return 0.0
    left = 60 * (1 - frac)  # at the next minute the count restarts from this minute's
    if prev_n == 0:
        return left
    # the last minute's share shrinks as the window slides: when does it leave room?
    return max(1.0, min(left, (prev_n * (1 - frac) + cur_n - rpm) / prev_n * 60))


class LocalRate:
    """The same limit counted in this process, for a gateway whose ledger is off."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, int, int]] = {}  # account -> (minute, its count, the last minute's count)
        self._lock = threading.Lock()

    def take(self, account: str, rpm: int) -> float:
        now = time.time()
        minute, frac = int(now // 60), now / 60 % 1
        with self._lock:
            m, cur, prev = self._counts.get(account, (minute, 0, 0))
            if m != minute:
                m, cur, prev = minute, 0, cur if m == minute - 1 else 0
            wait = sliding_wait(prev, cur + 1, frac, rpm)
            self._counts[account] = (m, cur + (wait == 0), prev)
        return wait


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _info(r: tuple[object, ...]) -> KeyInfo:
    models = frozenset(str(r[6]).split(",")) if r[6] else None
    return KeyInfo(str(r[0]), str(r[1]), bool(r[2]), float(r[3]), r[4], r[5], models)  # type: ignore[arg-type]


def check_limits(rpm: int | None, models: list[str] | None) -> None:
    if rpm is not None and not 1 <= rpm <= MAX_RPM:
        raise InvalidRequestError(f"--rpm must be between 1 and {MAX_RPM:,} requests a minute.")
    for m in models or []:
        if not _MODEL.match(m):
            raise InvalidRequestError(f"model {m!r}: a fleet model or tier name (letters, digits, '_.:/-').")


class KeyStore:
    """The key table: a SQLite file (default ``keys.db`` beside the ledger) or a PostgreSQL URL."""

    def __init__(self, target: str | Path) -> None:
        self.path: str | Path = target if is_url(target) else Path(target).expanduser()
        new = not is_url(target) and not Path(self.path).exists()
        try:
            self.db = Database(self.path)
            if new:
                Path(self.path).chmod(0o600)  # digests only, but nobody else needs to read them
            self.db.migrate("keys", MIGRATIONS)
        except ConfigError as e:
            raise ConfigError(f"cannot open the key store {redact_url(str(self.path))}: {e.message}",
                              hint="set SMALLFLEET_KEYS to a writable file") from e
        self.where = self.db.where

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self, name: str, admin: bool = False, *, rpm: int | None = None,
               models: list[str] | None = None) -> tuple[KeyInfo, str]:
        """A new key: (its info, the key itself, which is shown once and never stored)."""
        if not _NAME.match(name):
            raise InvalidRequestError(f"key name {name!r}: use 1-64 letters, digits, '_', '-', '.'.")
        check_limits(rpm, models)
        if self.db.query("SELECT 1 FROM api_keys WHERE name=?", (name,)):
            raise InvalidRequestError(f"a key named {name!r} exists already.", hint="pick another name, or revoke that one first")
        kid = secrets.token_hex(4)
        key = f"sf-{kid}-{secrets.token_urlsafe(24)}"
        info = KeyInfo(kid, name, admin, time.time(), None, rpm, frozenset(models) if models else None)
        self.db.execute("INSERT INTO api_keys (id, name, digest, admin, created, rpm, models) VALUES (?,?,?,?,?,?,?)",
                        (kid, name, digest(key), int(admin), info.created, rpm, ",".join(sorted(models)) if models else None))
        return info, key

    def list(self) -> list[KeyInfo]:
        return [_info(r) for r in self.db.query(f"SELECT {_COLS} FROM api_keys ORDER BY created")]

    def find(self, name_or_id: str) -> KeyInfo | None:
        """The active key with this name or id."""
        rows = self.db.query(f"SELECT {_COLS} FROM api_keys WHERE (name=? OR id=?) AND revoked IS NULL", (name_or_id, name_or_id))
        return _info(rows[0]) if rows else None

    def limit(self, name_or_id: str, *, rpm: int | None = None, models: builtins.list[str] | None = None,
              clear_rpm: bool = False, clear_models: bool = False) -> KeyInfo | None:
        """Set or clear a key's rate limit and allowed models (what is not named stays as it is)."""
        info = self.find(name_or_id)
        if info is None:
            return None
        check_limits(rpm, models)
        if rpm is not None or clear_rpm:
            self.db.execute("UPDATE api_keys SET rpm=? WHERE id=?", (None if clear_rpm else rpm, info.id))
        if models or clear_models:
            self.db.execute("UPDATE api_keys SET models=? WHERE id=?",
                            (None if clear_models else ",".join(sorted(models or [])), info.id))
        return self.find(info.id)

    def revoke(self, name_or_id: str) -> KeyInfo | None:
        """Revoke by name or id; returns the key revoked, None when no active key matches."""
        info = self.find(name_or_id)
        if info is None:
            return None
        self.db.execute("UPDATE api_keys SET revoked=? WHERE id=?", (time.time(), info.id))
        return next(k for k in self.list() if k.id == info.id)

    def active(self) -> dict[str, KeyInfo]:
        """digest -> key, for every key not revoked."""
        rows = self.db.query(f"SELECT digest, {_COLS} FROM api_keys WHERE revoked IS NULL")
        return {str(r[0]): _info(r[1:]) for r in rows}

    def data_version(self) -> int:
        """Changes when anyone commits to the SQLite file; -1 on PostgreSQL (read the table instead)."""
        if self.db.dialect != "sqlite":
            return -1
        return int(self.db.query("PRAGMA data_version")[0][0])


class KeyRing:
    """The gateway's view of the key store, refreshed at most every ``REFRESH_S`` seconds.

    A SQLite file is not created by the gateway: no file, no keys, and the gateway serves loopback
    only. A PostgreSQL store that cannot be reached keeps the keys last read (and is asked again)."""

    REFRESH_S = 1.0

    def __init__(self, target: str | Path) -> None:
        self.path = target if is_url(target) else Path(target).expanduser()
        self._store: KeyStore | None = None
        self._keys: dict[str, KeyInfo] = {}
        self._version = -2
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
            if not force and now - self._checked < self.REFRESH_S:
                return
            self._checked = now
            try:
                if self._store is None:
                    if not is_url(self.path) and not Path(self.path).is_file():
                        self._keys = {}
                        return
                    self._store = KeyStore(self.path)
                v = self._store.data_version()
                if v != self._version or v == -1 or force:
                    self._keys, self._version = self._store.active(), v
            except DatabaseUnavailable:
                if self._store is None and force:
                    raise
            except Exception:  # the file was replaced or removed: look again next time
                if self._store is not None:
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
