"""One small face over the two databases smallfleet keeps state in: a SQLite file (the embedded
default) and PostgreSQL (where several gateway processes share state).

Statements are written once, with ``?`` parameters and SQL both dialects read (``ON CONFLICT``,
``CASE``, no two-argument ``MIN``); :class:`Database` rewrites the parameters for psycopg. Schemas
are lists of migrations per dialect, applied in order, each version in one transaction, and recorded
in a ``schema_migrations`` table, so a newer smallfleet upgrades an older database in place and an
older one refuses a newer database instead of misreading it.

PostgreSQL goes through a psycopg connection pool: each :meth:`Database.transaction` borrows one
connection for one transaction. A database that cannot be reached raises :class:`DatabaseUnavailable`
(the gateway answers 503; the transaction is rolled back, so nothing is half-written). psycopg is
imported only when a ``postgresql://`` URL is used.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError, NotAvailableError, SmallfleetError

Dialect = Literal["sqlite", "postgresql"]
URL_SCHEMES = ("postgresql://", "postgres://")


class DatabaseUnavailable(SmallfleetError):
    """The shared database cannot be reached: the request fails whole (503), nothing half-written."""

    status = 503
    type = "service_unavailable"
    code = "database_unavailable"


def is_url(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


def redact_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def _pg_sql(sql: str) -> str:
    # our statements never hold a literal '?' or '%': parameters carry every value
    return sql.replace("?", "%s")


class _PgCursor:
    """A psycopg cursor that reads our ``?`` parameters."""

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _PgCursor:
        self._cur.execute(_pg_sql(sql), tuple(params))
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> _PgCursor:
        if rows:
            self._cur.executemany(_pg_sql(sql), [tuple(r) for r in rows])
        return self

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cur.fetchall())

    @property
    def description(self) -> Any:
        return self._cur.description


class Database:
    """A SQLite file or a PostgreSQL database; thread-safe."""

    def __init__(self, target: str | Path, *, pool_size: int = 8, connect_timeout: float = 5.0) -> None:
        self.dialect: Dialect
        self._lock = threading.RLock()
        self._sqlite: sqlite3.Connection | None = None
        self._pool: Any = None
        if is_url(target):
            self.dialect = "postgresql"
            self.where = redact_url(str(target))
            try:
                import psycopg
                from psycopg_pool import ConnectionPool, PoolTimeout
            except ImportError as e:
                raise NotAvailableError(f"PostgreSQL needs psycopg ({e}).", hint="pip install 'psycopg[binary,pool]'") from e
            self._down: tuple[type[BaseException], ...] = (psycopg.OperationalError, PoolTimeout)
            self._pool = ConnectionPool(str(target), min_size=1, max_size=pool_size, open=False, timeout=connect_timeout,
                                        kwargs={"autocommit": False, "connect_timeout": max(1, round(connect_timeout))})
            try:
                self._pool.open(wait=True, timeout=connect_timeout)
            except Exception as e:
                self._pool.close()
                raise DatabaseUnavailable(f"cannot reach PostgreSQL at {self.where}: {e}.",
                                          hint="is the server up and the URL right (SMALLFLEET_DATABASE_URL)?") from e
        else:
            self.dialect = "sqlite"
            path = Path(target).expanduser()
            self.where = str(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._sqlite = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
                self._sqlite.execute("PRAGMA journal_mode=WAL")
                self._sqlite.execute("PRAGMA synchronous=NORMAL")
            except (sqlite3.DatabaseError, OSError) as e:
                raise ConfigError(f"cannot open the database {path}: {e}.", hint="is it a SQLite file? move it away") from e

    def close(self) -> None:
        with self._lock:
            if self._sqlite is not None:
                self._sqlite.close()
            elif self._pool is not None:
                self._pool.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One transaction: committed when the block ends, rolled back when it raises.

        SQLite takes the write lock up front (``BEGIN IMMEDIATE``), so two processes on one file
        serialise instead of failing half-way; PostgreSQL runs at READ COMMITTED, and a statement that
        must see a row unchanged until commit locks it (``SELECT ... FOR UPDATE``)."""
        if self._sqlite is not None:
            with self._lock:
                self._sqlite.execute("BEGIN IMMEDIATE")
                try:
                    yield self._sqlite
                except BaseException:
                    self._sqlite.execute("ROLLBACK")
                    raise
                self._sqlite.execute("COMMIT")
            return
        try:
            with self._pool.connection() as conn, conn.cursor() as cur:  # commits on a clean exit, else rolls back
                yield _PgCursor(cur)
        except self._down as e:
            raise DatabaseUnavailable(f"PostgreSQL at {self.where} is unreachable: {e}.",
                                      hint="nothing was written; retry once the database is back") from e

    @contextmanager
    def reading(self) -> Iterator[Any]:
        """A cursor for reads: SQLite's connection outside any write lock (a reader never waits for a
        writer), a PostgreSQL transaction."""
        if self._sqlite is not None:
            with self._lock:
                yield self._sqlite
            return
        with self.transaction() as cur:
            yield cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """One statement in its own transaction; its rows, if it returns any."""
        with self.transaction() as cur:
            c = cur.execute(sql, params)
            return list(c.fetchall()) if c.description is not None else []

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read (SQLite: outside any write lock, so a reader never waits for a writer)."""
        with self.reading() as cur:
            return list(cur.execute(sql, tuple(params)).fetchall())

    def migrate(self, component: str, migrations: Mapping[Dialect, Sequence[str]]) -> int:
        """Apply ``component``'s migrations not applied yet (each a script of ``;``-separated
        statements; index = version - 1); returns the version the database is at."""
        steps = migrations[self.dialect]
        self.execute("CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, version INTEGER NOT NULL, "
                     "PRIMARY KEY (component, version))")
        with self.transaction() as cur:
            if self.dialect == "postgresql":  # one process migrates at a time; the others wait, then find it done
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (component,))
            have = cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component=?",
                               (component,)).fetchone()[0]
            if have > len(steps):
                raise ConfigError(f"the {component} tables in {self.where} were written by a newer smallfleet "
                                  f"(schema {have}; this one knows {len(steps)}).", hint="upgrade smallfleet")
            for version in range(have + 1, len(steps) + 1):
                for stmt in _statements(steps[version - 1]):
                    cur.execute(stmt)
                cur.execute("INSERT INTO schema_migrations (component, version) VALUES (?, ?)", (component, version))
        return len(steps)


def ddl(script: str, dialect: Dialect) -> str:
    """A schema written for SQLite, in PostgreSQL's words: identity keys and double precision."""
    if dialect == "sqlite":
        return script
    return script.replace("INTEGER PRIMARY KEY", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY").replace(" REAL", " DOUBLE PRECISION")


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
