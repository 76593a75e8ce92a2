"""Routing policies compared on a held-back split: how many steps start on the cheap tier, and how
often the answer still agrees with the accepted one, at what cost.

The replayed steps are split by time: routing is learned on the first part (``split``) and judged on
the rest. A step started on the cheap tier is simulated as the cascade runs it: its replayed answer
is kept when it passed its checks (and then agrees or not), else the step escalates to the top tier
(it agrees, at both costs). A step started on top agrees at the top cost. Policies:

- ``all-top``: every step on the top tier;
- ``hand-set``: the ``[routing]`` policy's start tier per step kind;
- ``table@T``: the learned table with target T (clusters judged on the first part only);
- ``estimator@p``: the learned estimator, the cheap tier where P(accepted) >= p.
Also: the share of top-tier starts each needs to reach 95 % agreement (RouteLLM's measure), the area
under the agreement-versus-cheap-share curve, and the estimator's calibration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

from ..capture.trace import Trace
from .replay import wilson

TARGETS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)


@dataclass
class Point:
    policy: str
    steps: int
    small_share: float
    agreement: float
    cost_share: float  # spend relative to all-top


@dataclass
class Report:
    learn_steps: int
    eval_steps: int
    points: list[Point] = field(default_factory=list)
    top_needed_for_95: dict[str, float | None] = field(default_factory=dict)
    auc: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "points"}, "points": [asdict(p) for p in self.points]}


@dataclass(frozen=True)
class Variant:
    """One way of running the cheap tier, with its replays (trace id -> agree/passed/cost_usd)."""

    name: str
    replays: Mapping[str, Mapping[str, Any]]
    few_shot: int = 0  # worked examples shown
    model: str | None = None  # a fine-tuned model instead of the tier's own


def _chrono(t: Trace) -> tuple[float, str]:
    return t.ts, t.id


def split_by_time(traces: Sequence[Trace], split: float) -> tuple[list[Trace], list[Trace]]:
    """The first ``split`` of the steps (oldest first) and the rest."""
    steps = sorted(traces, key=_chrono)
    cut = int(len(steps) * split)
    return steps[:cut], steps[cut:]


def split_by_structure(traces: Sequence[Trace], split: float) -> tuple[list[Trace], list[Trace]]:
    """A time split within each step structure (kind and signature): the first ``split`` of each
    structure's steps and the rest. For traffic captured one workload after another, where a plain
    time split would hold back whole workloads the router never saw."""
    groups: dict[tuple[str, str], list[Trace]] = {}
    for t in sorted(traces, key=_chrono):
        groups.setdefault((t.kind, t.signature), []).append(t)
    learn, held = [], []
    for g in groups.values():
        cut = round(len(g) * split)
        learn += g[:cut]
        held += g[cut:]
    return sorted(learn, key=_chrono), sorted(held, key=_chrono)


def _top_cost(t: Trace) -> float:
    return t.frontier_cost_usd or t.cost_usd or 1e-6


def simulate(traces: Sequence[Trace], replays: Mapping[str, Mapping[str, Any]], small: Callable[[Trace], bool],
             name: str) -> Point:
    agree = cost = top = 0.0
    n_small = 0
    for t in traces:
        r = replays[t.id]
        tc = _top_cost(t)
        top += tc
        if not small(t):
            agree += 1
            cost += tc
            continue
        n_small += 1
        if r.get("passed", True):
            agree += bool(r["agree"])
            cost += r.get("cost_usd", 0.0)
        else:  # caught by its checks: the cascade escalates to the top tier
            agree += 1
            cost += r.get("cost_usd", 0.0) + tc
    n = max(1, len(traces))
    return Point(name, len(traces), n_small / n, agree / n, cost / top if top else 0.0)


def _table_small(learn: Sequence[Trace], replays: Mapping[str, Mapping[str, Any]], cluster_of: Mapping[str, str],
                 target: float, min_steps: int) -> set[str]:
    """The clusters `learn apply`'s rule (table.decide) starts on the cheap tier, judged on ``learn`` only."""
    _, chosen, _ = table_variants(learn, [], [Variant("plain", replays)], cluster_of, target, min_steps, "")
    return set(chosen)


