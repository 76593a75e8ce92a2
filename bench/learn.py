"""The learning loop on captured agent traffic: which steps can start on the small tier, with evidence.

1. Capture: the agent-loop benchmark (bench/agents.py) runs its workloads through ``smallfleet serve``
   on the large tier only (``--configs large``), with ``[capture]`` on: every step of every agent loop,
   the large model's answer taken as the accepted one, pseudonymised into an encrypted trace store.
   BFCL multi-turn runs ``--bfcl`` tasks (12 by default, more than agents.py's 3, for more traffic that
   is not the demo). ``--store PATH`` reuses a store captured before and skips this.
2. Curate, then split by time: the first ``--split`` of the steps (oldest first) is what routing learns
   from, the rest is held back. Clusters are made from the learning part only; a held-back step joins
   the cluster the gateway's route matcher (smallfleet.learn.match) gives it, or none.
3. Replay every step on the small tier through the engine: plain, and with ``--few-shot K`` worked
   examples of its cluster taken from the learning part only; optionally (``--lora-steps`` > 0) with a
   LoRA adapter trained on the first half of the learning part of one step structure (``--lora-on
   structure``: all its clusters; or one cluster), the one where the plain replay disagreed most,
   replayed on the rest of it (learning and held-back parts). Each answer is compared with the
   accepted one. Placeholders of the pseudonymised traces are replayed as invented stand-in values
   (smallfleet.learn.surrogate); ``--placeholder-sample N`` steps are also replayed with the
   placeholders as stored, to show what that changes.
4. Judge on the held-back part: all-top, all-small, the hand-set ``[routing]`` policy, the learned table
   at several targets (table.decide on the learning part's replays), the learned estimator, and the
   table at ``--target`` when a cluster may also start small with worked examples or the adapter.
   Reported: the share of steps started small and the agreement with the large model's answers (an
   answer that fails its checks escalates, as in the cascade), cost against all-top, the few-shot and
   LoRA gains on the same steps.
5. Replay speed on long prompts: the replayed steps whose prompts hold at least ``--long-tokens``
   tokens, their wall time (goal: 100 steps of 5k-token prompts in 10 minutes).

Goals (issue #16): >= 70 % of steps on the small tier at >= 95 % agreement on the held-back part;
few-shot or LoRA raises the small tier's agreement on its clusters by >= 10 points.

    python bench/learn.py                                   # capture (agents.py, ~40 min) + the rest
    python bench/learn.py --store /tmp/learn/traces.db      # reuse a captured store
    python bench/learn.py --workloads suite --limit 10 --bfcl multi_turn_base_100 --lora-steps 0   # a quick look

Writes bench/results/learn.json and bench/results/learn.png (agreement against the small tier's share).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
from _common import RESULTS, ROOT, environment, parser, write_json

BFCL = ",".join(f"multi_turn_base_{i}" for i in (100, 132, 115, 0, 12, 25, 37, 50, 62, 75, 87, 150))


def capture(store: Path, workloads: str, limit: int | None, bfcl: str) -> None:
    env = {**os.environ, "SMALLFLEET_CAPTURE": "on", "SMALLFLEET_TRACES": str(store)}
    cmd = [sys.executable, str(ROOT / "bench" / "agents.py"), "--configs", "large", "--workloads", workloads, "--bfcl", bfcl,
           "--json", str(store.with_name("agents_large.json")), "--plot", str(store.with_name("agents_large.png"))]
    if limit:
        cmd += ["--limit", str(limit)]
    print("capturing:", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, env=env, check=True)


def assign(clusters: list[Any], traces: list[Any]) -> dict[str, str]:
    """Trace id -> cluster id: the clusters' own members, every other step by the gateway's route matcher."""
    from smallfleet.capture.trace import task_text
    from smallfleet.learn.match import Entry, Matcher

    of = {tid: c.id for c in clusters for tid in c.members}
    m = Matcher(Entry(c.id, c.signature, c.centroid) for c in clusters)
    for t in traces:
        if t.id not in of and (cid := m.match(t.signature, task_text(t.request))) is not None:
            of[t.id] = cid
    return of


def _progress(label: str) -> Any:
    t0 = time.monotonic()
    print(label, flush=True)

    def progress(i: int, n: int, s: Any) -> None:
        if i % 10 == 0 or i == n:
            print(f"  {i}/{n} replayed, {time.monotonic() - t0:.0f} s", flush=True)
    return progress


async def replays(cfg: Any, traces: list[Any], clusters: list[Any], learned: list[str], learn_ids: set[str],
                  few_shot: int, raw_sample: int) -> tuple[Any, Any, Any]:
    from smallfleet.engine import Engine
    from smallfleet.learn.replay import replay

    eng = Engine(replace(cfg, capture=replace(cfg.capture, enabled=False)), ledger=False)
    small = cfg.tier_model(cfg.tiers[0]).name
    try:
        plain = await replay(eng, traces, clusters, small, min_steps=1, progress=_progress(f"replaying on {small}, plain"))
        shots = await replay(eng, traces, clusters, small, only=learned, min_steps=1, few_shot=few_shot, examples_from=learn_ids,
                             progress=_progress(f"replaying on {small}, {few_shot} worked examples from the learning part"))
        raw = await replay(eng, traces, clusters, small, min_steps=1, sample=raw_sample, surrogates=False,
                           progress=_progress(f"replaying {raw_sample} steps on {small} with the placeholders as stored")) \
            if raw_sample else None
    finally:
        await eng.aclose()
    return plain, shots, raw


def lora(cfg: Any, traces: list[Any], cluster: Any, train: list[Any], judged: list[Any], steps: int, work: Path) -> tuple[Any, Any]:
    """Train an adapter on ``train`` and replay ``judged`` with it (on the small model with the adapter)."""
    from smallfleet.engine import Engine
    from smallfleet.learn.clusters import Cluster
    from smallfleet.learn.finetune import finetune
    from smallfleet.learn.replay import replay
    from smallfleet.models.llamacpp import resolve_location

    spec = cfg.tier_model(cfg.tiers[0])
    base = resolve_location(spec)
    print(f"LoRA: training on {len(train)} steps of {cluster.id} ({cluster.name}), {steps} steps", flush=True)

    def progress(step: int, loss: float) -> None:
        if step == 1 or step % 10 == 0 or step == steps:
            print(f"  step {step}/{steps}: loss {loss:.4f}", flush=True)

    res = finetune(train, base, work / f"{spec.name}-{cluster.id}.gguf", steps=steps, threads=spec.threads, progress=progress)
    name = f"{spec.name}+{cluster.id}"
    tuned = replace(spec, name=name, lora=(*spec.lora, str(res.adapter)))
    only = [Cluster(id=cluster.id, kind=cluster.kind, signature=cluster.signature, name=cluster.name, tools=cluster.tools,
                    terms=cluster.terms, size=len(judged), members=[t.id for t in judged])]
    eng = Engine(replace(cfg, models={**cfg.models, name: tuned}, capture=replace(cfg.capture, enabled=False)), ledger=False)

    async def go() -> Any:
        try:
            return await replay(eng, judged, only, name, min_steps=1, progress=_progress(f"replaying {len(judged)} steps on {name}"))
        finally:
            await eng.aclose()
    return res, asyncio.run(go())


def _recompare(rep: Any, by_id: dict[str, Any]) -> None:
    """Judge stored replays again with the current comparison (the answers are the same; the rules may be better)."""
    from smallfleet.learn.compare import compare
    from smallfleet.step import wants_json

    kept = []
    for st in rep.steps:
        t = by_id.get(st.id)
        if t is None:  # left out of this analysis
            continue
        failed = [] if st.passed else [st.why.split(": ", 1)[-1] if st.why.startswith("fails its checks") else "a check failed"]
        if st.replayed is not None:
            st.agree, st.why = compare(t.final, st.replayed, t.kind, wants_json=wants_json(t.request), failed_checks=failed)
        kept.append(st)
    rep.steps = kept


def _rows(rep: Any) -> dict[str, dict[str, Any]]:
    return {s.id: {"agree": s.agree, "passed": s.passed, "cost_usd": s.cost_usd} for s in rep.steps}


def _agree(rows: dict[str, dict[str, Any]], ids: list[str]) -> float | None:
    return sum(bool(rows[i]["agree"]) for i in ids) / len(ids) if ids else None


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--store", help="a trace store captured before (skips the capture)")
    ap.add_argument("--workdir", default="/tmp/smallfleet-learn", help="where the capture's store and the adapter go")
    ap.add_argument("--workloads", default="suite,inbox,bfcl,agentdojo", help="agents.py workloads to capture")
    ap.add_argument("--limit", type=int, default=None, help="only the first N tasks of suite and inbox (capture)")
    ap.add_argument("--bfcl", default=BFCL, help="BFCL multi-turn base task ids to capture")
    ap.add_argument("--few-shot", type=int, default=3, help="worked examples per step in the few-shot replay")
    ap.add_argument("--lora-steps", type=int, default=60, help="training steps of the LoRA adapter (0: no LoRA)")
    ap.add_argument("--lora-cluster", default="", help="the cluster (or its structure) to train on (default: most plain disagreements)")
    ap.add_argument("--lora-on", choices=("structure", "cluster"), default="structure",
                    help="train on one step structure (all its clusters) or one cluster")
    ap.add_argument("--placeholder-sample", type=int, default=60,
                    help="also replay this many steps plain with their placeholders as stored (no stand-ins), to compare")
    ap.add_argument("--min-feedback", type=float, default=0.5,
                    help="curation drops steps of runs the agent scored below this (0: keep them; the 1.5B standing in "
                         "for the frontier fails every BFCL task, which would leave the demo suite alone)")
    ap.add_argument("--split", type=float, default=0.7, help="share of steps (oldest first) routing learns from")
    ap.add_argument("--split-by", choices=("time", "structure"), default="structure",
                    help="time: the oldest --split of all steps; structure: the oldest --split of each step structure "
                         "(the capture runs its workloads one after another, so a plain time split holds back whole "
                         "workloads the router never saw)")
    ap.add_argument("--target", type=float, default=0.95, help="agreement the table's lower bound must reach")
    ap.add_argument("--min-steps", type=int, default=20, help="steps a cluster needs before the table judges it")
    ap.add_argument("--long-tokens", type=int, default=5000, help="prompt size of the replay-speed measure")
    ap.add_argument("--reuse-replays", action="store_true",
                    help="read the replays of an earlier run with the same store and split from --workdir (re-analyse only)")
    ap.add_argument("--json", default=str(RESULTS / "learn.json"))
    ap.add_argument("--plot", default=str(RESULTS / "learn.png"))
    args = ap.parse_args()

    from smallfleet.capture import TraceStore, curate
    from smallfleet.config import load_config
    from smallfleet.learn import cluster_traces
    from smallfleet.learn.clusters import Cluster
    from smallfleet.learn.match import PLACEHOLDER
    from smallfleet.learn.replay import ReplayReport
    from smallfleet.learn.report import Variant, compare_policies, plot, split_by_structure, split_by_time, table_variants

    t_start = time.monotonic()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if args.store:
        store_path = Path(args.store)
    else:
        store_path = work / "traces.db"
        capture(store_path, args.workloads, args.limit, args.bfcl)
    st = TraceStore(store_path)
    cur = curate(st.iter(), min_feedback=args.min_feedback)
    st.close()
    traces = cur.kept
    # an accepted JSON answer whose keys the privacy layer pseudonymised ("<PERSON_2>": null) before it
    # kept keys as structure: its agreement cannot be judged, so it is left out and counted
    broken_key = re.compile(r'"<[A-Z_]+_\d+>"\s*:')
    broken = [t.id for t in traces if broken_key.search(str(t.final.get("content") or ""))]
    traces = [t for t in traces if t.id not in set(broken)]
    learn, held = (split_by_structure if args.split_by == "structure" else split_by_time)(traces, args.split)
    learn_ids = {t.id for t in learn}
    print(f"{len(traces)} curated steps (dropped: {dict(cur.dropped)}); learning from {len(learn)}, {len(held)} held back",
          flush=True)
    clusters = cluster_traces(learn)
    cluster_of = assign(clusters, traces)
    unmatched = [t.id for t in held if t.id not in cluster_of]
    print(f"{len(clusters)} clusters from the learning part; {len(held) - len(unmatched)} held-back steps matched one, "
          f"{len(unmatched)} none", flush=True)
    members: dict[str, list[str]] = {}
    for t in sorted(traces, key=lambda t: (t.ts, t.id)):
        if t.id in cluster_of:
            members.setdefault(cluster_of[t.id], []).append(t.id)
    rclusters = [replace(c, members=members.get(c.id, []), size=len(members.get(c.id, []))) for c in clusters]
    if unmatched:
        rclusters.append(Cluster(id="none", kind="", signature="", name="(no learned cluster)", tools=[], terms=[],
                                 size=len(unmatched), members=unmatched))
    cfg = load_config(None, env={k: v for k, v in os.environ.items() if k != "SMALLFLEET_CONFIG"})
    by_id = {t.id: t for t in traces}
    saved = work / f"replays-{args.split_by}-{args.split:g}-{args.few_shot}.json"
    if args.reuse_replays and saved.exists():
        got = orjson.loads(saved.read_bytes())
        plain, shots = ReplayReport.from_json(got["plain"]), ReplayReport.from_json(got["fewshot"])
        raw = ReplayReport.from_json(got["raw"]) if got.get("raw") else None
        print(f"replays read from {saved}; agreement judged again with this smallfleet's comparison", flush=True)
        for rep_ in (plain, shots, raw):
            if rep_ is not None:
                _recompare(rep_, by_id)
    else:
        plain, shots, raw = asyncio.run(replays(cfg, traces, rclusters, [c.id for c in clusters], learn_ids, args.few_shot,
                                                args.placeholder_sample))
        saved.write_bytes(orjson.dumps({"plain": plain.to_json(), "fewshot": shots.to_json(),
                                        "raw": raw.to_json() if raw else None}))
    rp, rs = _rows(plain), _rows(shots)
    small = cfg.tiers[0]
    rep = compare_policies([by_id[i] for i in rp], rp, cluster_of, lambda t: cfg.routing[_kind(t.kind)].start == small,
                           split=args.split, min_steps=args.min_steps, learn_ids=learn_ids)
    assert rep.learn_steps == len(learn), "every curated step is replayed plain"
    variants = [Variant("plain", rp), Variant(f"fewshot{args.few_shot}", rs, few_shot=args.few_shot)]
    fs_point, fs_chosen, fs_fallback = table_variants(learn, held, variants, cluster_of, args.target, args.min_steps,
                                                      f"table+fewshot@{args.target:g}")
    rep.points.append(fs_point)
    # few-shot gain: the same steps (replayed both ways), per cluster and overall, learning and held-back parts
    both = [i for i in rs if i in rp]
    gain_rows = []
    for c in clusters:
        ids = [i for i in both if cluster_of.get(i) == c.id]
        if ids:
            gain_rows.append({"cluster": c.id, "name": c.name, "steps": len(ids), "plain": _agree(rp, ids), "fewshot": _agree(rs, ids)})
    fewshot_gain = {"steps": len(both), "plain": _agree(rp, both), "fewshot": _agree(rs, both), "clusters": gain_rows,
                    "held_back": {"steps": len(h := [i for i in both if i not in learn_ids]), "plain": _agree(rp, h), "fewshot": _agree(rs, h)}}
    # stand-ins against the placeholders as stored, on the same steps
    stand_ins = None
    if raw is not None:
        rr = _rows(raw)
        ids = [i for i in rr if i in rp]
        stand_ins = {"steps": len(ids), "with_stand_ins": _agree(rp, ids), "placeholders_as_stored": _agree(rr, ids),
                     "steps_with_placeholders": sum(1 for i in ids if PLACEHOLDER.search(str(by_id[i].request) + str(by_id[i].final)))}
    # LoRA on one cluster
    lora_out: dict[str, Any] | None = None
    if args.lora_steps > 0:
        # the unit: one cluster, or one step structure (all its clusters: more steps to learn from)
        units: dict[str, list[str]] = {c.id: [c.id] for c in clusters}
        if args.lora_on == "structure":
            units = {}
            for c in clusters:
                units.setdefault(f"{c.kind}|{c.signature}", []).append(c.id)
            units = {f"s-{ids[0]}": ids for ids in units.values()}

        def misses(ids: list[str]) -> int:
            return sum(1 for t in learn if cluster_of.get(t.id) in ids and not rp[t.id]["agree"])
        if args.lora_cluster:
            key = next((k for k, ids in units.items() if args.lora_cluster in ids), None)
            if key is None:
                raise SystemExit(f"no cluster {args.lora_cluster!r}")
        else:
            key = max(units, key=lambda k: (misses(units[k]), len(units[k])))
        first = next(c for c in clusters if c.id == units[key][0])
        pick = replace(first, id=key, name=first.name if len(units[key]) == 1 else f"{first.kind}: {len(units[key])} clusters of "
                       + first.name.split(": ", 1)[1].split(" | ")[0])
        in_unit = set(units[key])
        cl = [t for t in learn if cluster_of.get(t.id) in in_unit]
        train, judged = cl[: len(cl) // 2], cl[len(cl) // 2:] + [t for t in held if cluster_of.get(t.id) in in_unit]
        saved_lora = work / f"replays-lora-{pick.id}-{args.split_by}-{args.split:g}-{args.lora_steps}.json"
        if args.reuse_replays and saved_lora.exists():
            got = orjson.loads(saved_lora.read_bytes())
            res, tuned = SimpleNamespace(**got["result"]), ReplayReport.from_json(got["replay"])
            _recompare(tuned, by_id)
        else:
            res, tuned = lora(cfg, traces, pick, train, judged, args.lora_steps, work)
            saved_lora.write_bytes(orjson.dumps({"result": {"steps": res.steps, "seconds": res.seconds, "examples": res.examples,
                                                            "losses": res.losses}, "replay": tuned.to_json()}))
        rl = _rows(tuned)
        ids = [t.id for t in judged if t.id in rl]
        hid = [i for i in ids if i not in learn_ids]
        # the table may start this cluster on the adapter only with evidence from steps it did not train on
        lvar = Variant(tuned.model, {i: v for i, v in rl.items()}, model=tuned.model)
        trained = {t.id for t in train}
        lp, l_chosen, _ = table_variants([t for t in learn if t.id not in trained], held, [*variants, lvar], cluster_of,
                                         args.target, args.min_steps, f"table+fewshot+lora@{args.target:g}")
        rep.points.append(lp)
        lora_out = {"cluster": pick.id, "name": pick.name, "trained_on": len(train), "train_steps": res.steps,
                    "train_seconds": res.seconds, "examples": res.examples, "final_loss": res.losses[-1] if res.losses else None,
                    "judged": {"steps": len(ids), "plain": _agree(rp, ids), "lora": _agree(rl, ids)},
                    "held_back": {"steps": len(hid), "plain": _agree(rp, hid), "lora": _agree(rl, hid)},
                    "unit": args.lora_on, "clusters": sorted(in_unit),
                    "table_variant": {c: l_chosen.get(c) for c in sorted(in_unit)}, "replay_wall_s": tuned.wall_s}
    # replay speed on long prompts
    long_steps = [s for s in plain.steps if s.tokens_in >= args.long_tokens]
    secs = sum(s.latency_ms for s in long_steps) / 1000
    n_long = len(long_steps)
    speed = {"steps": n_long, "mean_prompt_tokens": sum(s.tokens_in for s in long_steps) / n_long if n_long else None,
             "seconds": secs, "per_100_steps_min": secs / n_long * 100 / 60 if n_long else None}
    out = {"environment": environment(), "store": str(store_path), "curated": len(traces), "dropped": dict(cur.dropped),
           "left_out_pseudonymised_json_keys": len(broken), "min_feedback": args.min_feedback, "min_steps": args.min_steps, "target": args.target,
           "split": args.split, "split_by": args.split_by,
           "learn_steps": len(learn), "held_steps": len(held), "held_unmatched": len(unmatched),
           "clusters": [c.summary() for c in clusters],
           "held_per_cluster": {c.id: sum(1 for t in held if cluster_of.get(t.id) == c.id) for c in clusters},
           "replay_plain": plain.overall, "replay_fewshot": shots.overall, "few_shot": args.few_shot, "fewshot_gain": fewshot_gain,
           "stand_ins": stand_ins,
           "table_fewshot": {"chosen": fs_chosen, "held_judged_plain_instead": fs_fallback}, "lora": lora_out,
           "report": rep.to_json(), "long_prompt_replay": speed, "wall_s": time.monotonic() - t_start}
    write_json(args.json, out)
    plot(rep, args.plot)
    print(f"\nlearned on {rep.learn_steps} steps, judged on {rep.eval_steps} held back")
    print(f"{'policy':<26} {'on small':>9} {'agreement':>10} {'cost vs top':>12}")
    for p in rep.points:
        print(f"{p.policy:<26} {p.small_share:>9.0%} {p.agreement:>10.1%} {p.cost_share:>12.0%}")
    if both:
        print(f"few-shot ({args.few_shot} examples) on the same {len(both)} steps: {fewshot_gain['plain']:.1%} -> {fewshot_gain['fewshot']:.1%}")
    if stand_ins and stand_ins["steps"]:
        print(f"plain replay on {stand_ins['steps']} steps: {stand_ins['with_stand_ins']:.1%} with stand-ins, "
              f"{stand_ins['placeholders_as_stored']:.1%} with the placeholders as stored")
    if lora_out and lora_out["judged"]["steps"]:
        j = lora_out["judged"]
        print(f"LoRA on {lora_out['cluster']}: {j['steps']} steps it did not train on: {j['plain']:.1%} -> {j['lora']:.1%}")
    if long_steps:
        print(f"replay of {len(long_steps)} steps >= {args.long_tokens} prompt tokens: {speed['per_100_steps_min']:.1f} min per 100 steps")
    print(f"wrote {args.json}, {args.plot}")


def _kind(value: str) -> Any:
    from smallfleet.step import StepKind

    return StepKind(value)


if __name__ == "__main__":
    main()
