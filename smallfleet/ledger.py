"""The ledger: one SQLite row per attempt, written per step in one transaction.

WAL mode so the report can read while the gateway writes. A step's attempts and its run's spend are
committed together or not at all: a crash mid-request leaves no half-written step. The gateway
writes through :meth:`Ledger.record_step_async`: one writer thread commits whatever steps are waiting
in a single transaction (group commit) and answers each request only after its step is on disk.
Budgets per agent run are enforced from an in-memory view of spend seeded from the database.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .errors import BudgetExceededError, ConfigError

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    step_id TEXT NOT NULL,
    run_id TEXT,
    session_id TEXT,
    step_kind TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    model TEXT NOT NULL,
    tier TEXT NOT NULL,
    stand_in INTEGER NOT NULL DEFAULT 0,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL,
    frontier_cost_usd REAL NOT NULL,
    latency_ms REAL NOT NULL,
    checks TEXT NOT NULL,
    passed INTEGER NOT NULL,
    escalated INTEGER NOT NULL,
    final INTEGER NOT NULL,
    error TEXT,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS attempts_step ON attempts(step_id);
CREATE INDEX IF NOT EXISTS attempts_run ON attempts(run_id);
CREATE INDEX IF NOT EXISTS attempts_ts ON attempts(ts);
CREATE TABLE IF NOT EXISTS guard_events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    step_id TEXT NOT NULL,
    run_id TEXT,
    tool TEXT NOT NULL,
    action TEXT NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    argument TEXT,
    mode TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS guard_step ON guard_events(step_id);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    budget_usd REAL,
    spent_usd REAL NOT NULL DEFAULT 0,
    steps INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
"""


@dataclass(frozen=True)
class AttemptRow:
    step_id: str
    run_id: str | None
    session_id: str | None
    step_kind: str
    attempt: int
    model: str
    tier: str
    stand_in: bool
    tokens_in: int
    tokens_out: int
    cached_tokens: int
    cost_usd: float
    frontier_cost_usd: float
    latency_ms: float
    checks: list[dict[str, Any]]
    passed: bool
    escalated: bool
    final: bool
    error: str | None = None
    reason: str | None = None
    guard: tuple[dict[str, Any], ...] = ()  # policy decisions on the final answer's tool calls (and flags)


