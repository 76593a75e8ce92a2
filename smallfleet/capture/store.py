"""The trace store: captured steps in a SQLite file, or in PostgreSQL beside a shared ledger, their
texts encrypted at rest.

Columns hold what the loop filters and counts on (kind, model, verified, feedback, cost, the structure
signature); the texts (request, attempts, final answer) are one Fernet-encrypted JSON payload per
trace, already pseudonymised when they arrive. The key is ``SMALLFLEET_CAPTURE_KEY``, else the key
file beside the store (``traces.key``, created 0600; a PostgreSQL store needs the variable): a store
opened with the wrong key is an error that says so, not garbage. Writes are single transactions; an
import of many traces is one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .. import atrest
from ..db import Database, Dialect, ddl, is_url, redact_url
from ..errors import ConfigError, InvalidRequestError
from .trace import Trace, TraceAttempt

KEY_ENV = "SMALLFLEET_CAPTURE_KEY"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS traces (
    id TEXT PRIMARY KEY,
    trace TEXT,
    ts REAL NOT NULL,
    stored_at REAL NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    tier TEXT NOT NULL DEFAULT '',
    verified INTEGER,
    error TEXT,
    cost_usd REAL NOT NULL DEFAULT 0,
    frontier_cost_usd REAL NOT NULL DEFAULT 0,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    feedback REAL,
    signature TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_ts ON traces(ts);
CREATE INDEX IF NOT EXISTS traces_conv ON traces(trace, ts);
CREATE INDEX IF NOT EXISTS traces_sig ON traces(kind, signature);
CREATE TABLE IF NOT EXISTS learned (name TEXT PRIMARY KEY, ts REAL NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS shadow (
    id TEXT NOT NULL, model TEXT NOT NULL, tier TEXT NOT NULL, agree INTEGER NOT NULL, ts REAL NOT NULL,
    body BLOB NOT NULL, PRIMARY KEY (id, model)
);
"""

def _migrations() -> dict[Dialect, list[str]]:
    # in PostgreSQL the store shares a database with the ledger, which has its own ``meta``
    pg = ddl(_SCHEMA, "postgresql").replace("BLOB", "BYTEA").replace("EXISTS meta ", "EXISTS traces_meta ")
    return {"sqlite": [_SCHEMA], "postgresql": [pg]}


_COLUMNS = ("id", "trace", "ts", "source", "kind", "model", "tier", "verified", "error", "cost_usd",
            "frontier_cost_usd", "tokens_in", "tokens_out", "feedback")


@dataclass(frozen=True)
class StoreStats:
    traces: int
    conversations: int
    first_ts: float | None
    last_ts: float | None
    by_kind: dict[str, int]
    by_source: dict[str, int]
    by_model: dict[str, int]
    verified: int
    unverified: int
    with_feedback: int
    cost_usd: float
    bytes: int


