"""How long the router takes to find a request's learned route (goal: <= 1 ms, no model call).

A routing table of 40 learned clusters over 8 agent structures (each: 12 tools, a 6 kB system
prompt, several tasks per structure), written and read back as ``smallfleet learn apply`` does. Timed
per request, on agent-sized requests (system prompt, tools, a 20-message history, a tool result):

- ``RouteTable.lookup``: the structure hash, then the nearest hashed-word centroid (what the router runs);
- the alternative: the same structure hash, then the task text embedded with the shipped MiniLM and
  the nearest MiniLM centroid of that structure's clusters (what a semantic router would run on the
  request path).

Also the share of requests both put in the same cluster as the clustering itself did.

    python bench/route_match.py            # ~1 min
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from _common import RESULTS, environment, parser, write_json

TASKS = ["What is the weather in {x} this weekend?", "Convert {n} US dollars to euros for me.",
         "Book a table for {n} people at {x} tonight.", "Cancel my order {n}, it arrived broken.",
         "Summarise the last {n} e-mails from {x}.", "When does the train from {x} leave tomorrow?"]
PLACES = ["Lyon", "Oslo", "Rome", "Porto", "Graz", "Bergen", "Cork", "Turku", "Brno", "Ghent"]


def structure(i: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    system = {"role": "system", "content": f"You are agent {i} of a travel and shopping desk. " + "Follow the policy. " * 300}
    tools = [{"type": "function", "function": {"name": f"tool_{i}_{k}", "description": "does a thing " * 8, "parameters": {
        "type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "number"}}}}} for k in range(12)]
    return system, tools


def request(system: dict[str, Any], tools: list[dict[str, Any]], task: str, rng: random.Random) -> dict[str, Any]:
    q = task.format(x=rng.choice(PLACES), n=rng.randint(2, 900))
    history: list[dict[str, Any]] = []
    for j in range(9):
        history += [{"role": "user", "content": f"earlier question {j} about {rng.choice(PLACES)}"},
                    {"role": "assistant", "content": f"earlier answer {j}"}]
    return {"messages": [system, *history, {"role": "user", "content": q}], "tools": tools}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--json", default=str(RESULTS / "route_match.json"))
    args = ap.parse_args()

    from smallfleet.capture.trace import Trace, structure_signature, task_text
    from smallfleet.learn import cluster_traces
    from smallfleet.learn.table import RouteTable, build_table
    from smallfleet.retrieval.embed import Embedder

    rng = random.Random(0)
    traces = []
    task_of: dict[str, str] = {}
    for s in range(8):
        system, tools = structure(s)
        for t_i, task in enumerate(TASKS[: 3 + s % 4]):
            for k in range(15):
                req = request(system, tools, task, rng)
                traces.append(Trace(id=f"s{s}t{t_i}k{k}", kind="tool_choice", request=req, ts=float(len(traces)),
                                    final={"role": "assistant", "content": "ok"}))
                task_of[traces[-1].id] = task
    emb = Embedder()
    clusters = cluster_traces(traces, emb.embed)
    replays = [{"tier": "small", "clusters": [{"id": c.id, "replayed": 40, "agreement": 1.0, "ci_low": 0.96, "ci_high": 1.0}
                                              for c in clusters]}]
    table = build_table(clusters, replays, ("small", "large", "frontier"))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "routes.json"
        path.write_bytes(orjson.dumps(table, option=orjson.OPT_NON_STR_KEYS))
        rt = RouteTable(path, ("small", "large", "frontier"))
        truth = {tid: c.id for c in clusters for tid in c.members}
        # MiniLM centroids of the same clusters, for the alternative
        vec = {t.id: v for t, v in zip(traces, emb.embed([task_text(t.request) for t in traces]))}
        cents = {c.id: np.mean([vec[m] for m in c.members], axis=0) for c in clusters}
        by_sig: dict[str, list[str]] = {}
        for c in clusters:
            by_sig.setdefault(c.signature, []).append(c.id)
        queries = [rng.choice(traces) for _ in range(args.requests)]
        # new requests of a stored step's task (other places, numbers, history): which cluster do they get?
        fresh = [(request(q.request["messages"][0], q.request["tools"], task_of[q.id], rng), truth[q.id]) for q in queries]
        ours, theirs, agree_ours, agree_theirs = [], [], 0, 0
        for (req, _), q in zip(fresh, queries):
            t0 = time.perf_counter()
            route = rt.lookup(req, "tool_choice")
            ours.append((time.perf_counter() - t0) * 1000)
            agree_ours += route is not None and route.cluster == truth[q.id]
            t0 = time.perf_counter()
            cands = by_sig.get(structure_signature(req, "tool_choice"), [])
            v = emb.embed([task_text(req)])[0]
            best = max(cands, key=lambda c: float(cents[c] @ v)) if cands else None
            theirs.append((time.perf_counter() - t0) * 1000)
            agree_theirs += best == truth[q.id]

    def stats(xs: list[float]) -> dict[str, float]:
        xs = sorted(xs)
        return {"p50_ms": statistics.median(xs), "p99_ms": xs[int(len(xs) * 0.99) - 1], "mean_ms": statistics.fmean(xs)}

    out = {"environment": environment(), "clusters": len(clusters), "structures": 8, "requests": args.requests,
           "route_table_lookup": {**stats(ours), "same_cluster": agree_ours / args.requests},
           "minilm_nearest_centroid": {**stats(theirs), "same_cluster": agree_theirs / args.requests},
           "request_kb": round(len(orjson.dumps(fresh[0][0])) / 1024, 1)}
    write_json(args.json, out)
    print(f"{len(clusters)} clusters over 8 structures; requests of {out['request_kb']} kB")
    print(f"{'':<28}{'p50 ms':>8}{'p99 ms':>8}")
    for name in ("route_table_lookup", "minilm_nearest_centroid"):
        print(f"{name:<28}{out[name]['p50_ms']:>8.3f}{out[name]['p99_ms']:>8.3f}")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
