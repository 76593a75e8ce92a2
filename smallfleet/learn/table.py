"""Route by evidence (S4/S6): the learned routing table and its lookup on the request path.

``build_table`` turns clusters and their replays into start tiers: per cluster, the cheapest tier
whose replayed agreement has a 95 % lower bound at or above the target. A cluster whose cheaper tiers
were shown to fall short (the interval's upper bound below the target) starts on the tier above the
highest of them (the cascade would end there anyway, after a wasted attempt). A cluster with too few
replayed steps, or an interval that straddles the target, gets no entry: the hand-set policy stays
in charge, since nothing moves without evidence. A cluster too small to judge alone is judged with
the other clusters of its structure (same kind, tools, schema and system prompt) pooled, where their
steps together are enough (``decide_pooled``): a route for a rare task on the evidence of its kin.

The table is a JSON file (``[learn] routes``, written by ``smallfleet learn apply``); the router asks
:meth:`RouteTable.lookup` once per step: a structure signature and, where needed, a nearest centroid,
no model call. The file is re-read when it changes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..capture.trace import structure_signature, task_text
from ..errors import ConfigError
from .clusters import Cluster
from .fewshot import examples_message
from .match import Entry, Matcher

log = logging.getLogger("smallfleet.learn")

VERSION = 1
RECHECK_S = 5.0  # how often the router looks whether the table file changed
SAFE = "was right or caught by its checks on"
UNDECIDED = "not enough evidence either way (too few replayed steps, or an interval around the target)"


@dataclass(frozen=True)
class Route:
    cluster: str
    name: str
    start: str
    evidence: str  # in words, for x-smallfleet-reason
    examples: dict[str, Any] | None = None  # the worked-examples system message for the start tier, if it needs one
    model: str | None = None  # a fleet model of that tier to start on instead of the tier's own (a fine-tuned one)


@dataclass(frozen=True)
class Decision:
    start: str | None
    why: str
    examples: tuple[str, ...] = ()  # worked examples the start tier needs (few-shot replays)
    model: str | None = None  # the fine-tuned model whose replays earned the route
    few_shot: int = 0  # how many worked examples the replays that earned the route showed


def decide(replays: Mapping[str, Sequence[Mapping[str, Any]]], tiers: Sequence[str], target: float,
           min_steps: int) -> Decision:
    """Where one cluster starts, from its replays per tier (``tier -> [cluster replay, ...]``, one per
    variant: the plain prompt, with worked examples, or a fine-tuned model of the tier). The plain
    prompt wins a tie, then worked examples, then a fine-tuned model."""
    failed: list[tuple[str, Mapping[str, Any]]] = []
    for tier in tiers:
        judged = [r for r in replays.get(tier, ()) if r.get("replayed", 0) >= min_steps]
        if not judged:
            continue
        good = [r for r in judged if r["ci_low"] >= target]
        if good:
            r = min(good, key=lambda r: (bool(r.get("model")), r.get("few_shot", 0), -r["ci_low"]))
            shots = f" with {r['few_shot']} worked examples" if r.get("few_shot") else ""
            who = f"{tier} ({r['model']})" if r.get("model") else tier
            return Decision(tier, f"{who}{shots} {r.get('what', 'agreed on')} {r['agreement']:.0%} of {r['replayed']} replayed steps "
                                  f"(95% lower bound {r['ci_low']:.0%} >= {target:.0%})",
                            tuple(r.get("examples") or ()) if shots else (), r.get("model") or None,
                            int(r.get("few_shot") or 0))
        if all(r["ci_high"] < target for r in judged):  # shown to fall short, not merely not shown to hold
            failed.append((tier, max(judged, key=lambda r: r["ci_high"])))
    if failed:
        top = max(tiers.index(t) for t, _ in failed)
        if top + 1 < len(tiers):
            r = dict(failed)[tiers[top]]
            return Decision(tiers[top + 1], f"{tiers[top]} {r.get('what', 'agreed on')} only {r['agreement']:.0%} of {r['replayed']} replayed "
                                            f"steps (95% upper bound {r['ci_high']:.0%} < {target:.0%})")
    return Decision(None, UNDECIDED)


def pool(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Replays of several clusters on one tier summed per variant (plain, k worked examples, a model)."""
    from .replay import wilson

    acc: dict[tuple[int, str], list[int]] = {}
    for r in rows:
        n = int(r.get("replayed", 0))
        if n <= 0 or r.get("agreement") is None:
            continue
        a = acc.setdefault((int(r.get("few_shot") or 0), str(r.get("model") or "")), [0, 0])
        a[0] += n
        a[1] += round(float(r["agreement"]) * n)
    out = []
    for (shots, model), (total, k) in acc.items():
        lo, hi = wilson(k, total)
        out.append({"replayed": total, "agreement": k / total, "ci_low": lo, "ci_high": hi, "few_shot": shots,
                    "model": model or None, **({"what": rows[0]["what"]} if rows and "what" in rows[0] else {})})
    return out


