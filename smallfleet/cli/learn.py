"""The learning loop on the command line: cluster captured steps into tasks, replay them on a cheaper model."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import orjson
from rich.table import Table

from ._app import _config, cli, console, out
from .traces import STORE_HELP, open_store


@cli.group()
def learn() -> None:
    """Learn from captured traffic (S3-S6): cluster steps into tasks, replay them on cheaper models.

    \b
    1. smallfleet traces import LOG.jsonl      (or capture gateway traffic: [capture] enabled = true)
    2. smallfleet learn clusters               tasks, by structure then by what they ask
    3. smallfleet learn replay --tier small    each task's steps re-run on the small tier, compared
                                               with the accepted answers, with 95 % intervals
    Nothing moves to a cheaper model unless its agreement's lower bound reaches the target."""


@learn.command("clusters")
@click.option("--store", help=STORE_HELP)
@click.option("--json", "as_json", is_flag=True, help="JSON: {curated, dropped, clusters: [{id, name, kind, size, spend_share, examples, ...}]}.")
@click.pass_context
def learn_clusters(ctx: click.Context, store: str | None, as_json: bool) -> None:
    """Group the curated steps into tasks and keep the grouping in the store (replay uses it).

    Curation drops failed steps, refusals, answers that failed their checks, answers the agent said
    were wrong (feedback < 0.5) and exact or near duplicates. Clusters are split first by structure
    (step kind, tools, response schema, system prompt, place in the loop), then by the task text's
    MiniLM embedding, with k chosen by silhouette."""
    from ..capture import curate
    from ..learn import cluster_traces, save_clusters

    st = open_store(ctx, store)
    try:
        t0 = time.monotonic()
        with console.status("reading and curating traces"):
            cur = curate(st.iter())
        with console.status(f"clustering {len(cur.kept)} steps (MiniLM embeddings of their task texts)"):
            clusters = cluster_traces(cur.kept)
        save_clusters(st, clusters)
    finally:
        st.close()
    if as_json:
        sys.stdout.write(orjson.dumps({"curated": len(cur.kept), "dropped": dict(cur.dropped),
                                       "clusters": [c.summary() for c in clusters]}).decode() + "\n")
        return
    dropped = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in cur.dropped.most_common()) or "none"
    console.print(f"{len(cur.kept)} steps kept (dropped: {dropped}); {len(clusters)} clusters in {time.monotonic() - t0:.1f} s")
    tb = Table(title="clusters (largest spend first)")
    for col in ("id", "name", "steps", "spend", "examples"):
        tb.add_column(col, justify="right" if col in ("steps", "spend") else "left")
    for c in clusters:
        tb.add_row(c.id, c.name, str(c.size), f"{c.spend_share:.1%}", ", ".join(c.examples))
    out.print(tb)


def _engine_for_replay(ctx: click.Context) -> Any:
    """An engine that answers with the named model only: no capture (replays are not traffic), no ledger."""
    from ..engine import Engine

    cfg = _config(ctx)
    return Engine(replace(cfg, capture=replace(cfg.capture, enabled=False)), ledger=False)


@learn.command("replay")
@click.option("--store", help=STORE_HELP)
@click.option("--tier", help="Replay on this tier's model (e.g. small).")
@click.option("--model", "model_name", help="Replay on this fleet model.")
@click.option("--cluster", "only", multiple=True, help="Only this cluster (repeatable); default: all.")
@click.option("--sample", type=click.IntRange(1, 1_000_000), help="At most N steps (whole conversations, seeded).")
@click.option("--target", default=0.95, show_default=True, type=click.FloatRange(0.5, 1.0),
              help="Agreement a cluster's lower bound must reach to be recommended for this model.")
@click.option("--few-shot", "few_shot", default=0, show_default=True, type=click.IntRange(0, 8),
              help="Show each step K accepted examples of its cluster (its K most typical steps, not replayed).")
