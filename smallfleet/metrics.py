"""Prometheus metrics of one gateway process, served at ``GET /metrics`` (text format 0.0.4).

Counters and histograms live in memory, per process: with several replicas, Prometheus scrapes
each one and sums (the usual way; a replica's series carry no state another needs). Label values
come from a closed set (endpoints the gateway routes, step kinds, tiers, model and check names from
the configuration, guard actions and rules), never from request text, so no personal data and no
unbounded cardinality reach the scrape. Recording is a dict update under a lock: nothing on the hot
path formats text.
"""

from __future__ import annotations

import bisect
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .outcome import Outcome

Labels = tuple[tuple[str, str], ...]

# seconds: a gateway answers in ms (no model) to minutes (a long CPU generation)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

HELP: dict[str, tuple[str, str]] = {
    "smallfleet_requests_total": ("counter", "HTTP requests answered, by endpoint and status code."),
    "smallfleet_request_duration_seconds": ("histogram", "Wall time of an HTTP request, by endpoint."),
    "smallfleet_steps_total": ("counter", "Agent steps answered, by step kind, the tier that answered and whether it passed its checks."),
    "smallfleet_step_duration_seconds": ("histogram", "Model time of a step (all its attempts), by step kind and final tier."),
    "smallfleet_attempts_total": ("counter", "Model calls, by model, tier and result (passed, failed checks, error)."),
    "smallfleet_escalations_total": ("counter", "Attempts whose answer was passed up to the next tier, by step kind and tier escalated from."),
    "smallfleet_check_failures_total": ("counter", "Check verdicts that failed, by check."),
    "smallfleet_guard_decisions_total": ("counter", "Tool-call policy decisions on final answers, by action and rule."),
    "smallfleet_tokens_total": ("counter", "Tokens, by model and direction (in, out)."),
    "smallfleet_cost_usd_total": ("counter", "Spend in USD at the configured prices, by model."),
    "smallfleet_frontier_cost_usd_total": ("counter", "What the same steps would have cost on the frontier tier, in USD."),
}


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    items = [*labels, extra] if extra else list(labels)
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in items) + "}" if items else ""


class Metrics:
    """One process's counters and histograms."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = {}
        self._hists: dict[str, dict[Labels, list[float]]] = {}  # per bucket counts, then +Inf, then sum

    def inc(self, name: str, labels: Labels = (), value: float = 1.0) -> None:
        with self._lock:
            series = self._counters.setdefault(name, {})
            series[labels] = series.get(labels, 0.0) + value

    def observe(self, name: str, labels: Labels, seconds: float) -> None:
        with self._lock:
            h = self._hists.setdefault(name, {}).get(labels)
            if h is None:
                h = self._hists[name][labels] = [0.0] * (len(BUCKETS) + 2)
            h[bisect.bisect_left(BUCKETS, seconds)] += 1
            h[-1] += seconds

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        self.inc("smallfleet_requests_total", (("endpoint", endpoint), ("status", str(status))))
        self.observe("smallfleet_request_duration_seconds", (("endpoint", endpoint),), seconds)

    def step(self, outcome: Outcome) -> None:
        """Everything one answered step says: its attempts, escalations, checks, guard, tokens and spend."""
        kind = outcome.step.kind.value
        final = outcome.final
        self.inc("smallfleet_steps_total", (("kind", kind), ("tier", final.tier), ("passed", "true" if final.passed else "false")))
        secs = 0.0
        for a in outcome.attempts:
            model = a.spec.name
            result = "error" if a.error else ("passed" if a.passed else "failed_checks")
            self.inc("smallfleet_attempts_total", (("model", model), ("tier", a.tier), ("result", result)))
            if a.escalated:
                self.inc("smallfleet_escalations_total", (("kind", kind), ("from_tier", a.tier)))
            for v in a.verdicts:
                if not v.passed:
                    self.inc("smallfleet_check_failures_total", (("check", v.check),))
            if a.result is not None:
                self.inc("smallfleet_tokens_total", (("model", model), ("direction", "in")), a.result.tokens_in)
                self.inc("smallfleet_tokens_total", (("model", model), ("direction", "out")), a.result.tokens_out)
                secs += a.result.latency_ms / 1000
            self.inc("smallfleet_cost_usd_total", (("model", model),), a.cost_usd)
            self.inc("smallfleet_frontier_cost_usd_total", (), a.frontier_cost_usd)
        self.observe("smallfleet_step_duration_seconds", (("kind", kind), ("tier", final.tier)), secs)
        if outcome.guard is not None:
            for d in outcome.guard.decisions:
                self.inc("smallfleet_guard_decisions_total", (("action", d.action.value), ("rule", d.rule or "none")))

    def render(self) -> str:
        out: list[str] = []
        with self._lock:
            counters = {k: dict(v) for k, v in self._counters.items()}
            hists = {k: {lab: list(h) for lab, h in v.items()} for k, v in self._hists.items()}
        for name, (kind, help_) in HELP.items():
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            if kind == "counter":
                for labels, v in sorted(counters.get(name, {}).items()):
                    out.append(f"{name}{_fmt(labels)} {v:.10g}")
                continue
            for labels, h in sorted(hists.get(name, {}).items()):
                total = 0.0
                for le, n in zip((*(f"{b:g}" for b in BUCKETS), "+Inf"), h[:-1]):
                    total += n
                    out.append(f"{name}_bucket{_fmt(labels, ('le', le))} {total:.10g}")
                out.append(f"{name}_sum{_fmt(labels)} {h[-1]:.10g}")
                out.append(f"{name}_count{_fmt(labels)} {total:.10g}")
        return "\n".join(out) + "\n"
