"""The ledger: one row per attempt, written per step in one transaction, in a SQLite file (the
default) or a PostgreSQL database shared by several gateway processes (``[ledger] url`` or
``SMALLFLEET_DATABASE_URL``).

SQLite runs in WAL mode so the report can read while the gateway writes. A step's attempts and its
run's spend are committed together or not at all: a crash mid-request leaves no half-written step.
The gateway writes through :meth:`Ledger.record_step_async`: one writer thread commits whatever steps
are waiting in a single transaction (group commit) and answers each request only after its step is
stored. A client may set a run's budget and lower it, never raise it: raising is
``Ledger.set_budget`` (the ``smallfleet budget`` command).

Budgets are exact across processes: before each model call the step *reserves* its estimated cost
in the database (a ``reservations`` row per step), under a lock on the run's row (SQLite's write
lock, PostgreSQL's ``SELECT ... FOR UPDATE``), against the run's committed spend plus every live
reservation; the step's write commits its real cost and deletes its reservation in one transaction.
So however many steps and replicas run at once, a run passes its budget by at most one step's
estimate error. A reservation of a process that died lapses after ``HOLD_S``. Runs without a budget
take none of this: whether a run has one is cached for ``REFRESH_S``.
"""

from __future__ import annotations

import asyncio
import math
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .db import Database, Dialect, ddl, is_url, redact_url
from .errors import BudgetExceededError, ConfigError
from .keys import ACCOUNT, sliding_wait

_V1 = """
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
INSERT INTO meta (key, value) VALUES ('schema_version', '1') ON CONFLICT (key) DO NOTHING
"""
# budgets held by steps still running, one row per step (any process); meta's version tells an older
# smallfleet, which knows only meta, that this ledger is newer than it
_V2 = """
CREATE TABLE IF NOT EXISTS reservations (
    step_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    amount REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_run ON reservations(run_id);
UPDATE meta SET value = '2' WHERE key = 'schema_version'
"""
# requests per key per minute, for rate limits that hold across replicas
_V3 = """
CREATE TABLE IF NOT EXISTS rate_windows (
    account TEXT NOT NULL,
    minute INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (account, minute)
);
UPDATE meta SET value = '3' WHERE key = 'schema_version'
"""
# what the dashboard shows of a step besides its attempts: the API key it ran under, the trust label of
# its context, and the personal data pseudonymised before a remote call (types and counts, never values)
_V4 = """
ALTER TABLE attempts ADD COLUMN account TEXT;
ALTER TABLE attempts ADD COLUMN trust TEXT;
ALTER TABLE attempts ADD COLUMN privacy TEXT;
CREATE INDEX IF NOT EXISTS attempts_ts ON attempts(ts);
CREATE INDEX IF NOT EXISTS guard_ts ON guard_events(ts);
UPDATE meta SET value = '4' WHERE key = 'schema_version'
"""
MIGRATIONS: dict[Dialect, list[str]] = {d: [ddl(_V1, d), ddl(_V2, d), ddl(_V3, d), ddl(_V4, d)] for d in ("sqlite", "postgresql")}
HOLD_S = 900.0  # a reservation lapses after this long (its process died mid-step)


class _Refused(Exception):
    def __init__(self, wait: float) -> None:
        self.wait = wait


def account_holder(step_id: str) -> str:
    """The reservation row a step holds against its API key's budget (its run's is the step id)."""
    return f"{step_id}@key"


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
    account: str | None = None  # the API key's ledger account (None: a keyless gateway)
    trust: str | None = None  # the trust label of the step's context, when the guard reviewed it
    privacy: dict[str, int] | None = None  # entities pseudonymised before this attempt's remote call, per type


Charge = tuple[list[AttemptRow], "float | None", float, "str | None"]  # rows, client budget, reserved, key account