@click.option("--surrogates/--placeholders", default=True, show_default=True,
              help="Replay a step's <PERSON_1>-style placeholders as invented values of their type (what a live local "
                   "model reads), put back in the answer before comparing; or as the placeholders themselves.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write {steps, clusters, overall} to this file.")
@click.pass_context
def learn_replay(ctx: click.Context, store: str | None, tier: str | None, model_name: str | None, only: tuple[str, ...],
                 sample: int | None, target: float, few_shot: int, surrogates: bool, json_out: Path | None) -> None:
    """Re-run captured steps on a cheaper model and compare with the accepted answers.

    Tool calls are compared by name and argument by argument, extraction field by field,
    classification by label, free text by the step's checks and the accepted answer's values. Each
    cluster gets its agreement, a 95 % interval and a recommendation; the result is kept in the store
    for `smallfleet learn apply`. With --few-shot K, each step is shown K accepted examples of its
    cluster first (specialisation without training); apply keeps them where they lift the tier."""
    from ..capture import curate
    from ..errors import ConfigError
    from ..learn import load_clusters
    from ..learn.replay import replay

    if (tier is None) == (model_name is None):
        raise click.UsageError("give exactly one of --tier TIER or --model NAME.")
    st = open_store(ctx, store)
    try:
        clusters = load_clusters(st)
        if not clusters:
            raise ConfigError(f"no clusters in {st.path}.", hint="run `smallfleet learn clusters` first")
        traces = curate(st.iter()).kept
        engine = _engine_for_replay(ctx)
        cfg = engine.config
        if tier is not None and tier not in cfg.tiers:
            raise click.BadParameter(f"{tier!r} is not a tier; tiers: {', '.join(cfg.tiers)}", param_hint="--tier")
        name = cfg.tier_model(tier).name if tier is not None else str(model_name)
        spec = engine.fleet.spec(name)
        with console.status(f"loading {spec.name}"):  # a model not installed fails here, once, not per step
            engine.fleet.get(spec.name).load()
        t0 = time.monotonic()

        def progress(i: int, n: int, s: Any) -> None:
            rate = (time.monotonic() - t0) / i
            console.print(f"[dim]{i}/{n}[/] {s.id} {'[green]agree[/]' if s.agree else '[red]differ[/]'}: {s.why[:100]}"
                          f"  [dim](~{rate * (n - i):.0f} s left)[/]", highlight=False)

        async def go() -> Any:
            try:
                return await replay(engine, traces, clusters, spec.name, only=only or None, sample=sample, target=target,
                                    few_shot=few_shot, surrogates=surrogates, progress=progress)
            finally:
                await engine.aclose()

        report = asyncio.run(go())
        got = st.get_learned("clusters")
        st.put_learned(f"replay:{spec.name}:{report.variant}", {**report.to_json(), "clusters_at": got[0] if got else None})
    finally:
        st.close()
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2))
    ov = report.overall
    shots = f", {few_shot} worked examples a step" if few_shot else ""
    tb = Table(title=f"replay on {spec.name} ({spec.tier}{shots}): {ov['replayed']} steps, "
                     f"{(ov['agreement'] or 0):.1%} agree, {report.wall_s:.0f} s")
    for col in ("cluster", "name", "replayed", "agreement", "95% interval", "recommendation"):
        tb.add_column(col)
    for c in report.clusters:
        tb.add_row(c.id, c.name, f"{c.replayed}/{c.steps}", "-" if c.agreement is None else f"{c.agreement:.0%}",
                   f"{c.ci_low:.0%}-{c.ci_high:.0%}", c.recommendation)
    out.print(tb)


@learn.command("apply")
@click.option("--store", help=STORE_HELP)
@click.option("--target", default=0.95, show_default=True, type=click.FloatRange(0.5, 1.0),
              help="Agreement whose 95 % lower bound a tier must reach to start a cluster.")
