"""The ledger: one SQLite row per attempt, written per step in one transaction.

WAL mode so the report can read while the gateway writes. A step's attempts and its run's spend are
committed together or not at all: a crash mid-request leaves no half-written step. The gateway
writes through :meth:`Ledger.record_step_async`: one writer thread commits whatever steps are waiting
in a single transaction (group commit) and answers each request only after its step is on disk.
Budgets per agent run are enforced from an in-memory view of spend seeded from the database (and
re-read every few seconds, so an operator's change from the CLI reaches a running gateway). A
client may set a run's budget and lower it, never raise it: raising is ``Ledger.set_budget`` (the
``smallfleet budget`` command). Each attempt *reserves* its estimated cost before it runs, and the
reservation is released when the step's real cost is committed, so concurrent steps of one run cannot
together pass its budget by more than one step's estimate.
"""

from __future__ import annotations

import asyncio
import math
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
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    run_id TEXT,
    step_id TEXT,
    success INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_run ON feedback(run_id);
CREATE INDEX IF NOT EXISTS feedback_step ON feedback(step_id);
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
        self._read_at: dict[str, float] = {}  # run -> when its row was last read from the database
        self._reserved: dict[str, float] = {}  # run -> estimates of attempts not yet committed
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
    REFRESH_S = 2.0  # how stale the in-memory view of a run's row may get (operator changes from the CLI)

    def _run_state(self, run_id: str, fresh: bool = False) -> tuple[float, float | None]:
        """(spent, stored budget) of a run; call with the lock held."""
        st = self._spent.get(run_id)
        now = time.monotonic()
        if st is None or fresh or now - self._read_at.get(run_id, 0.0) > self.REFRESH_S:
            row = self._db.execute("SELECT spent_usd, budget_usd FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is not None:
                st = (row[0], row[1])
            elif st is None:
                st = (0.0, None)
            self._spent[run_id] = st
            self._read_at[run_id] = now
        return st

    def reserve(self, run_id: str | None, budget: float | None, estimate_usd: float) -> float:
        """Reserve ``estimate_usd`` of the run's budget for one attempt, or raise BudgetExceededError.

        ``budget`` is what the client asked for: it applies when it is lower than the stored budget
        (a client may tighten its own run, never loosen it). Returns the amount reserved, to hand back
        with :meth:`release` (or to the step's ledger write, which releases it once committed)."""
        if not run_id:
            return 0.0
        check_budget_value(budget)
        with self._lock:
            spent, stored = self._run_state(run_id)
            limit = _tighter(stored, budget)
            if limit != stored:
                self._spent[run_id] = (spent, limit)
            held = self._reserved.get(run_id, 0.0)
            if limit is not None and spent + held + estimate_usd > limit:
                spent, stored = self._run_state(run_id, fresh=True)  # an operator may have raised it meanwhile
                limit = _tighter(stored, budget)
                if spent + held + estimate_usd > limit:  # type: ignore[operator]
                    raise budget_error(run_id, spent, limit, held, estimate_usd)  # type: ignore[arg-type]
            self._reserved[run_id] = held + estimate_usd
        return estimate_usd

    def check_budget(self, run_id: str | None, budget: float | None, estimate_usd: float) -> None:
        """Raise BudgetExceededError if ``estimate_usd`` more would push the run past its budget (reserves nothing)."""
        self.release(run_id, self.reserve(run_id, budget, estimate_usd))

    def release(self, run_id: str | None, amount: float) -> None:
        """Give back a reservation (the attempt did not happen, or its step failed before it was written)."""
        if not run_id or not amount:
            return
        with self._lock:
            self._release(run_id, amount)

    def _release(self, run_id: str, amount: float) -> None:
        left = self._reserved.get(run_id, 0.0) - amount
        if left > 1e-15:
            self._reserved[run_id] = left
        else:
            self._reserved.pop(run_id, None)

    def set_budget(self, run_id: str, budget: float | None) -> None:
        """The operator's override: set (raise or lower) or clear a run's budget."""
        check_budget_value(budget)
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO runs (run_id, budget_usd, spent_usd, steps, created, updated) VALUES (?,?,0,0,?,?) "
                "ON CONFLICT(run_id) DO UPDATE SET budget_usd = excluded.budget_usd, updated = excluded.updated",
                (run_id, budget, now, now))
            self._spent.pop(run_id, None)

    def run(self, run_id: str) -> dict[str, Any] | None:
        """A run's row: spent, budget, steps, created, updated (None when unknown)."""
        with self._lock:
            row = self._db.execute("SELECT run_id, budget_usd, spent_usd, steps, created, updated FROM runs WHERE run_id=?",
                                   (run_id,)).fetchone()
        if row is None:
            return None
        return dict(zip(("run_id", "budget_usd", "spent_usd", "steps", "created", "updated"), row))

    # -- writes ----------------------------------------------------------------------------------
    def record_step(self, rows: list[AttemptRow], budget: float | None = None, reserved: float = 0.0) -> None:
        """Write all attempts of one step atomically (and the run's spend); ``reserved`` is released with it."""
        if rows:
            try:
                self._write([(rows, budget, reserved)])
            except BaseException:
                self.release(rows[0].run_id, reserved)
                raise

    async def record_step_async(self, rows: list[AttemptRow], budget: float | None = None, reserved: float = 0.0) -> None:
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
        self._queue.put((rows, budget, reserved, loop, fut))
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
                self._write([(rows, budget, reserved) for rows, budget, reserved, _, _ in batch])
                errors: list[BaseException | None] = [None] * len(batch)
            except Exception:
                # One bad step must not sink the others: retry each in its own transaction.
                errors = []
                for rows, budget, reserved, _, _ in batch:
                    try:
                        self._write([(rows, budget, reserved)])
                        errors.append(None)
                    except Exception as e:
                        self.release(rows[0].run_id, reserved)
                        errors.append(e)
            for (_, _, _, loop, fut), err in zip(batch, errors):
                loop.call_soon_threadsafe(_settle, fut, err)

    def _write(self, steps: list[tuple[list[AttemptRow], float | None, float]]) -> None:
        now = time.time()
        vals = [(now, r.step_id, r.run_id, r.session_id, r.step_kind, r.attempt, r.model, r.tier, int(r.stand_in),
                 r.tokens_in, r.tokens_out, r.cached_tokens, r.cost_usd, r.frontier_cost_usd, r.latency_ms,
                 orjson.dumps(r.checks).decode(), int(r.passed), int(r.escalated), int(r.final), r.error, r.reason)
                for rows, _, _ in steps for r in rows]
        runs = [(rows[0].run_id, budget, sum(r.cost_usd for r in rows), reserved)
                for rows, budget, reserved in steps if rows[0].run_id]
        guard = [(now, r.step_id, r.run_id, g["tool"], g["action"], g["rule"], g["reason"], g.get("argument"), g.get("mode", ""))
                 for rows, _, _ in steps for r in rows for g in r.guard]
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
                    # a client's budget only ever tightens the stored one
                    "budget_usd = CASE WHEN budget_usd IS NULL THEN excluded.budget_usd WHEN excluded.budget_usd IS NULL "
                    "THEN budget_usd ELSE MIN(budget_usd, excluded.budget_usd) END, updated = excluded.updated",
                    [(run, budget, cost, now, now) for run, budget, cost, _ in runs])
                if guard:
                    self._db.executemany("INSERT INTO guard_events (ts, step_id, run_id, tool, action, rule, reason, argument, mode) "
                                         "VALUES (?,?,?,?,?,?,?,?,?)", guard)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            for run, budget, cost, reserved in runs:
                if run in self._spent:  # else the next check reads the committed row
                    spent, stored = self._spent[run]
                    self._spent[run] = (spent + cost, _tighter(stored, budget))
                self._release(run, reserved)

    def record_feedback(self, *, run_id: str | None = None, step_id: str | None = None, success: bool) -> bool:
        """The agent's word on a run's task or a step's answer; False when no such run or step is recorded."""
        with self._lock:
            if run_id is not None:
                known = self._db.execute("SELECT 1 FROM attempts WHERE run_id=? LIMIT 1", (run_id,)).fetchone()
            else:
                known = self._db.execute("SELECT 1 FROM attempts WHERE step_id=? LIMIT 1", (step_id,)).fetchone()
            if not known:
                return False
            self._db.execute("INSERT INTO feedback (ts, run_id, step_id, success) VALUES (?,?,?,?)",
                             (time.time(), run_id, step_id, int(success)))
        return True

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