class Ledger:
    """Thread-safe ledger on a SQLite file or a PostgreSQL URL. Calls are blocking; the gateway runs
    them off the event loop."""

    REFRESH_S = 2.0  # how long "this run has no budget" is believed (an operator may set one meanwhile)

    def __init__(self, target: str | Path) -> None:
        self.path = target if is_url(target) else Path(target).expanduser()
        try:
            self.db = Database(self.path)
            self.db.migrate("ledger", MIGRATIONS)
        except ConfigError as e:
            cause = e.__cause__ if e.__cause__ is not None else e.message
            raise ConfigError(f"cannot open the ledger {redact_url(str(self.path))}: {cause}.",
                              hint="is it a smallfleet ledger? move it away or set SMALLFLEET_LEDGER / SMALLFLEET_DATABASE_URL") from e
        self.where = self.db.where
        self._lock = threading.Lock()
        self._unbudgeted: dict[str, float] = {}  # run -> until when it is believed to have no budget
        self._own = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # this handle's key for reservations made without a step
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None
        self.db.close()

    # -- budgets ---------------------------------------------------------------------------------
    def _no_budget(self, run_id: str) -> bool:
        with self._lock:
            return self._unbudgeted.get(run_id, 0.0) > time.monotonic()

    def _mark(self, run_id: str, budgeted: bool) -> None:
        with self._lock:
            if budgeted:
                self._unbudgeted.pop(run_id, None)
            else:
                if len(self._unbudgeted) > 100_000:  # a long-lived gateway meets many runs: forget the stale ones
                    now = time.monotonic()
                    self._unbudgeted = {r: t for r, t in self._unbudgeted.items() if t > now}
                self._unbudgeted[run_id] = time.monotonic() + self.REFRESH_S

    def reserve(self, run_id: str | None, budget: float | None, estimate_usd: float, key: str | None = None) -> float:
        """Reserve ``estimate_usd`` of the run's budget for one attempt, or raise BudgetExceededError.

        ``budget`` is what the client asked for: it applies when it is lower than the stored budget
        (a client may tighten its own run, never loosen it). ``key`` names the holder (the step id; its
        attempts' reservations add up). Returns the amount reserved, to hand back with :meth:`release`
        (or to the step's ledger write, which deletes the reservation when it commits the real cost)."""
        if not run_id:
            return 0.0
        check_budget_value(budget)
        if budget is None and self._no_budget(run_id):
            return 0.0
        if budget is None:  # most runs have no budget: a plain read says so, without the write lock
            got = self.db.query("SELECT budget_usd FROM runs WHERE run_id=?", (run_id,))
            if not got or got[0][0] is None:
                self._mark(run_id, False)
                return 0.0
        lock = " FOR UPDATE" if self.db.dialect == "postgresql" else ""  # SQLite's write lock already serialises
        now = time.time()
        refused: BudgetExceededError | None = None
        with self.db.transaction() as cur:
            row = cur.execute("SELECT spent_usd, budget_usd FROM runs WHERE run_id=?" + lock, (run_id,)).fetchone()
            if row is None and budget is not None:
                cur.execute("INSERT INTO runs (run_id, budget_usd, spent_usd, steps, created, updated) VALUES (?,?,0,0,?,?) "
                            "ON CONFLICT (run_id) DO NOTHING", (run_id, budget, now, now))
                row = cur.execute("SELECT spent_usd, budget_usd FROM runs WHERE run_id=?" + lock, (run_id,)).fetchone()
            spent, stored = row if row is not None else (0.0, None)
            limit = _tighter(stored, budget)
            if limit is None:
                self._mark(run_id, False)
                return 0.0
            self._mark(run_id, True)
            if limit != stored:  # the client tightened it: kept even when this step is refused
                cur.execute("UPDATE runs SET budget_usd=?, updated=? WHERE run_id=?", (limit, now, run_id))
            held = cur.execute("SELECT COALESCE(SUM(amount), 0) FROM reservations WHERE run_id=? AND expires>?",
                               (run_id, now)).fetchone()[0]
            if spent + held + estimate_usd > limit:
                refused = budget_error(run_id, spent, limit, held, estimate_usd)
            else:
                cur.execute("INSERT INTO reservations (step_id, run_id, amount, expires) VALUES (?,?,?,?) ON CONFLICT (step_id) "
                            "DO UPDATE SET amount = reservations.amount + excluded.amount, expires = excluded.expires",
                            (self._holder(run_id, key), run_id, estimate_usd, now + HOLD_S))
        if refused is not None:
            raise refused
        return estimate_usd

    def _holder(self, run_id: str, key: str | None) -> str:
        """Whose reservation row: the step's id, else one row per run for this handle."""
        return key or f"{self._own}:{run_id}"

    def check_budget(self, run_id: str | None, budget: float | None, estimate_usd: float) -> None:
        """Raise BudgetExceededError if ``estimate_usd`` more would push the run past its budget (holds nothing)."""
        key = f"{self._own}:check:{uuid.uuid4().hex[:8]}"
        self.release(run_id, self.reserve(run_id, budget, estimate_usd, key), key)

    def release(self, run_id: str | None, amount: float, key: str | None = None) -> None:
        """Give back a reservation (the attempt did not happen, or its step failed before it was written)."""
        if not run_id or not amount:
            return
        k = self._holder(run_id, key)
        with self.db.transaction() as cur:
            cur.execute("UPDATE reservations SET amount = amount - ? WHERE step_id=?", (amount, k))
            cur.execute("DELETE FROM reservations WHERE step_id=? AND amount <= ?", (k, 1e-12))

    def set_budget(self, run_id: str, budget: float | None) -> None:
        """The operator's override: set (raise or lower) or clear a run's budget."""
        check_budget_value(budget)
        now = time.time()
        self.db.execute(
            "INSERT INTO runs (run_id, budget_usd, spent_usd, steps, created, updated) VALUES (?,?,0,0,?,?) "
            "ON CONFLICT (run_id) DO UPDATE SET budget_usd = excluded.budget_usd, updated = excluded.updated",
            (run_id, budget, now, now))
        self._mark(run_id, True)

    def run(self, run_id: str) -> dict[str, Any] | None:
        """A run's row: spent, budget, steps, created, updated (None when unknown)."""
        rows = self.db.query("SELECT run_id, budget_usd, spent_usd, steps, created, updated FROM runs WHERE run_id=?", (run_id,))
        if not rows:
            return None
        return dict(zip(("run_id", "budget_usd", "spent_usd", "steps", "created", "updated"), rows[0]))

    # -- writes ----------------------------------------------------------------------------------
    def record_step(self, rows: list[AttemptRow], budget: float | None = None, reserved: float = 0.0,
                    account: str | None = None) -> None:
        """Write all attempts of one step atomically (and the run's spend, and the key's when ``account``
        names it); the step's reservations go with it."""
        if rows:
            try:
                self._write([(rows, budget, reserved, account)])
            except BaseException:
                self._release_step(rows, reserved, account)
                raise

    async def record_step_async(self, rows: list[AttemptRow], budget: float | None = None, reserved: float = 0.0,
                                account: str | None = None) -> None:
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
        self._queue.put(((rows, budget, reserved, account), loop, fut))
        await fut

    def _release_step(self, rows: list[AttemptRow], reserved: float, account: str | None) -> None:
        """A step whose write failed hands back what it held (its run's and its key's)."""
        self.release(rows[0].run_id, reserved, rows[0].step_id)
        if account:
            self.db.execute("DELETE FROM reservations WHERE step_id=?", (account_holder(rows[0].step_id),))

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
                self._write([charge for charge, _, _ in batch])
                errors: list[BaseException | None] = [None] * len(batch)
            except Exception:
                # One bad step must not sink the others: retry each in its own transaction.
                errors = []
                for charge, _, _ in batch:
                    try:
                        self._write([charge])
                        errors.append(None)
                    except Exception as e:
                        try:
                            self._release_step(charge[0], charge[2], charge[3])
                        except Exception:  # the database is gone: the reservation lapses after HOLD_S
                            pass
                        errors.append(e)
            for (_, loop, fut), err in zip(batch, errors):
                loop.call_soon_threadsafe(_settle, fut, err)

    def _write(self, steps: list[Charge]) -> None:
        now = time.time()
        vals = [(now, r.step_id, r.run_id, r.session_id, r.step_kind, r.attempt, r.model, r.tier, int(r.stand_in),
                 r.tokens_in, r.tokens_out, r.cached_tokens, r.cost_usd, r.frontier_cost_usd, r.latency_ms,
                 orjson.dumps(r.checks).decode(), int(r.passed), int(r.escalated), int(r.final), r.error, r.reason,
                 r.account, r.trust, orjson.dumps(r.privacy).decode() if r.privacy is not None else None)
                for rows, _, _, _ in steps for r in rows]
        runs = [(rows[0].run_id, budget, sum(r.cost_usd for r in rows)) for rows, budget, _, _ in steps if rows[0].run_id]
        # a key's spend goes to its own row; its budget is the operator's alone, so never touched here
        runs += [(account, None, sum(r.cost_usd for r in rows)) for rows, _, _, account in steps if account]
        held = [(rows[0].step_id,) for rows, _, reserved, _ in steps if reserved and rows[0].run_id]
        held += [(account_holder(rows[0].step_id),) for rows, _, _, account in steps if account]
        guard = [(now, r.step_id, r.run_id, g["tool"], g["action"], g["rule"], g["reason"], g.get("argument"), g.get("mode", ""))
                 for rows, _, _, _ in steps for r in rows for g in r.guard]
        with self.db.transaction() as cur:
            cur.executemany(
                "INSERT INTO attempts (ts, step_id, run_id, session_id, step_kind, attempt, model, tier, stand_in, "
                "tokens_in, tokens_out, cached_tokens, cost_usd, frontier_cost_usd, latency_ms, checks, passed, "
                "escalated, final, error, reason, account, trust, privacy) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", vals)
            if runs:
                cur.executemany(
                    "INSERT INTO runs (run_id, budget_usd, spent_usd, steps, created, updated) VALUES (?,?,?,1,?,?) "
                    "ON CONFLICT (run_id) DO UPDATE SET spent_usd = runs.spent_usd + excluded.spent_usd, steps = runs.steps + 1, "
                    # a client's budget only ever tightens the stored one
                    "budget_usd = CASE WHEN runs.budget_usd IS NULL THEN excluded.budget_usd WHEN excluded.budget_usd IS NULL "
                    "THEN runs.budget_usd WHEN excluded.budget_usd < runs.budget_usd THEN excluded.budget_usd "
                    "ELSE runs.budget_usd END, updated = excluded.updated",
                    [(run, budget, cost, now, now) for run, budget, cost in runs])
            if held:  # the real cost is in: the step's reservations go in the same transaction
                cur.executemany("DELETE FROM reservations WHERE step_id=?", held)
            if guard:
                cur.executemany("INSERT INTO guard_events (ts, step_id, run_id, tool, action, rule, reason, argument, mode) "
                                "VALUES (?,?,?,?,?,?,?,?,?)", guard)

    # -- rate limits -----------------------------------------------------------------------------
    def take_rate(self, account: str, rpm: int) -> float:
        """Count one request against ``account``'s ``rpm`` limit; 0 when it may go, else the seconds to wait
        (:func:`keys.sliding_wait`). Counted in the database under the minute row's lock, so every
        replica sees the same count; a refused request is not counted."""
        now = time.time()
        minute = int(now // 60)
        frac = now / 60 - minute
        try:
            with self.db.transaction() as cur:
                cur.execute("INSERT INTO rate_windows (account, minute, count) VALUES (?,?,1) ON CONFLICT (account, minute) "
                            "DO UPDATE SET count = rate_windows.count + 1", (account, minute))
                cur_n, prev_n = 0, 0
                for m, n in cur.execute("SELECT minute, count FROM rate_windows WHERE account=? AND minute>=?",
                                        (account, minute - 1)).fetchall():
                    if m == minute:
                        cur_n = n
                    else:
                        prev_n = n
                wait = sliding_wait(prev_n, cur_n, frac, rpm)
                if wait:
                    raise _Refused(wait)
                if cur_n == 1:  # first request of a minute: forget older minutes
                    cur.execute("DELETE FROM rate_windows WHERE account=? AND minute<?", (account, minute - 1))
        except _Refused as r:  # rolled back: the refused request is not counted
            return r.wait
        return 0.0

    def record_feedback(self, *, run_id: str | None = None, step_id: str | None = None, success: bool) -> bool:
        """The agent's word on a run's task or a step's answer; False when no such run or step is recorded."""
        with self.db.transaction() as cur:
            if run_id is not None:
                known = cur.execute("SELECT 1 FROM attempts WHERE run_id=? LIMIT 1", (run_id,)).fetchone()
            else:
                known = cur.execute("SELECT 1 FROM attempts WHERE step_id=? LIMIT 1", (step_id,)).fetchone()
            if not known:
                return False
            cur.execute("INSERT INTO feedback (ts, run_id, step_id, success) VALUES (?,?,?,?)",
                        (time.time(), run_id, step_id, int(success)))
        return True

    # -- reads -----------------------------------------------------------------------------------
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.db.query(sql, params)]

    def attempts(self, step_id: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        where, params = [], []
        if step_id:
            where.append("step_id=?")
            params.append(step_id)
        if run_id:
            where.append("run_id=?")
            params.append(run_id)
        sql = "SELECT * FROM attempts" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        with self.db.reading() as cur:
            c = cur.execute(sql, tuple(params))
            cols = [d[0] for d in c.description]
            return [dict(zip(cols, r)) for r in c.fetchall()]


def budget_error(run_id: str, spent: float, limit: float, held: float, estimate: float) -> BudgetExceededError:
    """The run's budget, its spend, what running steps hold and this step's estimate, in readable money;
    retry-after only where the running steps' reservations are what stands in the way."""
    busy = f", and {usd(held)} is held by its steps still running" if held else ""
    waiting_helps = held > 0 and spent + estimate <= limit
    key = run_id.startswith(ACCOUNT)
    who = f"API key {run_id[len(ACCOUNT):]!r}" if key else f"run {run_id!r}"
    err = BudgetExceededError(
        f"{who} has spent {usd(spent)} of its {usd(limit)} budget{busy}; this step is estimated at "
        f"{usd(estimate)}, which would pass it.",
        hint=("retry in a moment: the running steps' real cost may leave room" if waiting_helps else
              "have an operator raise the key's budget: smallfleet keys limit NAME --budget USD" if key else
              "start a new run id, or have an operator raise the budget: smallfleet budget RUN USD"),
        retry_after=1.0 if waiting_helps else None)
    if key:
        err.code = "key_budget_exceeded"
    return err


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
