"""Per-session facts in one SQLite file, or in the shared PostgreSQL database where several gateway
replicas serve one session, with provenance and history.

A fact is one (key, value) the user stated, with where it came from: the message index (``turn``),
the role of that message (``source``) and a trust label. ``trusted`` facts come from the user's own
words; ``untrusted`` ones from tool results or content the client marked untrusted (a pasted e-mail,
a web page). The two live in separate namespaces: an untrusted fact never supersedes a trusted one,
so an injected "the user's name is Mallory" cannot overwrite what the user said.

Superseding keeps history: the old row stays, ``active`` goes to 0 and ``superseded_by`` points to
the row that replaced it. Every write is one transaction (``BEGIN IMMEDIATE``), so a crash leaves
either the old fact active or the new one, never both or neither. WAL mode lets readers (the gateway
pinning facts) run while a writer commits.

Encryption at rest: given a key (``SMALLFLEET_MEMORY_KEY``, a Fernet key), every fact value is stored
encrypted; keys, labels and provenance stay readable, since supersede and selection match on them and
they say what kind of fact it is, not what the user said. The store remembers that it is encrypted
(and checks the key against a token), so opening it without or with the wrong key is a clear error, not
garbage in prompts. A plaintext store opened with a key is encrypted in place, in one transaction, and
vacuumed so no plaintext stays in free pages. In PostgreSQL the store is always encrypted, with the key
from ``SMALLFLEET_MEMORY_KEY`` (no key file beside a database), and a session's writes take a lock on
the session, so two replicas observing one conversation cannot both supersede the same fact.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .. import atrest
from ..config import MemorySettings
from ..db import Database, Dialect, ddl, is_url, redact_url
from ..errors import ConfigError, InvalidRequestError

Trust = Literal["trusted", "untrusted"]
TRUST_LABELS: tuple[str, ...] = ("trusted", "untrusted")
MAX_SESSION_ID = 200
MAX_KEY = 64
MAX_VALUE = 300

_SCHEMA = """
CREATE TABLE IF NOT EXISTS facts (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL,
    key TEXT NOT NULL,               -- normalised: what supersede matches on
    label TEXT NOT NULL,             -- the key as the extractor wrote it, for display
    value TEXT NOT NULL,
    turn INTEGER NOT NULL,           -- index of the message in the conversation
    source TEXT NOT NULL,            -- role of that message: user, tool, ...
    trust TEXT NOT NULL CHECK (trust IN ('trusted', 'untrusted')),
    created REAL NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    superseded_by INTEGER REFERENCES facts(id)
);
CREATE INDEX IF NOT EXISTS facts_lookup ON facts(session_id, trust, key, active);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,           -- cipher: none | fernet; key_check: a token of KEY_CHECK under the key
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS seen_turns (
    session_id TEXT NOT NULL,
    turn INTEGER NOT NULL,
    digest TEXT NOT NULL,            -- hash of role + text: an edited message at the same index is new
    seen REAL NOT NULL,
    PRIMARY KEY (session_id, turn, digest)
);
"""


def _migrations() -> dict[Dialect, list[str]]:
    # comments out (the statement splitter is plain); in PostgreSQL, beside the ledger, meta is memory_meta
    plain = re.sub(r"--[^\n]*", "", _SCHEMA)
    pg = ddl(plain, "postgresql").replace("EXISTS meta ", "EXISTS memory_meta ")
    return {"sqlite": [plain], "postgresql": [pg]}

KEY_ENV = "SMALLFLEET_MEMORY_KEY"
KEY_CHECK = b"smallfleet fact store"
_NON_WORD = re.compile(r"[^a-z0-9]+")
# Prefixes that name whose attribute it is, not which attribute: "user_name" and "my_name" are "name".
_OWNER_PREFIX = re.compile(r"^(?:(?:the|my|user|users|customer|customers|client|your|own|preferred_user)_)+")
# A few spellings of the same attribute the small model alternates between (seen in extraction runs).
_ALIASES = {
    "full_name": "name", "first_name_and_last_name": "name", "names": "name",
    "order_number": "order_id", "order_no": "order_id", "order": "order_id", "orderid": "order_id",
    "email_address": "email", "e_mail": "email", "mail": "email",
    "phone_number": "phone", "telephone": "phone", "mobile": "phone", "phone_no": "phone",
    "contact_preference": "preferred_contact", "contact_method": "preferred_contact",
    "preferred_contact_method": "preferred_contact", "contact_channel": "preferred_contact",
    "preferred_contact_channel": "preferred_contact",
    "location": "city", "home_city": "city",
    "account_number": "account_id", "account_no": "account_id", "account": "account_id",
}


def normalize_key(key: str) -> str:
    """Canonical form of a fact key: lower snake case, owner prefixes dropped, common aliases merged."""
    k = _NON_WORD.sub("_", key.strip().lower()).strip("_")
    k = _OWNER_PREFIX.sub("", k) or k
    return _ALIASES.get(k, k)[:MAX_KEY]


def check_session_id(session_id: Any) -> str:
    """The session id if usable; a clear error otherwise (it arrives from an HTTP header)."""
    if not isinstance(session_id, str) or not session_id.strip():
        raise InvalidRequestError("session id must be a non-empty string.", param="x-smallfleet-session",
                                  hint="send a stable id per conversation in the x-smallfleet-session header")
    if len(session_id) > MAX_SESSION_ID or not session_id.isprintable():
        raise InvalidRequestError(f"session id must be at most {MAX_SESSION_ID} printable characters.",
                                  param="x-smallfleet-session")
    return session_id


@dataclass(frozen=True)
class Fact:
    id: int
    session_id: str
    key: str
    label: str
    value: str
    turn: int
    source: str
    trust: Trust
    created: float
    active: bool
    superseded_by: int | None

    @property
    def trusted(self) -> bool:
        return self.trust == "trusted"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "session_id": self.session_id, "key": self.key, "label": self.label,
                "value": self.value, "turn": self.turn, "source": self.source, "trust": self.trust,
                "created": self.created, "active": self.active, "superseded_by": self.superseded_by}


_COLS = "id, session_id, key, label, value, turn, source, trust, created, active, superseded_by"


def _fact(row: tuple[Any, ...]) -> Fact:
    return Fact(id=row[0], session_id=row[1], key=row[2], label=row[3], value=row[4], turn=row[5], source=row[6],
                trust=row[7], created=row[8], active=bool(row[9]), superseded_by=row[10])


def _same_value(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


class FactStore:
    """Facts of every session in one SQLite file or a PostgreSQL database. Thread-safe; each write is
    one transaction."""

    def __init__(self, path: str | Path, key: str | bytes | None = None) -> None:
        """Open or create the store; with ``key`` (a Fernet key) fact values are encrypted at rest."""
        self.url = str(path) if is_url(path) else None
        self.path = Path(str(path)).expanduser() if self.url is None else Path("memory")
        self.where = redact_url(self.url) if self.url else str(self.path)
        if self.url is not None and not key:
            raise ConfigError(f"session memory in PostgreSQL ({self.where}) needs its key in {KEY_ENV}.",
                              hint=f"set {KEY_ENV} to a Fernet key (smallfleet keeps no key file beside a database); {atrest.KEY_HINT}")
        self._fernet = _fernet(key) if key else None
        try:
            self.db = Database(self.url or self.path)
            if self.db.dialect == "sqlite":
                self.db.query("PRAGMA secure_delete=ON")  # forgotten facts leave no readable bytes in free pages
            self.db.migrate("memory", _migrations())
        except ConfigError as e:
            cause = e.__cause__ if e.__cause__ is not None else e.message
            raise InvalidRequestError(f"{self.where} is not a usable fact store: {cause}.",
                                      hint="point the memory store at a new file") from e
        self._meta = "meta" if self.db.dialect == "sqlite" else "memory_meta"
        try:
            self._setup_cipher()
        except BaseException:
            self.db.close()
            raise

    @property
    def encrypted(self) -> bool:
        return self._fernet is not None

    def _setup_cipher(self) -> None:
        from cryptography.fernet import InvalidToken

        meta = dict(self.db.query(f"SELECT name, value FROM {self._meta}"))
        cipher = meta.get("cipher", "none")
        if cipher == "fernet":
            if self._fernet is None:
                raise ConfigError(f"the fact store {self.where} is encrypted and no key was given.",
                                  hint=f"set {KEY_ENV} to the key it was created with")
            try:
                self._fernet.decrypt(meta.get("key_check", "").encode())
            except InvalidToken:
                where = KEY_ENV if self.url else f"{KEY_ENV}, else the key file {key_file(self.path)}"
                raise ConfigError(f"the key given ({where}) is not the key the fact store {self.where} was encrypted with.",
                                  hint=f"set {KEY_ENV} to the key it was created with, or point [memory] path at a new file") from None
        elif cipher != "none":
            raise ConfigError(f"the fact store {self.where} uses an unknown cipher {cipher!r}.",
                              hint="it was written by a newer smallfleet; upgrade, or use another file")
        elif self._fernet is not None:
            self._encrypt_in_place()
        elif "cipher" not in meta:
            self.db.execute(f"INSERT INTO {self._meta} (name, value) VALUES ('cipher', 'none') ON CONFLICT (name) DO NOTHING")

    def _encrypt_in_place(self) -> None:
        """A plaintext store opened with a key: encrypt every value in one transaction, then vacuum."""
        assert self._fernet is not None
        with self.db.transaction() as cur:
            if self.db.dialect == "postgresql":  # two replicas starting at once: one encrypts, the other finds it done
                cur.execute(f"LOCK TABLE {self._meta} IN EXCLUSIVE MODE")
                if cur.execute(f"SELECT 1 FROM {self._meta} WHERE name='cipher' AND value='fernet'").fetchone():
                    return
            for fid, value in cur.execute("SELECT id, value FROM facts").fetchall():
                cur.execute("UPDATE facts SET value=? WHERE id=?", (self._fernet.encrypt(value.encode()).decode(), fid))
            for name, value in (("cipher", "fernet"), ("key_check", self._fernet.encrypt(KEY_CHECK).decode())):
                cur.execute(f"INSERT INTO {self._meta} (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                            (name, value))
        if self.db.dialect == "sqlite":
            self.db.query("VACUUM")  # the old plaintext pages, in the file and the WAL, are rewritten
            self.db.query("PRAGMA wal_checkpoint(TRUNCATE)")

    def _seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode() if self._fernet is not None else value

    def _fact(self, row: tuple[Any, ...]) -> Fact:
        if self._fernet is not None:
            row = (*row[:4], self._fernet.decrypt(row[4].encode()).decode(), *row[5:])
        return _fact(row)

    def _session_lock(self, cur: Any, session_id: str) -> None:
        """Writes of one session, one at a time across replicas (SQLite's write lock already is)."""
        if self.db.dialect == "postgresql":
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(?))", ("memory:" + session_id,))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> FactStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes ------------------------------------------------------------------------------------
    def add(self, session_id: str, key: str, value: str, *, turn: int, source: str = "user",
            trust: Trust = "trusted") -> Fact:
        """Store one fact; an active fact with the same normalised key and trust label is superseded.

        Restating the active value is a no-op (returns the existing fact) so replays and repeats do not
        grow the history.
        """
        return self.add_many(session_id, [(key, value)], turn=turn, source=source, trust=trust)[0]

    def add_many(self, session_id: str, items: list[tuple[str, str]], *, turn: int, source: str = "user",
                 trust: Trust = "trusted") -> list[Fact]:
        """Store the facts of one message in one transaction (all or none)."""
        check_session_id(session_id)
        if trust not in TRUST_LABELS:
            raise InvalidRequestError(f"trust label {trust!r} is not one of {', '.join(TRUST_LABELS)}.")
        if not isinstance(turn, int) or isinstance(turn, bool) or turn < 0:
            raise InvalidRequestError(f"turn must be a non-negative integer, got {turn!r}.")
        if not isinstance(source, str) or not source:
            raise InvalidRequestError("source must be the role of the message the fact came from.")
        clean: list[tuple[str, str, str]] = []
        for key, value in items:
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidRequestError("fact key and value must be strings.")
            norm, label, val = normalize_key(key), " ".join(key.split())[:MAX_KEY], " ".join(value.split())[:MAX_VALUE]
            if not norm or not val:
                raise InvalidRequestError(f"fact {key!r}: key and value must not be empty.")
            clean.append((norm, label, val))
        out: list[Fact] = []
        with self.db.transaction() as cur:
            self._session_lock(cur, session_id)
            for norm, label, val in clean:
                row = cur.execute(f"SELECT {_COLS} FROM facts WHERE session_id=? AND trust=? AND key=? AND active=1",
                                  (session_id, trust, norm)).fetchone()
                current = self._fact(row) if row is not None else None
                if current is not None and _same_value(current.value, val):
                    out.append(current)
                    continue
                new_id = cur.execute(
                    "INSERT INTO facts (session_id, key, label, value, turn, source, trust, created, active) "
                    "VALUES (?,?,?,?,?,?,?,?,1) RETURNING id",
                    (session_id, norm, label, self._seal(val), turn, source, trust, time.time())).fetchone()[0]
                if row is not None:
                    cur.execute("UPDATE facts SET active=0, superseded_by=? WHERE id=?", (new_id, row[0]))
                out.append(self._fact(cur.execute(f"SELECT {_COLS} FROM facts WHERE id=?", (new_id,)).fetchone()))
        return out

    def forget(self, session_id: str) -> int:
        """Delete every fact and seen turn of a session; returns how many facts went."""
        check_session_id(session_id)
        with self.db.transaction() as cur:
            self._session_lock(cur, session_id)
            n = int(cur.execute("SELECT COUNT(*) FROM facts WHERE session_id=?", (session_id,)).fetchone()[0])
            cur.execute("UPDATE facts SET superseded_by=NULL WHERE session_id=?", (session_id,))  # no reference left dangling
            cur.execute("DELETE FROM facts WHERE session_id=?", (session_id,))
            cur.execute("DELETE FROM seen_turns WHERE session_id=?", (session_id,))
        return n

    # -- seen turns --------------------------------------------------------------------------------
    def is_seen(self, session_id: str, turn: int, digest: str) -> bool:
        return bool(self.db.query("SELECT 1 FROM seen_turns WHERE session_id=? AND turn=? AND digest=?",
                                  (session_id, turn, digest)))

    def mark_seen(self, session_id: str, turn: int, digest: str) -> None:
        self.db.execute("INSERT INTO seen_turns (session_id, turn, digest, seen) VALUES (?,?,?,?) "
                        "ON CONFLICT (session_id, turn, digest) DO NOTHING", (session_id, turn, digest, time.time()))

    # -- reads -------------------------------------------------------------------------------------
    def facts(self, session_id: str, *, include_history: bool = False, trust: Trust | None = None) -> list[Fact]:
        """Facts of a session, oldest first; active ones only unless ``include_history``."""
        check_session_id(session_id)
        if trust is not None and trust not in TRUST_LABELS:
            raise InvalidRequestError(f"trust label {trust!r} is not one of {', '.join(TRUST_LABELS)}.")
        sql = f"SELECT {_COLS} FROM facts WHERE session_id=?"
        args: list[Any] = [session_id]
        if not include_history:
            sql += " AND active=1"
        if trust is not None:
            sql += " AND trust=?"
            args.append(trust)
        return [self._fact(r) for r in self.db.query(sql + " ORDER BY id", args)]

    def history(self, session_id: str, key: str, *, trust: Trust = "trusted") -> list[Fact]:
        """Every value a key had in a session, oldest first (the last one is the active one)."""
        check_session_id(session_id)
        rows = self.db.query(f"SELECT {_COLS} FROM facts WHERE session_id=? AND trust=? AND key=? ORDER BY id",
                             (session_id, trust, normalize_key(key)))
        return [self._fact(r) for r in rows]

    def sessions(self) -> list[dict[str, Any]]:
        """Every session with facts: id, active facts, all facts (history included), last write; newest first."""
        rows = self.db.query("SELECT session_id, SUM(active), COUNT(*), MAX(created) FROM facts "
                             "GROUP BY session_id ORDER BY MAX(created) DESC")
        return [{"session": sid, "active": int(a), "facts": int(n), "last": float(t)} for sid, a, n, t in rows]

    def keys(self, session_id: str, *, trust: Trust = "trusted") -> list[str]:
        """Active keys of a session: shown to the extractor so an update reuses the same key."""
        rows = self.db.query("SELECT key FROM facts WHERE session_id=? AND trust=? AND active=1 ORDER BY id", (session_id, trust))
        return [r[0] for r in rows]


def _fernet(key: str | bytes) -> Any:
    return atrest.fernet(key, KEY_ENV)


def key_file(store_path: Path) -> Path:
    """Where the generated key of a fact store lives: beside it, ``memory.db`` -> ``memory.key``."""
    return atrest.key_file(store_path)


def resolve_key(env_key: str | None, store_path: Path) -> str:
    """The fact store's Fernet key: ``SMALLFLEET_MEMORY_KEY`` when set, else the key file beside the store,
    created (owner-only, 0600) on first use. So session memory is encrypted at rest by default; a store
    written in plain text by an older version is encrypted in place when it is next opened."""
    return atrest.resolve_key(env_key, store_path)


def open_store(settings: MemorySettings) -> FactStore:
    """The configured fact store: in PostgreSQL with the key from the environment only, in a SQLite
    file with that key or the key file beside it."""
    if settings.url:
        return FactStore(settings.url, key=settings.key)
    return FactStore(settings.store_path, key=resolve_key(settings.key, settings.store_path))