class Ledger:
    """Thread-safe SQLite ledger. Calls are blocking; the gateway runs them off the event loop."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise ConfigError(f"ledger {self.path} was written by a newer smallfleet (schema {row[0]}).",
                                  hint="upgrade smallfleet or point SMALLFLEET_LEDGER elsewhere")
        except sqlite3.DatabaseError as e:
            raise ConfigError(f"cannot open the ledger {self.path}: {e}.",
                              hint="is it a SQLite file? move it away or set SMALLFLEET_LEDGER") from e
        self._lock = threading.Lock()
        self._spent: dict[str, tuple[float, float | None]] = {}  # run -> (spent, budget)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None
        with self._lock:
            self._db.close()

    # -- budgets ---------------------------------------------------------------------------------
    def _run_state(self, run_id: str) -> tuple[float, float | None]:
        st = self._spent.get(run_id)
        if st is None:
            row = self._db.execute("SELECT spent_usd, budget_usd FROM runs WHERE run_id=?", (run_id,)).fetchone()
            st = (row[0], row[1]) if row else (0.0, None)
            self._spent[run_id] = st
        return st

    def check_budget(self, run_id: str | None, budget: float | None, estimate_usd: float) -> None:
        """Raise BudgetExceededError if this attempt would push the run past its budget."""
        if not run_id:
            return
        with self._lock:
            spent, stored = self._run_state(run_id)
            limit = budget if budget is not None else stored
            if budget is not None and budget != stored:
                self._spent[run_id] = (spent, budget)
            if limit is not None and spent + estimate_usd > limit:
                raise BudgetExceededError(
                    f"run {run_id!r} has spent ${spent:.6f} of its ${limit:.6f} budget; this step would cost "
                    f"about ${estimate_usd:.6f} more.", hint="raise x-smallfleet-budget or start a new run id")

    # -- writes ----------------------------------------------------------------------------------
    def record_step(self, rows: list[AttemptRow], budget: float | None = None) -> None:
        """Write all attempts of one step atomically (and the run's spend)."""
        if rows:
            self._write([(rows, budget)])

    async def record_step_async(self, rows: list[AttemptRow], budget: float | None = None) -> None:
        """Like :meth:`record_step`, through the group-commit writer thread; returns once committed."""
        if not rows:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    self._writer = threading.Thread(target=self._write_loop, name="smallfleet-ledger", daemon=True)
                    self._writer.start()
        self._queue.put((rows, budget, loop, fut))
        await fut

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while True:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(nxt)
            try:
                self._write([(rows, budget) for rows, budget, _, _ in batch])
                errors: list[BaseException | None] = [None] * len(batch)
            except Exception:
                # One bad step must not sink the others: retry each in its own transaction.
                errors = []
                for rows, budget, _, _ in batch:
                    try:
                        self._write([(rows, budget)])
                        errors.append(None)
                    except Exception as e:
                        errors.append(e)
            for (_, _, loop, fut), err in zip(batch, errors):
                loop.call_soon_threadsafe(_settle, fut, err)

    def _write(self, steps: list[tuple[list[AttemptRow], float | None]]) -> None:
        now = time.time()
        vals = [(now, r.step_id, r.run_id, r.session_id, r.step_kind, r.attempt, r.model, r.tier, int(r.stand_in),
                 r.tokens_in, r.tokens_out, r.cached_tokens, r.cost_usd, r.frontier_cost_usd, r.latency_ms,
                 orjson.dumps(r.checks).decode(), int(r.passed), int(r.escalated), int(r.final), r.error, r.reason)
                for rows, _ in steps for r in rows]
        runs = [(rows[0].run_id, budget, sum(r.cost_usd for r in rows)) for rows, budget in steps if rows[0].run_id]
        guard = [(now, r.step_id, r.run_id, g["tool"], g["action"], g["rule"], g["reason"], g.get("argument"), g.get("mode", ""))
                 for rows, _ in steps for r in rows for g in r.guard]
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT INTO attempts (ts, step_id, run_id, session_id, step_kind, attempt, model, tier, stand_in, "
                    "tokens_in, tokens_out, cached_tokens, cost_usd, frontier_cost_usd, latency_ms, checks, passed, "
                    "escalated, final, error, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", vals)
                self._db.executemany(
                    "INSERT INTO runs (run_id, budget_usd, spent_usd, steps, created, updated) VALUES (?,?,?,1,?,?) "
                    "ON CONFLICT(run_id) DO UPDATE SET spent_usd = spent_usd + excluded.spent_usd, steps = steps + 1, "
                    "budget_usd = COALESCE(excluded.budget_usd, budget_usd), updated = excluded.updated",
                    [(run, budget, cost, now, now) for run, budget, cost in runs])
                if guard:
                    self._db.executemany("INSERT INTO guard_events (ts, step_id, run_id, tool, action, rule, reason, argument, mode) "
                                         "VALUES (?,?,?,?,?,?,?,?,?)", guard)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            for run, budget, cost in runs:
                spent, stored = self._spent.get(run, (0.0, None))
                self._spent[run] = (spent + cost, budget if budget is not None else stored)

    # -- reads -----------------------------------------------------------------------------------
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def attempts(self, step_id: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        where, params = [], []
        if step_id:
            where.append("step_id=?")
            params.append(step_id)
        if run_id:
            where.append("run_id=?")
            params.append(run_id)
        sql = "SELECT * FROM attempts" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        with self._lock:
            cur = self._db.execute(sql, tuple(params))
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]


def _settle(fut: asyncio.Future[None], err: BaseException | None) -> None:
    if fut.done():  # the request was cancelled meanwhile; the step is still on disk
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(err)