def table_variants(learn: Sequence[Trace], held: Sequence[Trace], variants: Sequence[Variant],
                   cluster_of: Mapping[str, str], target: float, min_steps: int, name: str) -> tuple[Point, dict[str, str], int]:
    """The learned table when a cluster may start cheap with any of ``variants`` (the first is the plain
    prompt): table.decide picks per cluster from its replays on ``learn``, and the cluster's ``held``
    steps are judged with the variant it picked. Returns the point, cluster -> variant name, and how
    many held steps were judged with the plain replay because the picked variant did not replay them
    (the conversations its worked examples came from)."""
    from .table import SAFE, decide_pooled

    rows_of: dict[str, dict[str, list[dict[str, Any]]]] = {}
    structure: dict[str, tuple[str, str]] = {}
    for c in sorted({cluster_of.get(t.id, "") for t in learn} - {""}):
        rows = []
        for v in variants:
            # right, or caught by its checks (the cascade escalates it): the risk of starting there
            votes = [bool(v.replays[t.id]["agree"]) or not v.replays[t.id].get("passed", True)
                     for t in learn if cluster_of.get(t.id) == c and t.id in v.replays]
            if votes:
                lo, hi = wilson(sum(votes), len(votes))
                rows.append({"replayed": len(votes), "agreement": sum(votes) / len(votes), "ci_low": lo, "ci_high": hi,
                             "few_shot": v.few_shot, "model": v.model, "what": SAFE})
        rows_of[c] = {"cheap": rows}
    for t in learn:
        if (c := cluster_of.get(t.id, "")) in rows_of:
            structure.setdefault(c, (t.kind, t.signature))
    kin: dict[tuple[str, str], list[Mapping[str, Sequence[Mapping[str, Any]]]]] = {}
    for c, key in structure.items():
        kin.setdefault(key, []).append(rows_of[c])
    chosen: dict[str, str] = {}
    for c, rows_c in rows_of.items():
        d = decide_pooled(rows_c, kin[structure[c]], ("cheap", "top"), target, min_steps)
        if d.start == "cheap":
            chosen[c] = next(v.name for v in variants if v.model == d.model and v.few_shot == d.few_shot)
    by = {v.name: v.replays for v in variants}
    plain = variants[0].replays
    mixed: dict[str, Mapping[str, Any]] = {}
    fallback = 0
    for t in held:
        c = cluster_of.get(t.id, "")
        got = by[chosen[c]].get(t.id) if c in chosen else plain[t.id]
        if got is None:
            got, fallback = plain[t.id], fallback + 1
        mixed[t.id] = got
    return simulate(held, mixed, lambda t: cluster_of.get(t.id, "") in chosen, name), chosen, fallback


def _in_clusters(cluster_of: Mapping[str, str], small: set[str]) -> Callable[[Trace], bool]:
    return lambda t: cluster_of.get(t.id, "") in small


def _at_least(probs: Mapping[str, float], p: float) -> Callable[[Trace], bool]:
    return lambda t: probs[t.id] >= p


def _needed(points: Sequence[Point], prefix: str) -> float | None:
    ok = [1 - p.small_share for p in points if p.policy.startswith(prefix) and p.agreement >= 0.95]
    return min(ok) if ok else None


def _auc(points: Sequence[Point], all_small: float) -> float:
    """Area under agreement against the cheap tier's share, from all-top (0, 1) to all-cheap (1, ·)."""
    pts = sorted({(0.0, 1.0), (1.0, all_small), *((p.small_share, p.agreement) for p in points)})
    return sum((x2 - x1) * (y1 + y2) / 2 for (x1, y1), (x2, y2) in pairwise(pts))


