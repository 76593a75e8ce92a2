"""The dashboard's read side of the ledger: steps in a filter's scope, summed over time, runs and lists.

Every view starts from one query: the steps in scope, one row each (their attempts summed in SQL), then
Python does the rest, so SQLite and PostgreSQL answer the same and the numbers match ``smallfleet
report``'s rules (savings at parity: a step whose answer failed its checks, or whose task was reported
failed, counts its spend as a loss). The scope is bounded (``MAX_STEPS`` newest steps): a view over
more says so instead of stalling the gateway.

Nothing here reads request text: the ledger holds none (reasons and errors are scrubbed before they
are written), and a step's personal data appears only as types and counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from ..ledger import Ledger
from ..report import feedback, parity_saving, step_outcome

MAX_STEPS = 50_000  # newest steps a view reads; more are left out and the page says so
MAX_ID = 200  # characters of a run, step or key id a filter may name
RANGES: dict[str, float | None] = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0, "all": None}
_BUCKETS = {"1h": 300.0, "24h": 3600.0, "7d": 6 * 3600.0, "30d": 86400.0}


@dataclass(frozen=True)
class Filters:
    """What a view shows: a time range (a named one, or from/to dates), and optionally one run, one API
    key (its id), one step kind or one tier. Parsed from the query string, bounded, never trusted."""
    range: str = "24h"
    since: float | None = None
    until: float | None = None
    run: str | None = None
    key: str | None = None
    kind: str | None = None
    tier: str | None = None

    @property
    def from_day(self) -> str | None:
        return _day(self.since) if self.range == "custom" else None

    @property
    def to_day(self) -> str | None:
        return _day(self.until - 86400) if self.range == "custom" and self.until else None

    def query(self, **change: str | None) -> str:
        """This filter as a query string, with ``change`` applied (for links that keep the filter)."""
        vals = {"range": None if self.range == "custom" else self.range, "run": self.run, "key": self.key, "kind": self.kind,
                "tier": self.tier, "from": self.from_day, "to": self.to_day}
        vals.update(change)
        from urllib.parse import urlencode

        return urlencode({k: v for k, v in vals.items() if v})


def _day(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d") if ts is not None else None


def _date(value: str, what: str) -> float:
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise ValueError(f"{what} must be a date like 2026-12-01") from None


def parse_filters(params: dict[str, list[str]], now: float | None = None) -> Filters:
    """Filters from a parsed query string; ValueError (a 400) says which parameter is wrong."""
    def one(name: str) -> str | None:
        v = (params.get(name) or [""])[0]
        if not v.strip():
            return None
        if len(v) > MAX_ID:
            raise ValueError(f"{name} is longer than {MAX_ID} characters")
        return v.strip()

    now = time.time() if now is None else now
    rng = one("range") or "24h"
    since = until = None
    start, end = one("from"), one("to")
    if start or end:
        rng = "custom"
        since = _date(start, "from") if start else None
        until = _date(end, "to") + 86400 if end else None  # the whole last day
        if since is not None and until is not None and until <= since:
            raise ValueError("to must not be before from")
    elif rng not in RANGES:
        raise ValueError(f"range must be one of {', '.join(RANGES)}")
    else:
        span = RANGES[rng]
        since = now - span if span is not None else None
    return Filters(rng, since, until, one("run"), one("key"), one("kind"), one("tier"))


@dataclass
class StepRow:
    """One step, its attempts summed."""
    step_id: str
    ts: float
    run_id: str | None
    kind: str
    spend: float
    frontier: float
    passed: bool
    tier: str
    model: str
    attempts: int
    account: str | None
    latency_ms: float
    trust: str | None
    tokens_in: int
    tokens_out: int
    outcome: str = ""  # verified | unverified | reported ok | reported failed
    ok: bool = True  # counts as a success at parity

    @property
    def escalated(self) -> bool:
        return self.attempts > 1

    @property
    def key(self) -> str | None:
        return self.account.removeprefix("@key:") if self.account else None


@dataclass
class Scope:
    """The steps a view covers, newest first, and whether the bound cut older ones off."""
    steps: list[StepRow]
    truncated: bool
    filters: Filters
    tiers: list[str] = field(default_factory=list)


def _where(f: Filters, account: str | None) -> tuple[str, list[Any]]:
    conds: list[str] = []
    params: list[Any] = []
    if f.since is not None:
        conds.append("ts >= ?")
        params.append(f.since)
    if f.until is not None:
        conds.append("ts < ?")
        params.append(f.until)
    if f.run:
        conds.append("run_id = ?")
        params.append(f.run)
    if f.key:
        conds.append("account = ?")
        params.append("@key:" + f.key)
    if f.kind:
        conds.append("step_kind = ?")
        params.append(f.kind)
    if account is not None:  # a key that is not an admin sees its own steps only
        conds.append("account = ?")
        params.append(account)
    return ("WHERE " + " AND ".join(conds)) if conds else "", params


def scope(ledger: Ledger, f: Filters, account: str | None = None, tiers: list[str] | None = None) -> Scope:
    """The steps in ``f`` (and, for a non-admin key, under ``account``), with their outcome at parity."""
    where, params = _where(f, account)
    rows = ledger.query(
        "SELECT step_id, MIN(ts), MAX(run_id), MAX(step_kind), SUM(cost_usd), "
        "MAX(CASE WHEN final=1 THEN frontier_cost_usd END), MAX(CASE WHEN final=1 THEN passed END), "
        "MAX(CASE WHEN final=1 THEN tier END), MAX(CASE WHEN final=1 THEN model END), COUNT(*), MAX(account), "
        "SUM(latency_ms), MAX(CASE WHEN final=1 THEN trust END), SUM(tokens_in), SUM(tokens_out) "
        f"FROM attempts {where} GROUP BY step_id ORDER BY MIN(ts) DESC LIMIT ?", (*params, MAX_STEPS + 1))
    steps = [StepRow(r[0], r[1], r[2], r[3], r[4] or 0.0, r[5] or 0.0, bool(r[6]), r[7] or "", r[8] or "", r[9], r[10],
                     r[11] or 0.0, r[12], r[13] or 0, r[14] or 0) for r in rows[:MAX_STEPS]]
    if f.tier:
        steps = [s for s in steps if s.tier == f.tier]
    _outcomes(ledger, steps)
    return Scope(steps, len(rows) > MAX_STEPS, f, list(tiers or []))


def _outcomes(ledger: Ledger, steps: list[StepRow]) -> None:
    """Each step's outcome, by report.py's rule (the agent's word, else the final answer's checks)."""
    if not steps:
        return
    fb_step, fb_run = feedback(ledger)
    for s in steps:
        s.ok, s.outcome = step_outcome(s.step_id, s.run_id, s.passed, fb_step, fb_run)


@dataclass
class Totals:
    steps: int = 0
    spend: float = 0.0
    frontier: float = 0.0
    parity_saved: float = 0.0
    escalated: int = 0
    verified: int = 0
    unverified: int = 0
    failed: int = 0
    latency_ms: float = 0.0

    def add(self, s: StepRow) -> None:
        self.steps += 1
        self.spend += s.spend
        self.escalated += s.escalated
        self.latency_ms += s.latency_ms
        self.parity_saved += parity_saving(s.kind, s.ok, s.spend, s.frontier)
        if s.kind == "memory":  # bookkeeping calls of session memory: no answer to count
            return
        self.frontier += s.frontier
        if s.outcome in ("verified", "reported ok"):
            self.verified += 1
        elif s.outcome == "unverified":
            self.unverified += 1
        else:
            self.failed += 1

    @property
    def saved(self) -> float:
        return self.frontier - self.spend

    @property
    def saved_pct(self) -> float:
        return 100.0 * self.saved / self.frontier if self.frontier else 0.0

    @property
    def parity_pct(self) -> float:
        return 100.0 * self.parity_saved / self.frontier if self.frontier else 0.0

    @property
    def escalation_rate(self) -> float:
        return self.escalated / self.steps if self.steps else 0.0


def totals(steps: list[StepRow]) -> Totals:
    t = Totals()
    for s in steps:
        t.add(s)
    return t


@dataclass
class Bucket:
    start: float
    totals: Totals
    by_tier: dict[str, int]
    by_kind: dict[str, Totals]


def over_time(sc: Scope, now: float | None = None) -> tuple[float, list[Bucket]]:
    """The scope's steps in time buckets (bucket size from the range: 5 min over an hour … a day over
    30 days; about 30 buckets over a custom or unbounded range), oldest first, empty buckets kept."""
    now = time.time() if now is None else now
    f = sc.filters
    if not sc.steps:
        return 3600.0, []
    start = f.since if f.since is not None else min(s.ts for s in sc.steps)
    end = min(f.until, now) if f.until is not None else now
    size = _BUCKETS.get(f.range) or _nice(max(end - start, 60.0) / 30)
    first = start - start % size
    n = min(int((end - first) // size) + 1, 2000)
    buckets = [Bucket(first + i * size, Totals(), {}, {}) for i in range(n)]
    for s in sc.steps:
        i = int((s.ts - first) // size)
        if 0 <= i < n:
            b = buckets[i]
            b.totals.add(s)
            b.by_tier[s.tier] = b.by_tier.get(s.tier, 0) + 1
            b.by_kind.setdefault(s.kind, Totals()).add(s)
    return size, buckets


def _nice(seconds: float) -> float:
    for step in (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400):
        if seconds <= step:
            return float(step)
    return 30 * 86400.0


def by(steps: list[StepRow], attr: str) -> list[tuple[str, Totals]]:
    """Totals per value of a step attribute (kind, tier, model, run_id), most steps first."""
    groups: dict[str, Totals] = {}
    for s in steps:
        groups.setdefault(str(getattr(s, attr) or "—"), Totals()).add(s)
    return sorted(groups.items(), key=lambda kv: -kv[1].steps)


@dataclass
class RunRow:
    run_id: str
    totals: Totals
    first: float
    last: float
    budget: float | None
    spent: float | None
    reported: bool | None

    @property
    def outcome(self) -> str:
        if self.reported is not None:
            return "reported success" if self.reported else "reported failed"
        if self.totals.unverified:
            return f"{self.totals.unverified} unverified"
        return "all verified"


def runs(ledger: Ledger, sc: Scope) -> list[RunRow]:
    """The scope's runs, most recent first, with their budget and the agent's word on them."""
    groups: dict[str, list[StepRow]] = {}
    for s in sc.steps:
        if s.run_id is not None:
            groups.setdefault(s.run_id, []).append(s)
    if not groups:
        return []
    budgets = {r: (b, sp) for r, b, sp in ledger.query("SELECT run_id, budget_usd, spent_usd FROM runs")
               if r in groups}
    said = feedback(ledger)[1]
    out = []
    for run_id, steps in groups.items():
        b, sp = budgets.get(run_id, (None, None))
        out.append(RunRow(run_id, totals(steps), min(s.ts for s in steps), max(s.ts for s in steps), b, sp,
                          said.get(run_id)))
    return sorted(out, key=lambda r: -r.last)


@dataclass
class AttemptView:
    attempt: int
    model: str
    tier: str
    tokens_in: int
    tokens_out: int
    cached_tokens: int
    cost_usd: float
    latency_ms: float
    checks: list[dict[str, Any]]
    passed: bool
    escalated: bool
    final: bool
    error: str | None
    reason: str | None
    trust: str | None
    privacy: dict[str, int] | None
    stand_in: bool


@dataclass
class StepView:
    step: StepRow
    attempts: list[AttemptView]
    guard: list[dict[str, Any]]
    session: str | None


def step(ledger: Ledger, step_id: str, account: str | None = None) -> StepView | None:
    """One step with every attempt, its guard decisions, and the agent's word on it (None: no such step,
    or not this key's)."""
    rows = ledger.query(
        "SELECT attempt, model, tier, tokens_in, tokens_out, cached_tokens, cost_usd, latency_ms, checks, passed, escalated, "
        "final, error, reason, trust, privacy, stand_in, ts, run_id, session_id, step_kind, frontier_cost_usd, account "
        "FROM attempts WHERE step_id = ? ORDER BY attempt", (step_id,))
    if not rows or (account is not None and rows[0][22] != account):
        return None
    atts = [AttemptView(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], orjson.loads(r[8] or "[]"), bool(r[9]), bool(r[10]),
                        bool(r[11]), r[12], r[13], r[14], orjson.loads(r[15]) if r[15] else None, bool(r[16])) for r in rows]
    fin = next((a for a in atts if a.final), atts[-1])
    r0 = rows[0]
    row = StepRow(step_id, min(r[17] for r in rows), r0[18], r0[20], sum(a.cost_usd for a in atts),
                  next((r[21] for r in rows if r[11]), 0.0), fin.passed, fin.tier, fin.model, len(atts), r0[22],
                  sum(a.latency_ms for a in atts), fin.trust, sum(a.tokens_in for a in atts), sum(a.tokens_out for a in atts))
    _outcomes(ledger, [row])
    guard = [{"tool": t, "action": a, "rule": ru, "reason": re_, "argument": arg, "mode": m}
             for t, a, ru, re_, arg, m in ledger.query(
                 "SELECT tool, action, rule, reason, argument, mode FROM guard_events WHERE step_id = ? ORDER BY id", (step_id,))]
    return StepView(row, atts, guard, r0[19])