def decide_pooled(own: Mapping[str, Sequence[Mapping[str, Any]]], kin: Sequence[Mapping[str, Sequence[Mapping[str, Any]]]],
                  tiers: Sequence[str], target: float, min_steps: int) -> Decision:
    """:func:`decide` on a cluster's own replays; where no tier has ``min_steps`` of them, on those of
    its structure's clusters (``kin``, itself included) pooled, unless its own few steps already fall
    short (an upper bound below the target). Worked examples are the cluster's own: a variant it was
    not replayed with is not pooled for it."""
    d = decide(own, tiers, target, min_steps)
    if d.start is not None or any(int(r.get("replayed", 0)) >= min_steps for rs in own.values() for r in rs) or len(kin) < 2:
        return d
    if any(r["ci_high"] < target for rs in own.values() for r in rs):  # its own few steps already say no
        return d
    mine = {(tier, int(r.get("few_shot") or 0), str(r.get("model") or "")): r for tier, rs in own.items() for r in rs}
    pooled: dict[str, list[dict[str, Any]]] = {}
    for tier in tiers:
        for r in pool([r for k in kin for r in k.get(tier, ())]):
            m = mine.get((tier, r["few_shot"], r["model"] or ""))
            if m is None:
                continue
            pooled.setdefault(tier, []).append({**r, "examples": m.get("examples") or ()})
    g = decide(pooled, tiers, target, min_steps)
    if g.start is None:
        return d
    n = max((r["replayed"] for rs in pooled.values() for r in rs), default=0)
    return Decision(g.start, f"judged with its structure's {len(kin)} clusters ({n} steps): {g.why}", g.examples, g.model,
                    g.few_shot)


def build_table(clusters: Sequence[Cluster], replays: Sequence[Mapping[str, Any]], tiers: Sequence[str], *,
                target: float = 0.95, min_steps: int = 20, models: Collection[str] | None = None) -> dict[str, Any]:
    """The routing table (a JSON-able dict) from clusters and replay reports (``ReplayReport.to_json()``).

    A replay of a fine-tuned model (``"model"`` in the report) counts only when ``models`` (the fleet's
    names) holds it: a route may not start on a model the gateway cannot load."""
    per: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for rep in replays:
        if rep.get("model_variant") and (models is None or rep["model_variant"] not in models):
            continue
        for c in rep.get("clusters", []):
            entry = {**c, "few_shot": rep.get("few_shot", 0), "examples": (rep.get("examples") or {}).get(c["id"], []),
                     "model": rep.get("model_variant")}
            if c.get("safe") is not None:  # judged on right-or-caught: a caught answer escalates, as in the cascade
                entry.update(agreement=c["safe"], ci_low=c["safe_ci_low"], ci_high=c["safe_ci_high"], what=SAFE)
            per.setdefault(c["id"], {}).setdefault(rep["tier"], []).append(entry)
    routes, undecided = [], []
    kin: dict[tuple[str, str], list[Mapping[str, Sequence[Mapping[str, Any]]]]] = {}
    for c in clusters:
        kin.setdefault((c.kind, c.signature), []).append(per.get(c.id, {}))
    for c in clusters:
        d = decide_pooled(per.get(c.id, {}), kin[(c.kind, c.signature)], tiers, target, min_steps)
        if d.start is None:
            undecided.append({"cluster": c.id, "name": c.name, "why": d.why})
            continue
        routes.append({"cluster": c.id, "name": c.name, "kind": c.kind, "signature": c.signature, "start": d.start,
                       "evidence": d.why, "examples": list(d.examples), "model": d.model, "centroid": c.centroid})
    return {"version": VERSION, "created": time.time(), "target": target, "min_steps": min_steps, "routes": routes,
            "undecided": undecided}