def budget_error(run_id: str, spent: float, limit: float, held: float, estimate: float) -> BudgetExceededError:
    """The run's budget, its spend, what running steps hold and this step's estimate, in readable money;
    retry-after only where the running steps' reservations are what stands in the way."""
    busy = f", and {usd(held)} is held by its steps still running" if held else ""
    waiting_helps = held > 0 and spent + estimate <= limit
    return BudgetExceededError(
        f"run {run_id!r} has spent {usd(spent)} of its {usd(limit)} budget{busy}; this step is estimated at "
        f"{usd(estimate)}, which would pass it.",
        hint=("retry in a moment: the running steps' real cost may leave room" if waiting_helps else
              "start a new run id, or have an operator raise the budget: smallfleet budget RUN USD"),
        retry_after=1.0 if waiting_helps else None)


def check_budget_value(budget: float | None) -> None:
    """A budget is a finite, non-negative number of USD (NaN, infinity and negatives are refused)."""
    from .errors import InvalidRequestError

    if budget is not None and (not isinstance(budget, (int, float)) or isinstance(budget, bool)
                               or not math.isfinite(budget) or budget < 0):
        raise InvalidRequestError(f"a run budget must be a finite, non-negative number of USD, got {budget!r}.",
                                  param="x-smallfleet-budget")


def _tighter(stored: float | None, asked: float | None) -> float | None:
    if stored is None:
        return asked
    return stored if asked is None else min(stored, asked)


def usd(x: float) -> str:
    """Money that stays readable at fractions of a cent: $0.0042, $0.00000031."""
    if x == 0:
        return "$0"
    digits = max(2, -math.floor(math.log10(abs(x))) + 1)
    return f"${x:.{min(digits, 12)}f}"


def _settle(fut: asyncio.Future[None], err: BaseException | None) -> None:
    if fut.done():  # the request was cancelled meanwhile; the step is still on disk
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(err)