@dataclass
class GuardRow:
    ts: float
    step_id: str
    run_id: str | None
    tool: str
    action: str
    rule: str
    reason: str
    argument: str | None
    mode: str


def guard_events(ledger: Ledger, sc: Scope, injections: bool) -> list[GuardRow]:
    """Tool calls the guard blocked, flagged or asked to confirm (or, with ``injections``, the injection
    detector's flags) on the scope's steps, newest first."""
    ids = {s.step_id for s in sc.steps}
    if not ids:
        return []
    conds = ["action = 'injection_flagged'" if injections else "action NOT IN ('allow', 'injection_flagged')"]
    params: list[Any] = []
    if sc.filters.since is not None:
        conds.append("ts >= ?")
        params.append(sc.filters.since)
    rows = ledger.query("SELECT ts, step_id, run_id, tool, action, rule, reason, argument, mode FROM guard_events "
                        f"WHERE {' AND '.join(conds)} ORDER BY id DESC LIMIT ?", (*params, MAX_STEPS))
    return [GuardRow(*r) for r in rows if r[1] in ids]


def privacy_totals(ledger: Ledger, f: Filters, account: str | None = None) -> tuple[int, dict[str, int]]:
    """Personal data pseudonymised before remote calls in the scope: (attempts that sent any, count per
    entity type). Types and counts only: the ledger never held the values."""
    where, params = _where(f, account)
    cond = "privacy IS NOT NULL"
    rows = ledger.query(f"SELECT privacy FROM attempts {where + ' AND ' + cond if where else 'WHERE ' + cond} LIMIT ?",
                        (*params, MAX_STEPS))
    per: dict[str, int] = {}
    for (p,) in rows:
        for t, n in (orjson.loads(p) or {}).items():
            per[t] = per.get(t, 0) + int(n)
    return len(rows), dict(sorted(per.items(), key=lambda kv: -kv[1]))


