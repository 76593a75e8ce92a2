"""Commands that run steps: serve, run, demo, report."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import click
import orjson
from rich.markup import escape
from rich.table import Table

from ..config import Config
from ._app import _config, byte_progress, cli, console, out


# -- serve -------------------------------------------------------------------------------------------
@cli.command()
@click.option("--host", default=None, help="Bind address (default from config: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default from config: 8088).")
@click.option("--preload/--lazy", default=True, show_default=True,
              help="Load the local models before serving. Loading holds Python's interpreter lock for seconds "
                   "(1.3 s for the 0.5B, 4.9 s for the 1.5B here), so with --lazy the first request that needs a "
                   "model stalls every other request, /health included, meanwhile.")
@click.option("--log-level", default="warning", type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Gateway processes on this port, one ledger between them (the SQLite file, or PostgreSQL with "
                   "SMALLFLEET_DATABASE_URL): budgets, keys, session memory, pseudonym vaults and Responses history "
                   "hold across them. Each loads its own copy of the embedded models; for several workers, serve the "
                   "models from vLLM / llama.cpp server / Ollama instead.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, preload: bool, log_level: str, workers: int) -> None:
    """Serve the OpenAI-compatible gateway.

    \b
    Point any OpenAI client at it:
      client = OpenAI(base_url="http://127.0.0.1:8088/v1", api_key="unused")
      client.chat.completions.create(model="auto", messages=[...])
    Optional request headers: x-smallfleet-run (agent run id), x-smallfleet-budget (USD for
    that run; it can lower a run's budget, never raise it), x-smallfleet-session,
    x-smallfleet-step-kind (override the derived kind), x-smallfleet-kb (a knowledge base
    declared as [knowledge.NAME]).
    Response headers: x-smallfleet-model, -tier, -step-kind, -escalated, -cost, -verdict, -reason.
    Dashboard at http://HOST:PORT/ (over time, runs, steps with their attempts and verdicts,
    unverified answers, stopped tool calls, injections, learned clusters).

    \b
    Access: with no API keys the gateway serves loopback clients only; once
    `smallfleet keys create NAME` has made one, every endpoint needs a key.
    Limits ([server] in smallfleet.toml): max_body_mb (8), header_timeout_s (10),
    body_timeout_s (30), keepalive_s (5), max_connections (256), max_concurrent (64).
    """
    from ..engine import Engine
    from ..server import serve as run_server

    cfg = _config(ctx)
    h, p = host or cfg.host, port if port is not None else cfg.port
    _port_or_exit(h, p)  # before loading anything: a busy port is known in a millisecond
    engine = Engine(cfg)
    if cfg.memory.enabled:  # a fact store that cannot be opened (encrypted, key missing or wrong) fails here, not per request
        from ..memory.store import open_store

        open_store(cfg.memory).close()
    where = engine.ledger.where if engine.ledger is not None else "off"
    console.print(f"smallfleet gateway on [bold]http://{h}:{p}/v1[/] (dashboard http://{h}:{p}/) · ledger {where}")
    from ..db import redact_url
    from ..keys import KeyRing

    ring = KeyRing(cfg.key_store)
    n = ring.count
    ring.close()
    if n:
        console.print(f"  {n} API key(s) in {redact_url(str(cfg.key_store))}: every endpoint needs one")
    else:
        console.print("  no API keys: loopback clients only (create one with `smallfleet keys create NAME`)")
        if h not in ("127.0.0.1", "localhost", "::1"):
            console.print(f"  [yellow]bound to {h}, but without keys other machines are refused[/]")
    if workers > 1:
        from ..server import serve_workers

        if cfg.session_store is None:  # the workers share sessions through a file beside the ledger
            os.environ["SMALLFLEET_SESSION_STORE"] = str(cfg.ledger_path.parent / "sessions.db")
        store = redact_url(os.environ.get("SMALLFLEET_SESSION_STORE") or str(cfg.session_store))
        console.print(f"  {workers} worker processes; sessions' pseudonym vaults and Responses history shared in {store}")
        obj = ctx.ensure_object(dict)
        config_path = obj.get("config_path") or os.environ.get("SMALLFLEET_CONFIG")
        asyncio.run(engine.aclose())  # it served the checks above; each worker builds its own
        serve_workers(workers, str(config_path) if config_path else None, h, p, preload=preload, log_level=log_level)
        return
    if preload:
        _load_models(engine, cfg)
    run_server(engine, h, p, preload=False, log_level=log_level)


def _port_or_exit(host: str, port: int) -> None:
    from ..errors import ConfigError
    from ._checks import gateway_health, port_free

    if port_free(host, port):
        return
    who = (f"a smallfleet gateway already runs there (its dashboard: http://{host}:{port}/)"
           if gateway_health(host, port) is not None else "another program holds it")
    raise ConfigError(f"port {host}:{port} is in use: {who}.",
                      hint=f"pick another: smallfleet serve --port {port + 1} (or SMALLFLEET_PORT, or [server] port in "
                           "smallfleet.toml)")


def _load_models(engine: Any, cfg: Config) -> None:
    seen = set()
    for tier in cfg.tiers:
        spec = cfg.tier_model(tier)
        key = spec.stands_in_for or spec.name
        if not spec.is_local or key in seen:
            continue
        seen.add(key)
        from ..models.llamacpp import resolve_location

        with byte_progress(f"assembling/verifying {key}") as prog:
            resolve_location(spec, prog)  # one bar at a time: rich allows a single live display
        backend = engine.fleet.get(spec.name)
        with console.status(f"loading {key} …"):
            backend.load()
        console.print(f"  loaded {key} ({tier}) in {backend.load_seconds:.1f} s")


# -- run ---------------------------------------------------------------------------------------------
@cli.command()
@click.argument("prompt", required=False)
@click.option("--json", "json_in", type=click.File("rb"), help="Read a whole chat-completions request (JSON) from FILE or -.")
@click.option("--model", default="auto", show_default=True, help="'auto' routes; a fleet model name passes through.")
@click.option("--step-kind", default=None, help="Override the derived step kind.")
@click.option("--system", default=None, help="System prompt for PROMPT.")
@click.option("--max-tokens", type=int, default=256, show_default=True)
@click.option("--run-id", default=None, help="Agent run id for budgets and the ledger.")
@click.option("--raw", is_flag=True, help="Print the full OpenAI response JSON instead of the answer.")
@click.pass_context
def run(ctx: click.Context, prompt: str | None, json_in: Any, model: str, step_kind: str | None, system: str | None,
        max_tokens: int, run_id: str | None, raw: bool) -> None:
    """Run one agent step: a PROMPT, or a JSON request with --json."""
    from ..engine import Engine
    from ..errors import InvalidRequestError

    if json_in is not None:
        try:
            request = orjson.loads(json_in.read())
        except orjson.JSONDecodeError as e:
            raise InvalidRequestError(f"--json input is not valid JSON: {e}.") from None
        if isinstance(request, dict):
            request.setdefault("model", model)
    elif prompt:
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        request = {"model": model, "messages": msgs, "max_tokens": max_tokens}
    else:
        raise click.UsageError("give a PROMPT or --json FILE")

    async def go() -> Any:
        engine = Engine(_config(ctx))
        try:
            with console.status("thinking …"):
                return await engine.complete(request, step_kind=step_kind, run_id=run_id)
        finally:
            await engine.aclose()

    outcome = asyncio.run(go())
    if raw:
        from ..server.render import chat_completion

        out.print_json(orjson.dumps(chat_completion(outcome)).decode())
        return
    msg = outcome.final.result.message if outcome.final.result else {}
    if msg.get("tool_calls"):
        for tc in msg["tool_calls"]:
            out.print(f"[bold]tool call[/] {escape(tc['function']['name'])}({escape(tc['function']['arguments'])})")
    if msg.get("content"):
        out.print(msg["content"], markup=False, highlight=False)
    console.print(f"[dim]{outcome.step.kind.value} · {outcome.final.spec.name} ({outcome.final.tier}) · "
                  f"escalated={outcome.escalated} · ${outcome.cost_usd:.6f} · {escape(outcome.reason)}[/]")


# -- demo --------------------------------------------------------------------------------------------
@cli.command()
@click.option("--limit", type=int, default=None, help="Only the first N e-mails (default: all).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write per-step results as JSON.")
@click.option("--ledger", type=click.Path(dir_okay=False), default=None, help="Ledger file for this demo (default: the configured one).")
@click.option("--crosscheck/--no-crosscheck", default=True, show_default=True,
              help="Cross-check the reasoning steps with a program a local model writes, decided by the combined "
                   "reasoning score ([verify] program for this run).")
@click.pass_context
def demo(ctx: click.Context, limit: int | None, json_out: str | None, ledger: str | None, crosscheck: bool) -> None:
    """Run the shipped support-inbox agent workflow on the fleet.

    Each e-mail goes through the steps of a support agent: classify (closed label set), extract the
    order fields (JSON schema), work out the amount owed for refund and billing mail (reasoning,
    cross-checked by a program), choose a tool (function calling), answer from the tool's result.
    One e-mail is a genuinely hard case. Prints a per-step table, what each reasoning step was
    cross-checked with, and the total against every step on the frontier.
    """
    from dataclasses import replace

    from ..demo.inbox import run_demo

    cfg = _config(ctx)
    if ledger:
        cfg = replace(cfg, ledger_path=Path(ledger))
    cfg = replace(cfg, verify=replace(cfg.verify, program=crosscheck))
    run_demo(cfg, out, console, limit=limit, json_out=json_out, load=lambda e: _load_models(e, cfg))


# -- report ------------------------------------------------------------------------------------------
@cli.command(short_help="Spend, tier shares, escalations, savings vs all-frontier.")
@click.option("--run", "run_id", default=None, help="Only this agent run.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--ledger", type=click.Path(dir_okay=False), default=None, help="Ledger file (default: the configured one).")
@click.pass_context
def report(ctx: click.Context, run_id: str | None, as_json: bool, ledger: str | None) -> None:
    """Spend, share of steps per tier, escalation rate per step kind, savings vs all-frontier."""
    from ..errors import ConfigError
    from ..ledger import Ledger
    from ..report import build_report

    cfg = _config(ctx)
    target = Path(ledger).expanduser() if ledger else cfg.ledger_target
    if isinstance(target, Path) and not target.exists():
        raise ConfigError(f"no ledger at {target} yet.", hint="run `smallfleet demo` or send requests to `smallfleet serve` first")
    led = Ledger(target)
    try:
        rep = build_report(led, cfg, run_id)
    finally:
        led.close()
    if as_json:
        out.print_json(orjson.dumps(rep.as_dict()).decode())
        return
    print_report(rep, led.where)


def print_report(rep: Any, path: str | Path | None = None) -> None:
    title = f"ledger {path}" if path else "report"
    if rep.steps == 0:
        out.print(f"{title}: no steps recorded" + (f" for run {rep.run_id}" if rep.run_id else "") + ".")
        return
    out.print(f"[bold]{title}[/]" + (f" · run {rep.run_id}" if rep.run_id else ""))
    out.print(f"{rep.steps} steps, {rep.attempts} model calls · spend [bold]${rep.spend_usd:.6f}[/] · "
              f"all-frontier ${rep.counterfactual_usd:.6f} · saved [bold green]${rep.savings_usd:.6f} ({rep.savings_pct:.1f}%)[/] · "
              f"escalation rate {rep.escalation_rate:.1%}")
    out.print(f"verified {rep.verified_steps} · [bold]unverified {rep.unverified_steps}[/] (final answer still failing a check)"
              + (f" · {rep.failed_steps} in tasks reported failed" if rep.failed_steps else "")
              + f" · saved at parity [bold]${rep.parity_savings_usd:.6f} ({rep.parity_savings_pct:.1f}%)[/] "
              "[dim](a step that failed or was not verified counts its spend as a loss)[/]")
    out.print(f"[dim]{rep.basis}[/]")
    t = Table(title="steps per tier (final answer)")
    for c in ("tier", "steps", "share"):
        t.add_column(c, justify="right")
    for r in rep.by_tier:
        t.add_row(r["tier"] + (" (stand-in)" if r["stand_in"] else ""), str(r["steps"]), f"{r['share']:.1%}")
    out.print(t)
    t = Table(title="escalation per step kind")
    for c in ("step kind", "steps", "escalated", "rate", "spend $", "mean latency ms"):
        t.add_column(c, justify="right")
    for r in rep.by_kind:
        t.add_row(r["step_kind"], str(r["steps"]), str(r["escalated"]), f"{r['escalation_rate']:.1%}",
                  f"{r['spend_usd']:.6f}", f"{r['mean_latency_ms']:.0f}")
    out.print(t)
    g = rep.guard
    if g and any(g.get(k) for k in ("allowed", "blocked", "needs_confirmation", "flagged_only", "injections_flagged")):
        rules = ", ".join(f"{r} {n}" for r, n in sorted(g["by_rule"].items(), key=lambda x: -x[1]))
        out.print(f"tool-call guard: {g['allowed']} allowed, {g['blocked']} blocked, {g['needs_confirmation']} awaiting "
                  f"confirmation, {g['flagged_only']} flagged only; {g['injections_flagged']} injection(s) flagged"
                  + (f" [dim](by rule: {rules})[/]" if rules else ""))