class TraceStore:
    """Thread-safe; ``TraceStore(path)`` opens or creates the file (and its key)."""

    def __init__(self, path: str | Path, key: str | bytes | None = None) -> None:
        self.url = str(path) if is_url(path) else None
        self.path = Path(str(path)).expanduser() if self.url is None else Path("traces")
        self.where = redact_url(self.url) if self.url else str(self.path)
        if self.url is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fernet = atrest.cipher(self.url or self.path, key, KEY_ENV, "a trace store")
        try:
            self.db = Database(self.url or self.path)
            if self.db.dialect == "sqlite":
                self.db.query("PRAGMA secure_delete=ON")  # removed traces leave no readable bytes behind
            self.db.migrate("traces", _migrations())
        except ConfigError as e:
            cause = e.__cause__ if e.__cause__ is not None else e.message
            raise InvalidRequestError(f"{self.where} is not a usable trace store: {cause}.",
                                      hint="point --store (or [capture] store) at a new file") from e
        self._lock = threading.Lock()
        self._order = "rowid" if self.db.dialect == "sqlite" else "id"  # ties in time: insertion order where known
        try:
            self._check_key()
        except BaseException:
            self.db.close()
            raise

    def _check_key(self) -> None:
        from cryptography.fernet import InvalidToken

        table = "meta" if self.db.dialect == "sqlite" else "traces_meta"
        meta = dict(self.db.query(f"SELECT name, value FROM {table}"))
        if "key_check" not in meta:
            self.db.execute(f"INSERT INTO {table} (name, value) VALUES ('version', ?), ('key_check', ?) ON CONFLICT (name) DO NOTHING",
                            (SCHEMA_VERSION, self._fernet.encrypt(b"smallfleet-traces").decode()))
            meta = dict(self.db.query(f"SELECT name, value FROM {table}"))  # another process may have won the race
        if meta.get("version") != SCHEMA_VERSION:
            raise ConfigError(f"the trace store {self.where} has schema version {meta.get('version')!r}; this smallfleet reads {SCHEMA_VERSION}.",
                              hint="upgrade smallfleet, or point [capture] store at a new file")
        try:
            self._fernet.decrypt(meta["key_check"].encode())
        except InvalidToken:
            raise ConfigError(f"the key given ({KEY_ENV}, else the key file {atrest.key_file(self.path)}) is not the key the "
                              f"trace store {self.where} was encrypted with.",
                              hint=f"set {KEY_ENV} to the key it was created with, or use another store file") from None

    # -- writing -------------------------------------------------------------------------------
    def _row(self, t: Trace, now: float) -> tuple[Any, ...]:
        payload = self._fernet.encrypt(orjson.dumps(t.payload()))
        verified = None if t.verified is None else int(t.verified)
        return (t.id, t.trace, t.ts, now, t.source, t.kind, t.model, t.tier, verified, t.error, t.cost_usd,
                t.frontier_cost_usd, t.tokens_in, t.tokens_out, t.feedback, t.signature, payload)

    def add(self, traces: Iterable[Trace]) -> int:
        """Write traces in one transaction; a trace whose id is already stored is skipped. Returns
        how many were new."""
        now = time.time()
        rows = [self._row(t, now) for t in traces]
        with self._lock, self.db.transaction() as cur:
            before = cur.execute("SELECT COUNT(*) FROM traces").fetchone()[0]
            cur.executemany("INSERT INTO traces (id, trace, ts, stored_at, source, kind, model, tier, verified, "
                            "error, cost_usd, frontier_cost_usd, tokens_in, tokens_out, feedback, signature, payload) "
                            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING", rows)
            added = int(cur.execute("SELECT COUNT(*) FROM traces").fetchone()[0]) - int(before)
        return added

    def _changed(self, sql: str, args: tuple[Any, ...]) -> int:
        """Run one change; how many rows it touched (counted before and after, as both databases can)."""
        where = sql.split(" WHERE ", 1)[1] if " WHERE " in sql else "1=1"
        with self._lock, self.db.transaction() as cur:
            k = where.count("?")
            n = int(cur.execute(f"SELECT COUNT(*) FROM traces WHERE {where}", args[len(args) - k:] if k else ()).fetchone()[0])
            cur.execute(sql, args)
        return n

    def set_feedback(self, *, trace_id: str | None = None, conversation: str | None = None, score: float) -> int:
        """The agent's word on one step, or on every step of a conversation (a run). Returns the rows changed."""
        if trace_id is not None:
            return self._changed("UPDATE traces SET feedback=? WHERE id=?", (score, trace_id))
        return self._changed("UPDATE traces SET feedback=? WHERE trace=?", (score, conversation))

    def remove(self, ids: Iterable[str] = (), *, before: float | None = None, everything: bool = False) -> int:
        if everything:
            return self._changed("DELETE FROM traces", ())
        n = 0
        if before is not None:
            n += self._changed("DELETE FROM traces WHERE ts < ?", (before,))
        for i in dict.fromkeys(ids):
            n += self._changed("DELETE FROM traces WHERE id=?", (i,))
        return n

    def purge(self, retention_days: float) -> int:
        """Drop traces stored longer ago than the retention period."""
        return self._changed("DELETE FROM traces WHERE stored_at < ?", (time.time() - retention_days * 86400,))

    # -- reading -------------------------------------------------------------------------------
    def _trace(self, row: tuple[Any, ...]) -> Trace:
        cols = dict(zip(_COLUMNS, row[:len(_COLUMNS)]))
        body = orjson.loads(self._fernet.decrypt(bytes(row[-1])))
        return Trace(
            id=cols["id"], kind=cols["kind"], request=body["request"], final=body["final"], source=cols["source"],
            trace=cols["trace"], ts=cols["ts"], model=cols["model"], tier=cols["tier"],
            verified=None if cols["verified"] is None else bool(cols["verified"]), error=cols["error"],
            cost_usd=cols["cost_usd"], frontier_cost_usd=cols["frontier_cost_usd"], tokens_in=cols["tokens_in"],
            tokens_out=cols["tokens_out"], feedback=cols["feedback"],
            attempts=[TraceAttempt(**a) for a in body.get("attempts", [])])

    def get(self, trace_id: str) -> Trace | None:
        rows = self.db.query(f"SELECT {', '.join(_COLUMNS)}, payload FROM traces WHERE id=?", (trace_id,))
        return self._trace(rows[0]) if rows else None

    def iter(self, *, kind: str | None = None, source: str | None = None, since: float | None = None,
             limit: int | None = None, newest_first: bool = False) -> Iterator[Trace]:
        """Traces in time order (a conversation's steps in the order they ran)."""
        where: list[str] = []
        args: list[Any] = []
        for col, val in (("kind", kind), ("source", source)):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        sql = f"SELECT {', '.join(_COLUMNS)}, payload FROM traces"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY ts DESC, {self._order} DESC" if newest_first else f" ORDER BY ts, {self._order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self.db.query(sql, tuple(args))
        for row in rows:
            yield self._trace(row)

    def count(self) -> int:
        return int(self.db.query("SELECT COUNT(*) FROM traces")[0][0])

    def stats(self) -> StoreStats:
        def q(sql: str) -> list[Any]:
            return self.db.query(sql)

        n, convs, first, last, cost = q("SELECT COUNT(*), COUNT(DISTINCT trace), MIN(ts), MAX(ts), "
                                        "COALESCE(SUM(cost_usd), 0) FROM traces")[0]
        ver = {int(k): int(v) for k, v in q("SELECT COALESCE(verified, -1), COUNT(*) FROM traces GROUP BY 1")}
        fb = q("SELECT COUNT(*) FROM traces WHERE feedback IS NOT NULL")[0][0]

        def by(col: str) -> dict[str, int]:
            return {str(k): int(v) for k, v in q(f"SELECT {col}, COUNT(*) FROM traces GROUP BY {col} ORDER BY 2 DESC")}

        kinds, sources, models = by("kind"), by("source"), by("model")
        if self.url is None:
            size = sum(p.stat().st_size for p in (self.path, Path(str(self.path) + "-wal")) if p.exists())
        else:
            size = int(q("SELECT pg_total_relation_size('traces')")[0][0])
        return StoreStats(traces=n, conversations=convs, first_ts=first, last_ts=last, by_kind=kinds, by_source=sources,
                          by_model=models, verified=ver.get(1, 0), unverified=ver.get(0, 0), with_feedback=fb,
                          cost_usd=float(cost), bytes=size)

    # -- what the learning loop derived (clusters, replays), kept with the traces it came from ----------
    def put_learned(self, name: str, obj: Any) -> None:
        """Keep a derived object (JSON-able; encrypted like the traces) under ``name``."""
        body = self._fernet.encrypt(orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS))
        self.db.execute("INSERT INTO learned (name, ts, body) VALUES (?,?,?) ON CONFLICT (name) DO UPDATE "
                        "SET ts = excluded.ts, body = excluded.body", (name, time.time(), body))

    def get_learned(self, name: str) -> tuple[float, Any] | None:
        """``(when, object)`` kept under ``name``, or None."""
        rows = self.db.query("SELECT ts, body FROM learned WHERE name=?", (name,))
        return (rows[0][0], orjson.loads(self._fernet.decrypt(bytes(rows[0][1])))) if rows else None

    def add_shadow(self, trace_id: str, model: str, tier: str, agree: bool, why: str, message: dict[str, Any] | None) -> None:
        """A shadow replay's verdict on a captured step (the texts already pseudonymised)."""
        body = self._fernet.encrypt(orjson.dumps({"why": why, "replayed": message}))
        self.db.execute("INSERT INTO shadow (id, model, tier, agree, ts, body) VALUES (?,?,?,?,?,?) ON CONFLICT (id, model) "
                        "DO UPDATE SET tier = excluded.tier, agree = excluded.agree, ts = excluded.ts, body = excluded.body",
                        (trace_id, model, tier, int(agree), time.time(), body))

    def shadows(self) -> list[dict[str, Any]]:
        """Every shadow verdict: {id, model, tier, agree, ts, why, replayed}."""
        rows = self.db.query("SELECT id, model, tier, agree, ts, body FROM shadow ORDER BY ts")
        return [{"id": r[0], "model": r[1], "tier": r[2], "agree": bool(r[3]), "ts": r[4],
                 **orjson.loads(self._fernet.decrypt(bytes(r[5])))} for r in rows]

    def learned_names(self, prefix: str = "") -> list[str]:
        return [r[0] for r in self.db.query("SELECT name FROM learned WHERE substr(name, 1, ?) = ? ORDER BY name",
                                            (len(prefix), prefix))]

    def close(self) -> None:
        self.db.close()