@click.option("--min-steps", default=20, show_default=True, type=click.IntRange(1, 100_000),
              help="Replayed steps a cluster needs before it is judged at all.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the table (default: [learn] routes, else ~/.local/share/smallfleet/routes.json).")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@click.pass_context
def learn_apply(ctx: click.Context, store: str | None, target: float, min_steps: int, out_file: Path | None,
                as_json: bool) -> None:
    """Write the learned routing table from the clusters and their replays; the gateway follows it.

    Per cluster: the cheapest tier whose replayed agreement has a 95 % lower bound >= --target. A
    cluster whose cheaper tiers fell short starts above them; one with fewer than --min-steps replayed
    steps gets no route (the [routing] policy stays). x-smallfleet-reason names the route a step took.
    A running gateway picks the new table up within seconds."""
    from ..errors import ConfigError
    from ..learn import load_clusters
    from ..learn.table import build_table, shadow_replays

    cfg = _config(ctx)
    st = open_store(ctx, store)
    try:
        got = st.get_learned("clusters")
        clusters = load_clusters(st)
        if got is None or not clusters:
            raise ConfigError(f"no clusters in {st.path}.", hint="run `smallfleet learn clusters`, then `smallfleet learn replay`")
        replays: list[dict[str, Any]] = []
        stale: list[dict[str, Any]] = []
        for name in st.learned_names("replay:"):
            r = st.get_learned(name)
            assert r is not None
            (replays if r[1].get("clusters_at") == got[0] else stale).append(r[1])
        replays += shadow_replays(clusters, st.shadows())  # the gateway's online shadows ([capture] shadow)
    finally:
        st.close()
    if stale and not replays:
        raise ConfigError("every replay in the store predates the current clusters.",
                          hint="run `smallfleet learn replay --tier small` again after `learn clusters`")
    if not replays:
        raise ConfigError("no replays in the store.", hint="run `smallfleet learn replay --tier small` first")
    table = build_table(clusters, replays, cfg.tiers, target=target, min_steps=min_steps, models=cfg.models)
    table["store"] = str(st.path)
    path = out_file or cfg.learn.routes_path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(table, option=orjson.OPT_NON_STR_KEYS))
    tmp.replace(path)  # a gateway reading the table sees the old one or the new one, never half
    if as_json:
        sys.stdout.write(orjson.dumps(table, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
        return
    console.print(f"wrote {len(table['routes'])} routes to {path}" + (f" ({len(stale)} stale replays ignored)" if stale else ""))
    tb = Table(title=f"learned routes (target {target:.0%})")
    for col in ("cluster", "name", "start", "evidence"):
        tb.add_column(col)
    for r in table["routes"]:
        tb.add_row(r["cluster"], r["name"], r["start"], r["evidence"])
    for u in table["undecided"]:
        tb.add_row(u["cluster"], u["name"], "[dim](policy)[/]", u["why"])
    out.print(tb)


def _replayed_steps(st: Any) -> dict[str, dict[str, Any]]:
    """Every replayed step kept in the store, by trace id (the latest replay of a step wins)."""
    out: dict[str, dict[str, Any]] = {}
    for name in st.learned_names("replay:"):
        got = st.get_learned(name)
        for s in (got[1].get("steps", []) if got else []):
            out[s["id"]] = s
    return out


@learn.command("export")
@click.argument("out_file", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--store", help=STORE_HELP)
@click.option("--cluster", "only", multiple=True, help="Only this cluster (repeatable); default: every cluster.")
@click.option("--format", "fmt", type=click.Choice(["openai", "chat-jsonl", "dpo"]), default="openai", show_default=True,
              help="openai: chat fine-tuning with tools; chat-jsonl: tool calls as JSON text (local models); "
                   "dpo: preference pairs where a cheaper answer was rejected.")
@click.pass_context
def learn_export(ctx: click.Context, out_file: Path, store: str | None, only: tuple[str, ...], fmt: str) -> None:
    """Write a cluster's curated steps as fine-tuning data (JSONL), pseudonymised as stored.

    dpo pairs come from steps where a cheaper model's answer was rejected: an attempt that failed its
    checks before the step escalated, or a replayed answer that disagreed (`learn replay`)."""
    from ..capture import curate
    from ..errors import ConfigError
    from ..learn import load_clusters
    from ..learn.export import export_rows

    st = open_store(ctx, store)
    try:
        clusters = load_clusters(st)
        if not clusters:
            raise ConfigError(f"no clusters in {st.path}.", hint="run `smallfleet learn clusters` first")
        unknown = set(only) - {c.id for c in clusters}
        if unknown:
            raise ConfigError(f"no cluster {sorted(unknown)[0]!r}.", hint="`smallfleet learn clusters` lists them")
        members = {tid for c in clusters if not only or c.id in only for tid in c.members}
        traces = [t for t in curate(st.iter()).kept if t.id in members]
        replayed = _replayed_steps(st) if fmt == "dpo" else {}
    finally:
        st.close()
    rows = list(export_rows(traces, fmt, replayed))
    if not rows:
        raise ConfigError(f"nothing to export in the {fmt} format from {len(traces)} steps.",
                          hint="dpo needs rejected answers: run `smallfleet learn replay` first" if fmt == "dpo" else None)
    tmp = out_file.with_name(out_file.name + ".tmp")
    tmp.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    tmp.replace(out_file)
    console.print(f"wrote {len(rows)} {fmt} examples from {len(traces)} steps to {out_file}")


@learn.command("report")
@click.option("--store", help=STORE_HELP)
@click.option("--tier", help="The cheap tier whose replay is judged (default: the cheapest tier).")
@click.option("--split", default=0.7, show_default=True, type=click.FloatRange(0.1, 0.9),
              help="Share of replayed steps, oldest first, that routing learns from; the rest judge it.")
@click.option("--min-steps", default=20, show_default=True, type=click.IntRange(1, 100_000),
              help="Replayed steps a cluster needs (in the learning part) before the table judges it.")
@click.option("--png", "png", type=click.Path(dir_okay=False, path_type=Path), help="Write the agreement-vs-share plot here.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as JSON here.")
@click.pass_context
def learn_report(ctx: click.Context, store: str | None, tier: str | None, split: float, min_steps: int, png: Path | None,
                 json_out: Path | None) -> None:
    """Compare routing policies on a held-back split of the replayed steps.

    all-top, the hand-set [routing] policy, the learned table at several targets and the learned
    estimator at several thresholds: the share of steps started on the cheap tier, agreement with the
    accepted answers (a cheap answer that fails its checks escalates, as in the cascade) and cost
    relative to all-top; the top-tier share each needs for 95 % agreement; the estimator's calibration."""
    from ..capture import curate
    from ..errors import ConfigError
    from ..learn import load_clusters
    from ..learn.report import compare_policies, plot

    cfg = _config(ctx)
    cheap = tier or cfg.tiers[0]
    st = open_store(ctx, store)
    try:
        clusters = load_clusters(st)
        plain = [n for n in st.learned_names("replay:") if n.endswith(":plain")]
        reps = [r[1] for n in plain if (r := st.get_learned(n)) is not None and r[1].get("tier") == cheap]
        if not clusters or not reps:
            raise ConfigError(f"no clusters or no plain replay on the {cheap} tier in {st.path}.",
                              hint=f"run `smallfleet learn clusters`, then `smallfleet learn replay --tier {cheap}`")
        replays = {s["id"]: s for r in reps for s in r["steps"]}
        traces = [t for t in curate(st.iter()).kept if t.id in replays]
    finally:
        st.close()
    cluster_of = {tid: c.id for c in clusters for tid in c.members}
    rep = compare_policies(traces, replays, cluster_of, lambda t: _hand_start(cfg, t.kind) == cheap, split=split,
                           min_steps=min_steps)
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(rep.to_json(), option=orjson.OPT_INDENT_2))
    if png is not None:
        plot(rep, str(png))
    tb = Table(title=f"routing policies: learned on {rep.learn_steps} steps, judged on {rep.eval_steps} held back")
    for col in ("policy", "on the cheap tier", "agreement", "cost vs all-top"):
        tb.add_column(col, justify="left" if col == "policy" else "right")
    for p in rep.points:
        tb.add_row(p.policy, f"{p.small_share:.0%}", f"{p.agreement:.1%}", f"{p.cost_share:.0%}")
    out.print(tb)
    for name, need in rep.top_needed_for_95.items():
        out.print(f"{name}: " + (f"{need:.0%} of steps on top for 95 % agreement" if need is not None else "never reaches 95 % agreement")
                  + f"; area under the curve {rep.auc[name]:.3f}")
    if rep.calibration:
        out.print(f"estimator calibration on held-back steps: Brier {rep.calibration['brier']:.3f}; " + ", ".join(
            f"{b['from']:.1f}-{b['to']:.1f}: said {b['predicted']:.0%}, saw {b['observed']:.0%} ({b['steps']})"
            for b in rep.calibration["bins"]))


def _hand_start(cfg: Any, kind: str) -> str:
    from ..step import StepKind

    return str(cfg.routing[StepKind(kind)].start)


@learn.command("finetune")
@click.option("--cluster", required=True, help="The cluster to specialise on (`smallfleet learn clusters` lists them).")
@click.option("--store", help=STORE_HELP)
@click.option("--tier", help="Whose model to adapt (default: the cheapest tier; it must be an embedded GGUF model).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="The adapter file (default: ~/.local/share/smallfleet/adapters/MODEL-CLUSTER.gguf).")
@click.option("--steps", default=60, show_default=True, type=click.IntRange(1, 100_000), help="Training steps (batch 2).")
@click.option("--rank", default=8, show_default=True, type=click.IntRange(1, 256), help="LoRA rank.")
@click.option("--lr", default=2e-3, show_default=True, type=click.FloatRange(1e-6, 1.0), help="Learning rate (AdamW).")
@click.option("--max-len", default=768, show_default=True, type=click.IntRange(32, 32768), help="Tokens per example.")
@click.option("--split", default=0.7, show_default=True, type=click.FloatRange(0.1, 1.0),
              help="Train on this share of the cluster's steps (oldest first); replay the rest to confirm the gain.")
@click.option("--replay/--no-replay", default=True, show_default=True, help="Replay the held-out steps with and without the adapter.")
@click.pass_context
def learn_finetune(ctx: click.Context, cluster: str, store: str | None, tier: str | None, out_file: Path | None, steps: int,
                   rank: int, lr: float, max_len: int, split: float, replay: bool) -> None:
    """Train a LoRA adapter for the small model on one cluster's accepted answers (CPU is enough).

    The weights come from the model's own GGUF file; the adapter is written as a llama.cpp GGUF LoRA
    adapter, then the cluster's held-out steps are replayed with and without it. Nothing routes to the
    adapter until you add it to the fleet (the command prints the [models] entry). Needs the
    `finetune` extra: pip install 'smallfleet[finetune]'."""
    from ..capture import curate
    from ..config import default_data_dir
    from ..errors import ConfigError
    from ..learn import load_clusters
    from ..learn.finetune import _modules, finetune
    from ..models.llamacpp import resolve_location

    _modules()  # "not available" before anything is read or loaded
    cfg = _config(ctx)
    spec = cfg.tier_model(tier or cfg.tiers[0])
    if not spec.is_local:
        raise ConfigError(f"the {spec.tier} tier's model {spec.name} is not an embedded GGUF model; only those take a LoRA adapter.")
    st = open_store(ctx, store)
    try:
        clusters = {c.id: c for c in load_clusters(st)}
        if cluster not in clusters:
            raise ConfigError(f"no cluster {cluster!r} in {st.path}.", hint="run `smallfleet learn clusters` and pick an id")
        members = set(clusters[cluster].members)
        traces = sorted((t for t in curate(st.iter()).kept if t.id in members), key=lambda t: (t.ts, t.id))
    finally:
        st.close()
    cut = max(1, int(len(traces) * split))
    train, held = traces[:cut], traces[cut:]
    out_path = out_file or default_data_dir() / "adapters" / f"{spec.name}-{cluster}.gguf"
    with console.status(f"assembling {spec.name}"):
        base = resolve_location(spec)
    console.print(f"training a rank-{rank} LoRA adapter for {spec.name} on {len(train)} steps of {cluster} "
                  f"({clusters[cluster].name}), {steps} steps")

    def progress(step: int, loss: float) -> None:
        if step == 1 or step % 10 == 0 or step == steps:
            console.print(f"  step {step}/{steps}: loss {loss:.4f}")

    res = finetune(train, base, out_path, steps=steps, rank=rank, lr=lr, max_len=max_len, threads=spec.threads, progress=progress)
    console.print(f"[green]wrote {res.adapter}[/] ({res.pairs} matrices adapted, {res.examples} examples, {res.seconds:.0f} s)")
    name = f"{spec.name}+{cluster}"
    if replay and held:
        tuned = _confirm(ctx, spec, name, res.adapter, held, clusters[cluster])
        st = open_store(ctx, store)
        try:  # learn apply may start the cluster on this model once it is in the fleet and its replay qualifies
            got = st.get_learned("clusters")
            st.put_learned(f"replay:{name}:lora", {**tuned.to_json(), "model_variant": name,
                                                   "clusters_at": got[0] if got else None})
        finally:
            st.close()
    elif replay:
        console.print("[yellow]no held-out steps to replay (the cluster is too small for --split); gain not measured[/]")
    out.print(f'\nTo serve it, add to your smallfleet.toml:\n\n[models."{name}"]\npath = "{spec.location}"\n'
              f'lora = ["{res.adapter}"]\ntier = "{spec.tier}"\nprice_in = {spec.price_in}\nprice_out = {spec.price_out}\n'
              f'\nThen `smallfleet learn apply` may start {cluster} on it: only where its held-out replay reaches the target.',
              markup=False, highlight=False)


def _confirm(ctx: click.Context, spec: Any, name: str, adapter: Path, held: list[Any], cluster: Any) -> Any:
    """Replay the held-out steps on the base model and on base + adapter."""
    from ..engine import Engine
    from ..learn.clusters import Cluster
    from ..learn.replay import replay

    cfg = _config(ctx)
    tuned = replace(spec, name=name, lora=(*spec.lora, str(adapter)))
    eng = Engine(replace(cfg, models={**cfg.models, name: tuned}, capture=replace(cfg.capture, enabled=False)), ledger=False)
    only = [Cluster(id=cluster.id, kind=cluster.kind, signature=cluster.signature, name=cluster.name, tools=cluster.tools,
                    terms=cluster.terms, size=len(held), members=[t.id for t in held])]

    async def go() -> tuple[Any, Any]:
        try:
            return (await replay(eng, held, only, spec.name, min_steps=1), await replay(eng, held, only, name, min_steps=1))
        finally:
            await eng.aclose()

    with console.status(f"replaying {len(held)} held-out steps with and without the adapter"):
        plain, tuned_rep = asyncio.run(go())
    a, b = plain.overall["agreement"] or 0.0, tuned_rep.overall["agreement"] or 0.0
    out.print(f"held-out steps of {cluster.id}: {spec.name} agrees on {a:.0%}, with the adapter {b:.0%} "
              f"({(b - a) * 100:+.0f} points, {len(held)} steps)")
    return tuned_rep