def compare_policies(traces: Sequence[Trace], replays: Mapping[str, Mapping[str, Any]], cluster_of: Mapping[str, str],
                     hand_small: Callable[[Trace], bool], *, split: float = 0.7, min_steps: int = 20,
                     learn_ids: set[str] | None = None) -> Report:
    """``learn_ids``: the steps routing learns from, when not simply the oldest ``split`` of them."""
    from .estimator import train

    steps = [t for t in traces if t.id in replays]
    if learn_ids is None:
        learn, held = split_by_time(steps, split)
    else:
        learn = sorted((t for t in steps if t.id in learn_ids), key=_chrono)
        held = sorted((t for t in steps if t.id not in learn_ids), key=_chrono)
    rep = Report(learn_steps=len(learn), eval_steps=len(held))
    rep.points.append(simulate(held, replays, lambda t: False, "all-top"))
    rep.points.append(simulate(held, replays, lambda t: True, "all-small"))
    rep.points.append(simulate(held, replays, hand_small, "hand-set"))
    for target in TARGETS:
        rep.points.append(simulate(held, replays, _in_clusters(cluster_of, _table_small(learn, replays, cluster_of, target, min_steps)),
                                   f"table@{target:g}"))
    est = train(learn, {t.id: bool(replays[t.id]["agree"]) for t in learn}, cluster_of)
    probs = {t.id: est.p(t, cluster_of.get(t.id)) for t in held}
    for p in (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99):
        rep.points.append(simulate(held, replays, _at_least(probs, p), f"estimator@{p:g}"))
    all_small = next(p.agreement for p in rep.points if p.policy == "all-small")
    for prefix in ("table@", "estimator@"):
        rep.top_needed_for_95[prefix.rstrip("@")] = _needed(rep.points, prefix)
        rep.auc[prefix.rstrip("@")] = _auc([p for p in rep.points if p.policy.startswith(prefix)], all_small)
    if held:
        y = [float(bool(replays[t.id]["agree"])) for t in held]
        ps = [probs[t.id] for t in held]
        bins: list[dict[str, float]] = []
        for lo in (0.0, 0.2, 0.4, 0.6, 0.8):
            sel = [(p, v) for p, v in zip(ps, y) if lo <= p < lo + 0.2 or (lo == 0.8 and p == 1.0)]
            if sel:
                bins.append({"from": lo, "to": lo + 0.2, "steps": len(sel), "predicted": sum(p for p, _ in sel) / len(sel),
                             "observed": sum(v for _, v in sel) / len(sel)})
        rep.calibration = {"brier": sum((p - v) ** 2 for p, v in zip(ps, y)) / len(y), "bins": bins}
    return rep


def plot(rep: Report, path: str) -> None:
    """Agreement against the share of steps started on the cheap tier, one curve per learned policy."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        from ..errors import NotAvailableError

        raise NotAvailableError("the plot needs matplotlib.", hint="pip install 'smallfleet[learn]' (or matplotlib)") from e
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for prefix, style in (("table@", "o-"), ("estimator@", "s--")):
        pts = sorted((p.small_share, p.agreement) for p in rep.points if p.policy.startswith(prefix))
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], style, label=prefix.rstrip("@"))
    for name, marker in (("hand-set", "X"), ("all-top", "^"), ("all-small", "v")):
        p = next((q for q in rep.points if q.policy == name), None)
        if p is not None:
            ax.plot([p.small_share], [p.agreement], marker, markersize=10, label=name)
    for p in rep.points:  # the table with worked examples or an adapter as variants
        if p.policy.startswith("table+"):
            ax.plot([p.small_share], [p.agreement], "*", markersize=13, label=p.policy)
    ax.axhline(0.95, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("steps started on the cheap tier")
    ax.set_ylabel("agreement with the accepted answer")
    ax.set_title(f"routing policies on {rep.eval_steps} held-back steps (learned on {rep.learn_steps})")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
