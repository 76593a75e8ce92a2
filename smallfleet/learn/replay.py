"""Replay (S4): captured steps re-run on a cheaper model and compared with the accepted answers.

Steps are replayed through the engine with the model named (checks and guards run as in the
gateway; nothing escalates, nothing is captured or written to the ledger), a conversation's steps in
the order they ran so the model's prompt cache is reused from one step to the next. Each replayed
answer is compared with the accepted one (:mod:`.compare`); each cluster gets its agreement with a
95 % Wilson interval and a recommendation: a cluster moves down only when the interval's lower bound
reaches the target, and a cluster with fewer than ``min_steps`` replayed steps is never judged.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..capture.trace import Trace
from ..errors import SmallfleetError
from ..step import wants_json
from .clusters import Cluster
from .compare import compare
from .fewshot import example_text, examples_message, pick_examples, with_examples
from .surrogate import Surrogates

if TYPE_CHECKING:
    from ..engine import Engine

MIN_STEPS = 20  # below this a cluster's agreement is not evidence enough to move it


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of k successes in n trials ((0, 1) when n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, mid - half), min(1.0, mid + half)


@dataclass
class StepReplay:
    id: str
    trace: str | None
    cluster: str
    original: dict[str, Any]
    replayed: dict[str, Any] | None
    agree: bool
    why: str
    latency_ms: float = 0.0
    tokens_in: int = 0
    passed: bool = False  # the replayed answer passed the step's checks (a cascade would have kept it)
    cost_usd: float = 0.0  # what the replayed attempt cost at the model's price


@dataclass
class ClusterReplay:
    id: str
    name: str
    steps: int
    replayed: int
    agreement: float | None
    ci_low: float
    ci_high: float
    recommendation: str
    move: bool = False
    # right, or wrong and caught by its checks (the cascade then escalates): what starting there risks
    safe: float | None = None
    safe_ci_low: float = 0.0
    safe_ci_high: float = 1.0


@dataclass
class ReplayReport:
    model: str
    tier: str
    target: float
    few_shot: int = 0  # worked examples shown per step (0: the plain prompt)
    steps: list[StepReplay] = field(default_factory=list)
    clusters: list[ClusterReplay] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)  # cluster -> the examples' texts (pseudonymised)
    wall_s: float = 0.0

    @property
    def variant(self) -> str:
        return f"fewshot{self.few_shot}" if self.few_shot else "plain"

    @property
    def overall(self) -> dict[str, Any]:
        n = len(self.steps)
        return {"replayed": n, "agreement": sum(s.agree for s in self.steps) / n if n else None}

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "tier": self.tier, "target": self.target, "variant": self.variant,
                "few_shot": self.few_shot, "wall_s": self.wall_s, "examples": self.examples,
                "steps": [asdict(s) for s in self.steps], "clusters": [asdict(c) for c in self.clusters],
                "overall": self.overall}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ReplayReport:
        """A report written by :meth:`to_json` (kept in the store, or in a file)."""
        return cls(model=d["model"], tier=d["tier"], target=d["target"], few_shot=int(d.get("few_shot") or 0),
                   steps=[StepReplay(**s) for s in d.get("steps", [])], clusters=[ClusterReplay(**c) for c in d.get("clusters", [])],
                   examples=dict(d.get("examples") or {}), wall_s=float(d.get("wall_s") or 0.0))


def pick_steps(traces: Sequence[Trace], sample: int | None, seed: int = 0) -> list[Trace]:
    """Whole conversations, in a seeded random order, until ``sample`` steps; each in time order."""
    convs: dict[str, list[Trace]] = {}
    for t in traces:
        convs.setdefault(t.trace or t.id, []).append(t)
    order = sorted(convs)
    random.Random(seed).shuffle(order)
    out: list[Trace] = []
    for c in order:
        if sample is not None and len(out) >= sample:
            break
        steps = sorted(convs[c], key=lambda t: t.ts)
        out.extend(steps[:None if sample is None else sample - len(out)])
    return out


def recommend(c: Cluster, replayed: list[StepReplay], tier: str, target: float, min_steps: int) -> ClusterReplay:
    n, k = len(replayed), sum(s.agree for s in replayed)
    lo, hi = wilson(k, n)
    ks = sum(s.agree or not s.passed for s in replayed)
    slo, shi = wilson(ks, n)
    if n == 0:
        rec, move = "not replayed", False
    elif n < min_steps:
        rec, move = f"too few steps to judge ({n} < {min_steps}): keep", False
    elif slo >= target:  # a wrong answer its checks catch escalates: starting here is safe
        rec, move = (f"move to {tier or 'this model'} (right or caught by its checks on {ks / n:.0%}, lower bound "
                     f"{slo:.1%} >= {target:.0%}; agreement {k / n:.0%})"), True
    else:
        rec, move = f"keep (right or caught by its checks: lower bound {slo:.1%} < {target:.0%}; agreement {k / n:.0%})", False
    return ClusterReplay(id=c.id, name=c.name, steps=c.size, replayed=n, agreement=k / n if n else None,
                         ci_low=lo, ci_high=hi, recommendation=rec, move=move, safe=ks / n if n else None,
                         safe_ci_low=slo, safe_ci_high=shi)


async def replay(engine: Engine, traces: Sequence[Trace], clusters: Sequence[Cluster], model: str, *,
                 only: Sequence[str] | None = None, sample: int | None = None, target: float = 0.95,
                 min_steps: int = MIN_STEPS, few_shot: int = 0, examples_from: Collection[str] | None = None,
                 surrogates: bool = True, progress: Callable[[int, int, StepReplay], None] | None = None) -> ReplayReport:
    """Replay the steps of ``clusters`` (``only`` these ids) from ``traces`` on ``model``; see the module doc.

    ``few_shot`` > 0: each cluster's ``few_shot`` most typical steps become worked examples in the
    prompt of its other steps (and are not replayed themselves: they would be graded on their own answer).
    ``examples_from``: only these trace ids may be shown as examples (say, the part of the traffic a
    routing decision learns from, so that the part it is judged on never lends its answers).
    ``surrogates``: the step's placeholders are replayed as invented values of their type and put back
    in the answer (:mod:`.surrogate`: a live local model reads real values, not ``<LOCATION_1>``); the
    worked examples keep their placeholders, as the gateway shows them."""
    spec = engine.fleet.spec(model)
    of = {tid: c.id for c in clusters for tid in c.members}
    chosen = set(only) if only else None
    if chosen is not None:
        unknown = chosen - {c.id for c in clusters}
        if unknown:
            raise SmallfleetError(f"no cluster {sorted(unknown)[0]!r}.", hint="`smallfleet learn clusters` lists them")
    pool = [t for t in traces if t.id in of and (chosen is None or of[t.id] in chosen)]
    report = ReplayReport(model=spec.name, tier=spec.tier, target=target, few_shot=few_shot)
    shown: dict[str, dict[str, Any]] = {}
    if few_shot:
        allowed = set(examples_from) if examples_from is not None else None
        held: set[str] = set()
        for c in clusters:
            if chosen is not None and c.id not in chosen:
                continue
            ex = pick_examples([t for t in pool if of[t.id] == c.id and (allowed is None or t.id in allowed)],
                               c.centroid, few_shot)
            if ex:
                report.examples[c.id] = [example_text(t) for t in ex]
                shown[c.id] = examples_message(report.examples[c.id])
                held |= {t.trace or t.id for t in ex}
        pool = [t for t in pool if (t.trace or t.id) not in held]
    steps = pick_steps(pool, sample)
    t0 = time.monotonic()
    for i, t in enumerate(steps, 1):
        sur = Surrogates(t.request, t.final) if surrogates else None
        request = {**(sur.fill(t.request) if sur else t.request), "model": spec.name}
        if of[t.id] in shown:
            request = with_examples(request, shown[of[t.id]])
        try:
            out = await engine.complete(request, step_kind=t.kind, capture=False)
            msg = sur.restore(dict(out.message)) if sur else dict(out.message)
            failed = [f"{v.check}: {v.reason}" for v in out.final.verdicts if v.blocks]
            agree, why = compare(t.final, msg, t.kind, wants_json=wants_json(t.request), failed_checks=failed)
            res = out.final.result
            sr = StepReplay(id=t.id, trace=t.trace, cluster=of[t.id], original=t.final, replayed=msg, agree=agree, why=why,
                            latency_ms=res.latency_ms if res else 0.0, tokens_in=res.tokens_in if res else 0,
                            passed=out.final.passed, cost_usd=out.cost_usd)
        except SmallfleetError as e:  # the step is a disagreement with its reason, not the end of the replay
            sr = StepReplay(id=t.id, trace=t.trace, cluster=of[t.id], original=t.final, replayed=None, agree=False,
                            why=f"failed: {e.message}")
        report.steps.append(sr)
        if progress is not None:
            progress(i, len(steps), sr)
    report.wall_s = time.monotonic() - t0
    by: dict[str, list[StepReplay]] = {}
    for s in report.steps:
        by.setdefault(s.cluster, []).append(s)
    report.clusters = [recommend(c, by.get(c.id, []), spec.tier, target, min_steps) for c in clusters
                       if chosen is None or c.id in chosen]
    return report