def shadow_replays(clusters: Sequence[Cluster], shadows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The gateway's shadow verdicts as replay reports (one per tier), counted per cluster member."""
    from .replay import wilson

    of = {tid: c.id for c in clusters for tid in c.members}
    per: dict[str, dict[str, list[bool]]] = {}
    for sh in shadows:
        if sh["id"] in of:
            per.setdefault(sh["tier"], {}).setdefault(of[sh["id"]], []).append(bool(sh["agree"]))
    out = []
    for tier, by in per.items():
        rows = []
        for cid, votes in by.items():
            lo, hi = wilson(sum(votes), len(votes))
            rows.append({"id": cid, "replayed": len(votes), "agreement": sum(votes) / len(votes), "ci_low": lo, "ci_high": hi})
        out.append({"tier": tier, "variant": "shadow", "few_shot": 0, "clusters": rows})
    return out


class RouteTable:
    """The learned routes of a table file, re-read when the file changes."""

    def __init__(self, path: Path, tiers: Sequence[str], models: Collection[str] | None = None) -> None:
        self.path = path
        self.tiers = tuple(tiers)
        self.models = set(models) if models is not None else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._next_check = 0.0
        self._matcher = Matcher(())
        self._routes: dict[str, Route] = {}
        self._reload()

    @property
    def size(self) -> int:
        return len(self._routes)

    def _reload(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._matcher, self._routes = None, Matcher(()), {}
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            table = orjson.loads(self.path.read_bytes())
            if table.get("version") != VERSION:
                raise ConfigError(f"routing table {self.path} has version {table.get('version')!r}; expected {VERSION}.",
                                  hint="write it again with `smallfleet learn apply`")
            entries, routes = [], {}
            for r in table["routes"]:
                if r["start"] not in self.tiers:
                    raise ConfigError(f"routing table {self.path}: cluster {r['cluster']} starts on {r['start']!r}, "
                                      f"not a tier of this fleet ({', '.join(self.tiers)}).",
                                      hint="run `smallfleet learn apply` with this configuration")
                model = r.get("model") or None
                if model is not None and self.models is not None and model not in self.models:
                    raise ConfigError(f"routing table {self.path}: cluster {r['cluster']} starts on the model {model!r}, "
                                      "which is not in the fleet.",
                                      hint=f'add [models."{model}"] (as `smallfleet learn finetune` printed it), or apply again')
                entries.append(Entry(r["cluster"], r["signature"], {int(k): float(v) for k, v in r["centroid"].items()}))
                shots = r.get("examples") or []
                routes[r["cluster"]] = Route(r["cluster"], r["name"], r["start"], r["evidence"],
                                             examples_message([str(x) for x in shots]) if shots else None, model)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
            raise ConfigError(f"routing table {self.path} is not a table written by `smallfleet learn apply` ({e}).",
                              hint="write it again with `smallfleet learn apply`, or remove it") from None
        self._stamp, self._matcher, self._routes = stamp, Matcher(entries), routes

    def lookup(self, request: dict[str, Any], kind: str) -> Route | None:
        """The learned route of a request's cluster, if the table has one."""
        now = time.monotonic()
        if now >= self._next_check:
            with self._lock:
                if now >= self._next_check:
                    self._next_check = now + RECHECK_S
                    try:
                        self._reload()
                    except ConfigError as e:  # a table broken while serving: keep the last good one
                        log.warning("%s (keeping the routes read before)", e)
        if not self._routes:
            return None
        cid = self._matcher.match(structure_signature(request, kind), task_text(request))
        return self._routes.get(cid) if cid is not None else None
