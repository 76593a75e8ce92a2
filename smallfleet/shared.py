"""Session state that follows a session to any gateway process: its pseudonym vault and its
Responses-API history, in the shared PostgreSQL database (replicas) or a SQLite file (``serve
--workers``).

Everything stored here is what a user said or what stands for it, so it is Fernet-encrypted with
``SMALLFLEET_SESSION_KEY`` (required for PostgreSQL; a SQLite file may use a key file beside it).
Rows untouched for ``RETENTION_S`` are deleted when a gateway starts.
"""

from __future__ import annotations

import time
from pathlib import Path

from . import atrest
from .db import Database, Dialect, ddl, is_url, redact_url
from .errors import ConfigError

KEY_ENV = "SMALLFLEET_SESSION_KEY"
RETENTION_S = 30 * 86400.0
_V1 = """
CREATE TABLE IF NOT EXISTS session_vaults (
    session TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    data TEXT,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS stored_responses (
    id TEXT PRIMARY KEY,
    owner TEXT,
    data TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS stored_responses_created ON stored_responses(created)
"""
MIGRATIONS: dict[Dialect, list[str]] = {d: [ddl(_V1, d)] for d in ("sqlite", "postgresql")}


class SharedState:
    """The database and cipher that session state shares; thread-safe."""

    def __init__(self, target: str | Path, key: str | None = None) -> None:
        url = str(target) if is_url(target) else None
        where: str | Path = url or Path(target).expanduser()
        self.where = redact_url(url) if url else str(where)
        self._fernet = atrest.cipher(where, key, KEY_ENV, "session state")
        self.db = Database(where)
        self.db.migrate("sessions", MIGRATIONS)
        old = time.time() - RETENTION_S
        self.db.execute("DELETE FROM session_vaults WHERE updated < ?", (old,))
        self.db.execute("DELETE FROM stored_responses WHERE created < ?", (old,))

    @property
    def remote(self) -> bool:
        """A network round trip per use: keep it off the event loop."""
        return self.db.dialect == "postgresql"

    def seal(self, data: bytes) -> str:
        return str(self._fernet.encrypt(data).decode())

    def unseal(self, token: str) -> bytes:
        from cryptography.fernet import InvalidToken

        try:
            return bytes(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise ConfigError(f"session state in {self.where} cannot be read with this key.",
                              hint=f"every gateway process needs the same {KEY_ENV}") from None

    def close(self) -> None:
        self.db.close()
