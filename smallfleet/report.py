"""Reports from the ledger: spend, tier shares, escalation per step kind, savings vs all-frontier."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .config import Config
from .ledger import Ledger


@dataclass
class Report:
    steps: int
    attempts: int
    spend_usd: float
    counterfactual_usd: float
    basis: str
    by_tier: list[dict[str, Any]] = field(default_factory=list)
    by_kind: list[dict[str, Any]] = field(default_factory=list)
    by_model: list[dict[str, Any]] = field(default_factory=list)
    guard: dict[str, Any] = field(default_factory=dict)  # policy decisions: allowed/blocked/confirm, by rule; injections
    run_id: str | None = None
    verified_steps: int = 0       # final answer passed its checks
    unverified_steps: int = 0     # final answer still failing a check (the response said fail:...)
    failed_steps: int = 0         # steps of tasks the agent reported as failed (feedback), or steps reported wrong
    parity_savings_usd: float = 0.0  # savings counting only what succeeded (see build_report)

    @property
    def savings_usd(self) -> float:
        return self.counterfactual_usd - self.spend_usd

    @property
    def savings_pct(self) -> float:
        return 100.0 * self.savings_usd / self.counterfactual_usd if self.counterfactual_usd else 0.0

    @property
    def parity_savings_pct(self) -> float:
        return 100.0 * self.parity_savings_usd / self.counterfactual_usd if self.counterfactual_usd else 0.0

    @property
    def escalation_rate(self) -> float:
        esc = sum(k["escalated"] for k in self.by_kind)
        return esc / self.steps if self.steps else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(savings_usd=self.savings_usd, savings_pct=self.savings_pct, escalation_rate=self.escalation_rate,
                 parity_savings_pct=self.parity_savings_pct)
        return d


def counterfactual_basis(config: Config) -> str:
    f = config.frontier
    pin, pout = config.frontier_price()
    if f.stands_in_for or f.is_local:
        return (f"no frontier API configured: the frontier tier is the local {f.stands_in_for or f.name} standing in; "
                f"'all-frontier' is priced at the reference ${pin:.2f}/${pout:.2f} per 1M tokens in/out")
    return f"'all-frontier' = every step on {f.name} at ${pin:.2f}/${pout:.2f} per 1M tokens in/out"


def build_report(ledger: Ledger, config: Config, run_id: str | None = None, run_prefix: str | None = None) -> Report:
    """The report over the whole ledger, one run, or the runs whose id starts with ``run_prefix`` (one
    API key's runs: ``KEYID:``)."""
    params: tuple[Any, ...]
    if run_id:
        where, params = "WHERE run_id=?", (run_id,)
    elif run_prefix:
        where, params = "WHERE substr(run_id, 1, ?) = ?", (len(run_prefix), run_prefix)
    else:
        where, params = "", ()
    and_ = "AND" if where else "WHERE"
    steps, attempts, spend = ledger.query(
        f"SELECT COUNT(DISTINCT step_id), COUNT(*), COALESCE(SUM(cost_usd),0) FROM attempts {where}", params)[0]
    cf = ledger.query(f"SELECT COALESCE(SUM(frontier_cost_usd),0) FROM attempts {where} {and_} final=1", params)[0][0]
    rep = Report(steps=steps, attempts=attempts, spend_usd=spend, counterfactual_usd=cf,
                 basis=counterfactual_basis(config), run_id=run_id)
    for tier, n, stand_in in ledger.query(
            f"SELECT tier, COUNT(*), MAX(stand_in) FROM attempts {where} {and_} final=1 GROUP BY tier", params):
        rep.by_tier.append({"tier": tier, "steps": n, "share": n / steps if steps else 0.0, "stand_in": bool(stand_in)})
    order = {t: i for i, t in enumerate(config.tiers)}
    rep.by_tier.sort(key=lambda r: order.get(r["tier"], 99))
    for kind, n, esc, cost, lat in ledger.query(
            f"SELECT step_kind, COUNT(DISTINCT step_id), COUNT(DISTINCT CASE WHEN escalated=1 THEN step_id END), "
            f"SUM(cost_usd), AVG(CASE WHEN final=1 THEN latency_ms END) FROM attempts {where} GROUP BY step_kind ORDER BY 2 DESC", params):
        rep.by_kind.append({"step_kind": kind, "steps": n, "escalated": esc, "escalation_rate": esc / n if n else 0.0,
                            "spend_usd": cost, "mean_latency_ms": lat or 0.0})
    for model, tier, n, tin, tout, cost, fails in ledger.query(
            f"SELECT model, tier, COUNT(*), SUM(tokens_in), SUM(tokens_out), SUM(cost_usd), SUM(1-passed) "
            f"FROM attempts {where} GROUP BY model, tier ORDER BY 3 DESC", params):
        rep.by_model.append({"model": model, "tier": tier, "attempts": n, "tokens_in": tin, "tokens_out": tout,
                             "spend_usd": cost, "failed_checks": fails})
    _parity(ledger, rep, where, params)
    g: dict[str, Any] = {"allowed": 0, "blocked": 0, "needs_confirmation": 0, "flagged_only": 0, "injections_flagged": 0,
                         "by_rule": {}}
    for action, rule, mode, n in ledger.query(
            f"SELECT action, rule, mode, COUNT(*) FROM guard_events {where} GROUP BY action, rule, mode", params):
        if action == "injection_flagged":
            g["injections_flagged"] += n
            continue
        if action == "allow":
            g["allowed"] += n
            continue
        key = {"flag": "flagged_only", "confirm": "needs_confirmation"}.get(mode, "blocked")
        g[key] += n
        g["by_rule"][rule] = g["by_rule"].get(rule, 0) + n
    rep.guard = g
    return rep


def _parity(ledger: Ledger, rep: Report, where: str, params: tuple[Any, ...]) -> None:
    """Savings at parity: a saving on a broken answer is a loss.

    Per step: reported wrong (its own feedback, or its run's task reported failed) → its spend is lost
    (the work has to be done again, on the frontier); reported right (step or run) → all-frontier cost
    minus spend; no report → the same when its final answer passed its checks, lost when it did not.
    The latest feedback wins."""
    rows = ledger.query(
        "SELECT a.step_id, MAX(a.run_id), SUM(a.cost_usd), MAX(CASE WHEN a.final=1 THEN a.frontier_cost_usd END), "
        "MAX(CASE WHEN a.final=1 THEN a.passed END), MAX(a.step_kind) FROM attempts a "
        f"{where.replace('run_id', 'a.run_id')} GROUP BY a.step_id", params)
    fb_step, fb_run = feedback(ledger)
    total = 0.0
    for step_id, run_id, spend, cf, passed, kind in rows:
        ok, outcome = step_outcome(step_id, run_id, bool(passed), fb_step, fb_run)
        total += parity_saving(kind, ok, spend or 0.0, cf or 0.0)
        if kind == "memory":
            continue
        if ok:
            rep.verified_steps += 1
        elif outcome == "unverified":
            rep.unverified_steps += 1
        else:
            rep.failed_steps += 1
    rep.parity_savings_usd = total


def feedback(ledger: Ledger) -> tuple[dict[str, bool], dict[str, bool]]:
    """The agent's latest word per step and per run (a feedback row names one or the other)."""
    fb_step: dict[str, bool] = {}
    fb_run: dict[str, bool] = {}
    for step_id, run_id, success in ledger.query("SELECT step_id, run_id, success FROM feedback ORDER BY id"):
        if step_id is not None:
            fb_step[step_id] = bool(success)
        elif run_id is not None:
            fb_run[run_id] = bool(success)
    return fb_step, fb_run


def step_outcome(step_id: str, run_id: str | None, passed: bool, fb_step: dict[str, bool],
                 fb_run: dict[str, bool]) -> tuple[bool, str]:
    """(a success at parity?, its outcome): the agent's word on the step, else on its run, else its final
    answer's checks."""
    said = fb_step.get(step_id, fb_run.get(run_id) if run_id is not None else None)
    if said is None:
        return passed, "verified" if passed else "unverified"
    return said, "reported ok" if said else "reported failed"


def parity_saving(kind: str, ok: bool, spend: float, frontier: float) -> float:
    """A step's saving at parity: all-frontier cost minus spend when it succeeded, its spend lost when it
    did not; session memory's bookkeeping calls only cost (as in the plain figure)."""
    if kind == "memory":
        return -spend
    return frontier - spend if ok else -spend
