"""The learning loop on captured agent traffic: which steps can start on the small tier, with evidence.

1. Capture: the agent-loop benchmark (bench/agents.py) runs its workloads through ``smallfleet serve``
   on the large tier only (``--configs large``), with ``[capture]`` on: every step of every agent loop,
   the large model's answer taken as the accepted one, pseudonymised into an encrypted trace store.
   (``--store PATH`` reuses a store captured before and skips this.)
2. Curate and cluster (smallfleet.capture.curate, smallfleet.learn.cluster_traces).
3. Replay every curated step on the small tier through the engine, plain and with ``--few-shot K``
   worked examples of its cluster; compare with the accepted answer.
4. Split by time: routing is learned on the first ``--split`` of the steps and judged on the rest —
   all-top, the hand-set ``[routing]`` policy (every kind starts small), the learned table at
   ``--target``, the learned estimator, and the table with few-shot routes. Reported: the share of
   steps started on the small tier and the agreement with the large model's answers (an answer that
   fails its checks escalates, as in the cascade), cost against all-top, and the few-shot gain on the
   small tier's clusters (the same steps, plain vs with examples).
5. Replay speed on long prompts: the replayed steps whose prompts hold at least ``--long-tokens``
   tokens, their wall time (goal: 100 steps of 5k-token prompts in 10 minutes).

Goals (issue #16): >= 70 % of steps on the small tier at >= 95 % agreement on the held-back part;
few-shot raises the small tier's agreement on its clusters by >= 10 points.

    python bench/learn.py                                   # capture (agents.py, ~40 min) + the rest
    python bench/learn.py --store /tmp/learn/traces.db      # reuse a captured store
    python bench/learn.py --workloads suite --limit 10 --sample 40   # a quick look

Writes bench/results/learn.json and bench/results/learn.png (agreement against the small tier's share).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import RESULTS, ROOT, environment, parser, write_json


def capture(store: Path, workloads: str, limit: int | None) -> None:
    env = {**os.environ, "SMALLFLEET_CAPTURE": "on", "SMALLFLEET_TRACES": str(store)}
    cmd = [sys.executable, str(ROOT / "bench" / "agents.py"), "--configs", "large", "--workloads", workloads,
           "--json", str(store.with_name("agents_large.json")), "--plot", str(store.with_name("agents_large.png"))]
    if limit:
        cmd += ["--limit", str(limit)]
    print("capturing:", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, env=env, check=True)


async def replays(cfg: Any, traces: list[Any], clusters: list[Any], few_shot: int, sample: int | None) -> tuple[Any, Any]:
    from smallfleet.engine import Engine
    from smallfleet.learn.replay import replay

    eng = Engine(replace(cfg, capture=replace(cfg.capture, enabled=False)), ledger=False)
    small = cfg.tier_model(cfg.tiers[0]).name
    t0 = time.monotonic()

    def progress(i: int, n: int, s: Any) -> None:
        if i % 10 == 0 or i == n:
            print(f"  {i}/{n} replayed, {time.monotonic() - t0:.0f} s", flush=True)

    try:
        print(f"replaying on {small}, plain", flush=True)
        plain = await replay(eng, traces, clusters, small, sample=sample, progress=progress)
        t0 = time.monotonic()
        print(f"replaying on {small}, {few_shot} worked examples", flush=True)
        shots = await replay(eng, traces, clusters, small, sample=sample, few_shot=few_shot, progress=progress)
    finally:
        await eng.aclose()
    return plain, shots


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--store", help="a trace store captured before (skips the capture)")
    ap.add_argument("--workdir", default="/tmp/smallfleet-learn", help="where the capture's store goes")
    ap.add_argument("--workloads", default="suite,inbox,bfcl,agentdojo", help="agents.py workloads to capture")
    ap.add_argument("--limit", type=int, default=None, help="only the first N tasks of suite and inbox (capture)")
    ap.add_argument("--sample", type=int, default=None, help="replay at most N steps (whole conversations)")
    ap.add_argument("--few-shot", type=int, default=3, help="worked examples per step in the few-shot replay")
    ap.add_argument("--split", type=float, default=0.7, help="share of steps (oldest first) routing learns from")
    ap.add_argument("--target", type=float, default=0.95, help="agreement the table's lower bound must reach")
    ap.add_argument("--min-steps", type=int, default=20, help="steps a cluster needs before the table judges it")
    ap.add_argument("--long-tokens", type=int, default=5000, help="prompt size of the replay-speed measure")
    ap.add_argument("--json", default=str(RESULTS / "learn.json"))
    ap.add_argument("--plot", default=str(RESULTS / "learn.png"))
    args = ap.parse_args()

    from smallfleet.capture import TraceStore, curate
    from smallfleet.config import load_config
    from smallfleet.learn import cluster_traces
    from smallfleet.learn.report import compare_policies, plot, simulate

    t_start = time.monotonic()
    if args.store:
        store_path = Path(args.store)
    else:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
        store_path = work / "traces.db"
        capture(store_path, args.workloads, args.limit)
    st = TraceStore(store_path)
    cur = curate(st.iter())
    st.close()
    traces = cur.kept
    print(f"{len(traces)} curated steps (dropped: {dict(cur.dropped)})", flush=True)
    clusters = cluster_traces(traces)
    print(f"{len(clusters)} clusters", flush=True)
    cfg = load_config(None, env={k: v for k, v in os.environ.items() if k != "SMALLFLEET_CONFIG"})
    plain, shots = asyncio.run(replays(cfg, traces, clusters, args.few_shot, args.sample))
    cluster_of = {tid: c.id for c in clusters for tid in c.members}
    by_id = {t.id: t for t in traces}
    rp = {s.id: {"agree": s.agree, "passed": s.passed, "cost_usd": s.cost_usd} for s in plain.steps}
    rs = {s.id: {"agree": s.agree, "passed": s.passed, "cost_usd": s.cost_usd} for s in shots.steps}
    small = cfg.tiers[0]
    rep = compare_policies([by_id[i] for i in rp], rp, cluster_of, lambda t: cfg.routing[_kind(t.kind)].start == small,
                           split=args.split, min_steps=args.min_steps)
    # the table with few-shot routes: a cluster starts small where the plain replay or the few-shot one
    # reaches the target on the learning part; its held-back steps are judged with the variant chosen
    from smallfleet.learn.replay import wilson

    held_ids = {p for p in rp} - set(sorted(rp, key=lambda i: (by_id[i].ts, i))[:rep.learn_steps])
    learn_ids = set(rp) - held_ids

    def qualifies(results: dict[str, dict[str, Any]], cid: str) -> bool:
        v = [bool(results[i]["agree"]) for i in learn_ids if i in results and cluster_of.get(i) == cid]
        return len(v) >= args.min_steps and wilson(sum(v), len(v))[0] >= args.target

    variant: dict[str, dict[str, dict[str, Any]]] = {}
    for c in clusters:
        if qualifies(rp, c.id):
            variant[c.id] = rp
        elif qualifies(rs, c.id):
            variant[c.id] = rs
    held = [by_id[i] for i in held_ids if cluster_of.get(i) not in variant or i in variant[cluster_of[i]]]
    mixed = {t.id: variant.get(cluster_of.get(t.id, ""), rp).get(t.id, rp[t.id]) for t in held}
    fs_point = simulate(held, mixed, lambda t: cluster_of.get(t.id, "") in variant, f"table+fewshot@{args.target:g}")
    rep.points.append(fs_point)
    # few-shot gain: the same steps (those replayed both ways), per cluster and overall
    both = [i for i in rs if i in rp]
    gain_rows = []
    for c in clusters:
        ids = [i for i in both if cluster_of.get(i) == c.id]
        if ids:
            a = sum(rp[i]["agree"] for i in ids) / len(ids)
            b = sum(rs[i]["agree"] for i in ids) / len(ids)
            gain_rows.append({"cluster": c.id, "name": c.name, "steps": len(ids), "plain": a, "fewshot": b})
    plain_all = sum(rp[i]["agree"] for i in both) / len(both) if both else None
    shots_all = sum(rs[i]["agree"] for i in both) / len(both) if both else None
    # replay speed on long prompts
    long_steps = [s for s in plain.steps if s.tokens_in >= args.long_tokens]
    secs = sum(s.latency_ms for s in long_steps) / 1000
    n_long = len(long_steps)
    speed = {"steps": n_long, "mean_prompt_tokens": sum(s.tokens_in for s in long_steps) / n_long if n_long else None,
             "seconds": secs, "per_100_steps_min": secs / n_long * 100 / 60 if n_long else None}
    out = {"environment": environment(), "store": str(store_path), "curated": len(traces), "dropped": dict(cur.dropped),
           "clusters": [c.summary() for c in clusters], "replay_plain": plain.overall, "replay_fewshot": shots.overall,
           "few_shot": args.few_shot, "fewshot_gain": {"steps": len(both), "plain": plain_all, "fewshot": shots_all, "clusters": gain_rows},
           "report": rep.to_json(), "long_prompt_replay": speed, "wall_s": time.monotonic() - t_start}
    write_json(args.json, out)
    plot(rep, args.plot)
    print(f"\nlearned on {rep.learn_steps} steps, judged on {rep.eval_steps} held back")
    print(f"{'policy':<22} {'on small':>9} {'agreement':>10} {'cost vs top':>12}")
    for p in rep.points:
        print(f"{p.policy:<22} {p.small_share:>9.0%} {p.agreement:>10.1%} {p.cost_share:>12.0%}")
    if both:
        print(f"few-shot ({args.few_shot} examples) on the same {len(both)} steps: {plain_all:.1%} -> {shots_all:.1%}")
    if long_steps:
        print(f"replay of {len(long_steps)} steps >= {args.long_tokens} prompt tokens: {speed['per_100_steps_min']:.1f} min per 100 steps")
    print(f"wrote {args.json}, {args.plot}")


def _kind(value: str) -> Any:
    from smallfleet.step import StepKind

    return StepKind(value)


if __name__ == "__main__":
    main()