def failing_checks(ledger: Ledger, f: Filters, account: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """The failed, deciding checks of each unverified step's final answer in the scope."""
    where, params = _where(f, account)
    cond = "final = 1 AND passed = 0"
    rows = ledger.query(f"SELECT step_id, checks FROM attempts {where + ' AND ' + cond if where else 'WHERE ' + cond} "
                        "ORDER BY ts DESC LIMIT ?", (*params, MAX_STEPS))
    return {sid: [c for c in orjson.loads(ch or "[]") if not c.get("passed") and not c.get("advisory")] for sid, ch in rows}


def guard_counts(ledger: Ledger, sc: Scope) -> dict[str, int]:
    """The guard's decisions on the scope's steps: allowed, blocked, held for confirmation, flagged only,
    and injections flagged."""
    ids = {s.step_id for s in sc.steps}
    out = {"allowed": 0, "blocked": 0, "needs_confirmation": 0, "flagged_only": 0, "injections_flagged": 0}
    if not ids:
        return out
    cond, params = ("WHERE ts >= ?", (sc.filters.since,)) if sc.filters.since is not None else ("", ())
    for step_id, action, mode in ledger.query(f"SELECT step_id, action, mode FROM guard_events {cond}", params):
        if step_id not in ids:
            continue
        if action == "injection_flagged":
            out["injections_flagged"] += 1
        elif action == "allow":
            out["allowed"] += 1
        else:
            out[{"flag": "flagged_only", "confirm": "needs_confirmation"}.get(mode, "blocked")] += 1
    return out
