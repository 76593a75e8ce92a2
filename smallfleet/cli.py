"""The ``smallfleet`` command line: serve, run, demo, report, models, doctor."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import assets
from .config import ENV_VARS, Config, load_config
from .errors import SmallfleetError

console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 160)  # logs and CI get full-width tables

ENV_HELP = "\n".join(f"  {k:<28} {v}" for k, v in ENV_VARS.items())


@contextmanager
def byte_progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar fed by (done, total) byte counts; silent when nothing happens."""
    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                    console=console, transient=True)
    task: list[Any] = []

    def update(done: int, total: int) -> None:
        if not task:
            prog.start()
            task.append(prog.add_task(label, total=total))
        prog.update(task[0], completed=done)

    try:
        yield update
    finally:
        if task:
            prog.stop()


def _config(ctx: click.Context) -> Config:
    obj = ctx.ensure_object(dict)
    if "config" not in obj:
        obj["config"] = load_config(obj.get("config_path"))
    return obj["config"]


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SmallfleetError as e:
            console.print(f"[bold red]error:[/] {e.message}")
            if e.hint:
                console.print(f"  [yellow]hint:[/] {e.hint}")
            sys.exit(2 if e.status < 500 or e.type == "config_error" else 1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog="\b\nEnvironment variables (override smallfleet.toml):\n" + ENV_HELP)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="SMALLFLEET_CONFIG",
              help="smallfleet.toml to load (default: ./smallfleet.toml if present, else built-in fleet).")
@click.version_option(package_name="smallfleet")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """smallfleet runs each agent step on the cheapest small model that can do it.

    Every request is one agent step: smallfleet classifies it (tool choice, extraction,
    classification, reshaping, reasoning, generation), runs it on the starting tier of the fleet,
    checks the answer (schema, tool-call validity, non-empty, non-refusal, token confidence),
    escalates one tier when a check fails, and records cost and verdicts in a SQLite ledger.

    \b
    Start here:
      smallfleet doctor          check the setup, say how to fix what is missing
      smallfleet demo            a support-inbox agent workflow on the local fleet
      smallfleet serve           OpenAI-compatible gateway; use model "auto"
      smallfleet run "prompt"    one step from the shell
      smallfleet report          spend, tiers, escalations, savings
      smallfleet redact          pseudonymise personal data (JSON lines), locally
      smallfleet verify          check reasoning traces with the process verifier
      smallfleet index add PATH  build a local knowledge base; smallfleet search QUERY
    """
    ctx.ensure_object(dict)["config_path"] = config_path


# -- serve -------------------------------------------------------------------------------------------
@cli.command()
@click.option("--host", default=None, help="Bind address (default from config: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default from config: 8088).")
@click.option("--preload/--lazy", default=False, help="Load local models at start-up instead of on first use.")
@click.option("--log-level", default="warning", type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, preload: bool, log_level: str) -> None:
    """Serve the OpenAI-compatible gateway.

    \b
    Point any OpenAI client at it:
      client = OpenAI(base_url="http://127.0.0.1:8088/v1", api_key="unused")
      client.chat.completions.create(model="auto", messages=[...])
    Optional request headers: x-smallfleet-run (agent run id), x-smallfleet-budget (USD for
    that run), x-smallfleet-session, x-smallfleet-step-kind (override the derived kind).
    Response headers: x-smallfleet-model, -tier, -step-kind, -escalated, -cost, -reason.
    Dashboard at http://HOST:PORT/ .
    """
    from .engine import Engine
    from .server import serve as run_server

    cfg = _config(ctx)
    engine = Engine(cfg)
    h, p = host or cfg.host, port if port is not None else cfg.port
    console.print(f"smallfleet gateway on [bold]http://{h}:{p}/v1[/] (dashboard http://{h}:{p}/) · ledger {cfg.ledger_path}")
    if preload:
        _load_models(engine, cfg)
    run_server(engine, h, p, preload=False, log_level=log_level)


def _load_models(engine: Any, cfg: Config) -> None:
    seen = set()
    for tier in cfg.tiers:
        spec = cfg.tier_model(tier)
        key = spec.stands_in_for or spec.name
        if not spec.is_local or key in seen:
            continue
        seen.add(key)
        from .models.llamacpp import resolve_location

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
    from .engine import Engine
    from .errors import InvalidRequestError

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
        out.print_json(orjson.dumps(outcome.response()).decode())
        return
    msg = outcome.final.result.message if outcome.final.result else {}
    if msg.get("tool_calls"):
        for tc in msg["tool_calls"]:
            out.print(f"[bold]tool call[/] {tc['function']['name']}({tc['function']['arguments']})")
    if msg.get("content"):
        out.print(msg["content"], markup=False, highlight=False)
    console.print(f"[dim]{outcome.step.kind.value} · {outcome.final.spec.name} ({outcome.final.tier}) · "
                  f"escalated={outcome.escalated} · ${outcome.cost_usd:.6f} · {outcome.reason}[/]")


# -- demo --------------------------------------------------------------------------------------------
@cli.command()
@click.option("--limit", type=int, default=None, help="Only the first N e-mails (default: all).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write per-step results as JSON.")
@click.option("--ledger", type=click.Path(dir_okay=False), default=None, help="Ledger file for this demo (default: the configured one).")
@click.pass_context
def demo(ctx: click.Context, limit: int | None, json_out: str | None, ledger: str | None) -> None:
    """Run the shipped support-inbox agent workflow on the fleet.

    Each e-mail goes through four agent steps: classify (closed label set), extract the order
    fields (JSON schema), choose a tool (function calling) and draft a reply. One e-mail is a
    genuinely hard case. Prints a per-step table and the total against every step on the frontier.
    """
    from dataclasses import replace

    from .demo.inbox import run_demo

    cfg = _config(ctx)
    if ledger:
        cfg = replace(cfg, ledger_path=Path(ledger))
    run_demo(cfg, out, console, limit=limit, json_out=json_out, load=lambda e: _load_models(e, cfg))


# -- report ------------------------------------------------------------------------------------------
@cli.command(short_help="Spend, tier shares, escalations, savings vs all-frontier.")
@click.option("--run", "run_id", default=None, help="Only this agent run.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--ledger", type=click.Path(dir_okay=False), default=None, help="Ledger file (default: the configured one).")
@click.pass_context
def report(ctx: click.Context, run_id: str | None, as_json: bool, ledger: str | None) -> None:
    """Spend, share of steps per tier, escalation rate per step kind, savings vs all-frontier."""
    from .errors import ConfigError
    from .ledger import Ledger
    from .report import build_report

    cfg = _config(ctx)
    path = Path(ledger).expanduser() if ledger else cfg.ledger_path
    if not path.exists():
        raise ConfigError(f"no ledger at {path} yet.", hint="run `smallfleet demo` or send requests to `smallfleet serve` first")
    led = Ledger(path)
    try:
        rep = build_report(led, cfg, run_id)
    finally:
        led.close()
    if as_json:
        out.print_json(orjson.dumps(rep.as_dict()).decode())
        return
    print_report(rep, path)


def print_report(rep: Any, path: Path | None = None) -> None:
    title = f"ledger {path}" if path else "report"
    if rep.steps == 0:
        out.print(f"{title}: no steps recorded" + (f" for run {rep.run_id}" if rep.run_id else "") + ".")
        return
    out.print(f"[bold]{title}[/]" + (f" · run {rep.run_id}" if rep.run_id else ""))
    out.print(f"{rep.steps} steps, {rep.attempts} model calls · spend [bold]${rep.spend_usd:.6f}[/] · "
              f"all-frontier ${rep.counterfactual_usd:.6f} · saved [bold green]${rep.savings_usd:.6f} ({rep.savings_pct:.1f}%)[/] · "
              f"escalation rate {rep.escalation_rate:.1%}")
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


# -- models ------------------------------------------------------------------------------------------
@cli.command(short_help="The fleet: installed? sha256 verified? loaded?")
@click.option("--install", is_flag=True, help="Assemble and sha256-verify every packaged model now (with progress).")
@click.option("--load", is_flag=True, help="Also load each local model once to prove it runs.")
@click.pass_context
def models(ctx: click.Context, install: bool, load: bool) -> None:
    """List the fleet: installed? sha256 verified? loaded in a running gateway?"""
    cfg = _config(ctx)
    gateway = _gateway_health(cfg)
    if install or load:
        for spec in cfg.models.values():
            if spec.is_local and spec.location.startswith("package:") and not spec.stands_in_for:
                name = spec.location.removeprefix("package:")
                with byte_progress(f"assembling/verifying {name}") as prog:
                    path = assets.ensure_packaged(name, prog)
                console.print(f"  {name}: verified → {path}")
                if load:
                    from .models.llamacpp import LlamaCppBackend

                    b = LlamaCppBackend(spec)
                    with console.status(f"loading {name} …"):
                        b.load()
                    console.print(f"  {name}: loaded in {b.load_seconds:.1f} s")
    t = Table(title=f"fleet ({cfg.source})")
    for c in ("model", "tier", "backend", "location", "$ in/out per 1M", "installed", "sha256", "loaded"):
        t.add_column(c)
    for spec in cfg.models.values():
        inst, sha = _model_state(spec)
        loaded = "—" if gateway is None else ("yes" if gateway.get(spec.name) else "no")
        t.add_row(spec.name + (f" (= {spec.stands_in_for})" if spec.stands_in_for else ""), spec.tier, spec.backend,
                  spec.location, f"{spec.price_in:.2f}/{spec.price_out:.2f}", inst, sha, loaded)
    out.print(t)
    if gateway is None:
        out.print(f"[dim]loaded: no gateway answering at {cfg.host}:{cfg.port}[/]")


def _model_state(spec: Any) -> tuple[str, str]:
    if not spec.is_local:
        key = spec.resolved_api_key()
        return ("remote", "key set" if key else f"[red]no key ({spec.api_key_env})[/]")
    loc = spec.location
    if loc.startswith("package:"):
        name = loc.removeprefix("package:")
        if name not in assets.PACKAGED_MODELS:
            return "[red]unknown package[/]", "—"
        st = assets.status(name)
        if not st.installed:
            return "[red]no[/]", "—"
        return "yes", "[green]ok[/]" if st.verified else ("not checked" if st.assembled else "not assembled")
    p = Path(loc).expanduser()
    return ("yes" if p.is_file() else "[red]missing[/]"), "no pin"


def _gateway_health(cfg: Config) -> dict[str, bool] | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{cfg.host}:{cfg.port}/health", timeout=0.5) as r:
            return orjson.loads(r.read()).get("models")
    except Exception:  # nothing there, or not a smallfleet gateway
        return None


# -- doctor ------------------------------------------------------------------------------------------
@cli.command(short_help="Check the whole setup; say how to fix what is missing.")
@click.option("--load/--no-load", default=True, show_default=True, help="Load each local model once.")
@click.pass_context
def doctor(ctx: click.Context, load: bool) -> None:
    """Check the whole setup and say how to fix what is missing (exit 1 if anything is broken)."""
    problems = 0

    def ok(msg: str) -> None:
        out.print(f"[green]✓[/] {msg}")

    def bad(msg: str, fix: str) -> None:
        nonlocal problems
        problems += 1
        out.print(f"[red]✗[/] {msg}\n    [yellow]fix:[/] {fix}")

    v = sys.version_info
    (ok if v >= (3, 11) else lambda m: bad(m, "use Python 3.11+"))(f"Python {v.major}.{v.minor}.{v.micro}")
    try:
        import xllamacpp  # noqa: F401

        ok("xllamacpp imports")
    except Exception as e:
        bad(f"xllamacpp does not import: {e}", "pip install xllamacpp (or `make install`)")
    try:
        cfg = _config(ctx)
        ok(f"config valid ({cfg.source}); tiers {' → '.join(cfg.tiers)}")
    except SmallfleetError as e:
        bad(f"config: {e.message}", e.hint or "fix smallfleet.toml")
        sys.exit(1)
    for spec in cfg.models.values():
        if spec.stands_in_for:
            ok(f"{spec.name}: no frontier API configured; {spec.stands_in_for} stands in "
               f"(set SMALLFLEET_FRONTIER_URL/MODEL or OPENAI_API_KEY for a real one)")
            continue
        if not spec.is_local:
            if spec.resolved_api_key():
                ok(f"{spec.name}: {spec.backend} API at {spec.location}, key set")
            else:
                bad(f"{spec.name}: no API key", f"export {spec.api_key_env or 'SMALLFLEET_FRONTIER_API_KEY'}=...")
            continue
        try:
            from .models.llamacpp import LlamaCppBackend, resolve_location

            with byte_progress(f"assembling/verifying {spec.name}") as prog:
                path = resolve_location(spec, prog)
            ok(f"{spec.name}: {path} (sha256 verified)" if spec.location.startswith("package:") else f"{spec.name}: {path}")
            if load:
                b = LlamaCppBackend(spec)
                with console.status(f"loading {spec.name} …"):
                    b.load()
                ok(f"{spec.name}: loads in {b.load_seconds:.1f} s")
        except SmallfleetError as e:
            bad(f"{spec.name}: {e.message}", e.hint or "see smallfleet models")
    try:
        from .ledger import Ledger

        led = Ledger(cfg.ledger_path)
        led.close()
        ok(f"ledger writable at {cfg.ledger_path}")
    except SmallfleetError as e:
        bad(e.message, e.hint or "set SMALLFLEET_LEDGER to a writable path")
    import socket

    with socket.socket() as s:
        try:
            s.bind((cfg.host, cfg.port))
            ok(f"port {cfg.host}:{cfg.port} is free for `smallfleet serve`")
        except OSError:
            if _gateway_health(cfg) is not None:
                ok(f"a smallfleet gateway already answers on {cfg.host}:{cfg.port}")
            else:
                bad(f"port {cfg.host}:{cfg.port} is in use", "smallfleet serve --port N, or set SMALLFLEET_PORT")
    if problems:
        out.print(f"[red]{problems} problem(s)[/]")
        sys.exit(1)
    out.print("[green]all good[/]")


# -- redact ------------------------------------------------------------------------------------------
@cli.command(short_help="Pseudonymise personal data in JSON lines (or --restore it).")
@click.argument("source", type=click.File("r", encoding="utf-8"), default="-")
@click.option("--restore", is_flag=True, help="Reverse: put the original values back, using --vault.")
@click.option("--vault", "vault_path", type=click.Path(dir_okay=False),
              help="Encrypted vault file (key in SMALLFLEET_VAULT_KEY): written after redacting, read for --restore.")
@click.option("--entities", default=None, help="Comma-separated entity types to look for (default: all).")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Minimum detection score.")
@click.option("--no-ner", is_flag=True, help="Patterns only (no spaCy): faster, finds no names or places.")
@click.pass_context
def redact(ctx: click.Context, source: Any, restore: bool, vault_path: str | None, entities: str | None,
           threshold: float, no_ner: bool) -> None:
    """Pseudonymise personal data, locally: JSON lines in, JSON lines out.

    \b
    Input lines:   {"text": "Mail jane@example.com"}
    Output lines:  {"redacted": "Mail <EMAIL_ADDRESS_1>",
                    "entities": [{"type": "EMAIL_ADDRESS", "start": 5, "end": 21, "placeholder": "<EMAIL_ADDRESS_1>"}]}
    With --restore: {"text": "..."} in, {"restored": ..., "mangled": [...], "unknown": [...]} out.

    All lines share one vault, so the same value gets the same placeholder throughout. A bad line
    gets {"line": N, "error": ...} and the rest go on; the exit code is 1 if any line failed.
    """
    from .errors import ConfigError
    from .privacy import Detector, Pseudonymizer, Vault

    if restore and not vault_path:
        raise click.UsageError("--restore needs --vault FILE (written by an earlier `smallfleet redact --vault FILE`)")
    kinds = [k.strip() for k in entities.split(",")] if entities else None
    try:
        detector = Detector(entities=kinds, threshold=threshold, ner=not no_ner)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    vault = Vault.load(vault_path) if restore else Vault()
    pz = Pseudonymizer(detector, vault)
    failed = 0

    def emit(obj: dict[str, Any]) -> None:
        sys.stdout.write(orjson.dumps(obj).decode() + "\n")

    def parse(line: str) -> tuple[str | None, str | None]:
        """(text, None) or (None, what is wrong with the line)."""
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            return None, f"not valid JSON: {e}"
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            return None, 'expected an object with a string field "text"'
        return obj["text"], None

    batch: list[tuple[int, str]] = []

    def flush() -> None:
        texts = [t for _, t in batch]
        if restore:
            for n, t in batch:
                r = pz.restore(t)
                emit({"restored": r.text, "mangled": r.mangled, "unknown": r.unknown})
        else:
            for (n, t), ents in zip(batch, detector.detect_batch(texts)):
                r = pz.redact(t, ents)
                out = {"redacted": r.text, "entities": r.entities}
                if r.chunks > 1:
                    out["chunks"] = r.chunks
                    console.print(f"[yellow]line {n}: {len(t)} characters, detected in {r.chunks} chunks[/]")
                emit(out)
        batch.clear()

    for n, line in enumerate(source, 1):
        if not line.strip():
            continue
        text, error = parse(line)
        if error is not None:
            flush()  # keep output in input order
            failed += 1
            emit({"line": n, "error": error})
            continue
        batch.append((n, text or ""))
        if len(batch) >= 64:
            flush()
    flush()
    if vault_path and not restore:
        vault.save(vault_path)
        console.print(f"[dim]vault with {len(vault)} values written to {vault_path} (encrypted)[/]")
    if failed:
        console.print(f"[red]{failed} line(s) failed[/]")
        sys.exit(1)


# -- verify ------------------------------------------------------------------------------------------
@cli.command(short_help="Check reasoning traces (JSON lines) with the process verifier.")
@click.argument("source", type=click.File("r", encoding="utf-8"), default="-")
@click.option("--verifier", "artifact", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A verifier artifact (default: the one shipped in the package).")
def verify(source: Any, artifact: str | None) -> None:
    """Score reasoning traces: JSON lines in, JSON lines out.

    \b
    Input lines:   {"problem": "...", "steps": ["step 1", "step 2", ...]}   (other fields ignored)
    Output lines:  {"first_error_step": 1, "p_flawed": 0.83, "step_scores": [0.1, 0.83], ...}
    first_error_step is -1 when no error is found. Each step is recomputed (arithmetic) and scored
    by the distilled verifier; traces over 64 steps are cut and say so. A bad line gets
    {"line": N, "error": ...}; the exit code is 1 if any line failed.
    """
    from .errors import SmallfleetError
    from .verify import ProcessVerifier
    from .verify.arith import equations

    v = ProcessVerifier.load(artifact)
    failed = 0
    for n, line in enumerate(source, 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            if not isinstance(obj, dict):
                raise SmallfleetError("expected a JSON object")
            res = v.verify(obj.get("problem"), obj.get("steps"))
            out = res.as_dict()
            wrong = [{"step": i, "expression": e.expr, "claimed": e.claimed, "actual": e.actual}
                     for i, st in enumerate(obj["steps"][:len(res.step_scores)]) for e in equations(st) if e.ok is False]
            if wrong:
                out["arithmetic_errors"] = wrong
            sys.stdout.write(orjson.dumps(out).decode() + "\n")
        except (orjson.JSONDecodeError, SmallfleetError) as e:
            failed += 1
            msg = f"not valid JSON: {e}" if isinstance(e, orjson.JSONDecodeError) else getattr(e, "message", str(e))
            sys.stdout.write(orjson.dumps({"line": n, "error": msg}).decode() + "\n")
    if failed:
        console.print(f"[red]{failed} line(s) failed[/]")
        sys.exit(1)


@cli.group()
def verifier() -> None:
    """Train or inspect the distilled process verifier."""


@verifier.command("train")
@click.option("--holdout", type=click.Choice(["none", "gsm8k", "math"]), default="none", show_default=True,
              help="Leave one ProcessBench subset out (for honest benchmarks).")
@click.option("--out", type=click.Path(dir_okay=False), default="smallfleet/verify/data/verifier-v1.json", show_default=True)
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Data folder with processbench/ and gsm8k/ (default: ../shared/data beside the checkout).")
@click.option("--synthetic", type=int, default=3000, show_default=True, help="GSM8K-train problems to perturb.")
@click.option("--seed", type=int, default=1234, show_default=True)
def verifier_train(holdout: str, out: str, data_dir: str | None, synthetic: int, seed: int) -> None:
    """Train reproducibly from ProcessBench + synthetic flawed GSM8K-train traces; write the artifact."""
    from .verify import train_verifier

    with console.status("extracting features and training …"):
        meta = train_verifier(None if holdout == "none" else holdout, out, data_dir, synthetic, seed)
    m = meta["train_metrics"]
    console.print(f"wrote {out}: {meta['training_traces']} traces ({meta['training_steps']} steps), threshold "
                  f"{meta['threshold']}, on ProcessBench training traces acc_err {m['acc_erroneous']:.3f} acc_ok "
                  f"{m['acc_correct']:.3f} F1 {m['f1']:.3f}; data sha256 {meta['training_data_sha256'][:12]}…")


@verifier.command("info")
@click.option("--verifier", "artifact", type=click.Path(dir_okay=False, exists=True), default=None)
def verifier_info(artifact: str | None) -> None:
    """Show the artifact's training data hash, sizes and metrics."""
    from .verify import ProcessVerifier

    meta = dict(ProcessVerifier.load(artifact).meta)
    for k in ("weights", "mean", "scale"):
        meta.pop(k, None)
    out.print_json(orjson.dumps(meta).decode())


# -- index / search ----------------------------------------------------------------------------------
def _default_index() -> str:
    from .config import default_data_dir

    return str(default_data_dir() / "index.db")


_INDEX_OPT = click.option("--index", "index_path", type=click.Path(dir_okay=False), default=None,
                          help="The knowledge-base file (default: ~/.local/share/smallfleet/index.db).")


@cli.group()
def index() -> None:
    """A local knowledge base: add, remove and list documents (text, Markdown, HTML, PDF)."""


@index.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@_INDEX_OPT
def index_add(paths: tuple[str, ...], index_path: str | None) -> None:
    """Index files (folders are walked); unchanged files are skipped, changed ones re-indexed."""
    from rich.progress import track

    from .retrieval import Store

    store = Store(index_path or _default_index())
    own = str(store.path.resolve())
    files = [f for p in paths for f in ([Path(p)] if Path(p).is_file() else sorted(x for x in Path(p).rglob("*") if x.is_file()))
             if not str(f.resolve()).startswith(own)]  # never index the index (or its -wal/-shm files)
    counts: dict[str, int] = {}
    failed = 0
    for f in track(files, description="indexing", console=console, transient=True):
        try:
            status = store.add(f)
            counts[status] = counts.get(status, 0) + 1
        except SmallfleetError as e:
            failed += 1
            console.print(f"[yellow]skipped[/] {e.message}")
    store.close()
    out.print(", ".join(f"{n} {k}" for k, n in counts.items()) or "nothing indexed")
    if failed:
        console.print(f"[red]{failed} file(s) could not be indexed[/]")
        sys.exit(1)


@index.command("rm")
@click.argument("paths", nargs=-1, required=True)
@_INDEX_OPT
def index_rm(paths: tuple[str, ...], index_path: str | None) -> None:
    """Remove documents from the index."""
    from .retrieval import Store

    store = Store(index_path or _default_index())
    missing = [p for p in paths if not store.remove(p)]
    store.close()
    if missing:
        console.print(f"[red]not in the index:[/] {', '.join(missing)}")
        sys.exit(1)


@index.command("ls")
@_INDEX_OPT
@click.option("--json", "as_json", is_flag=True)
def index_ls(index_path: str | None, as_json: bool) -> None:
    """List indexed documents."""
    from .retrieval import Store

    store = Store(index_path or _default_index())
    docs = store.list()
    store.close()
    if as_json:
        out.print_json(orjson.dumps(docs).decode())
        return
    t = Table(title=f"{len(docs)} documents")
    for c in ("path", "chunks", "bytes"):
        t.add_column(c)
    for d in docs:
        t.add_row(d["path"], str(d["chunks"]), str(d["bytes"]))
    out.print(t)


@cli.command()
@click.argument("query")
@_INDEX_OPT
@click.option("--k", type=int, default=5, show_default=True, help="How many chunks.")
@click.option("--mode", type=click.Choice(["hybrid", "bm25", "dense"]), default="hybrid", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON output: ranked chunks with id, source, score, text.")
def search(query: str, index_path: str | None, k: int, mode: str, as_json: bool) -> None:
    """Search the knowledge base; QUERY "-" reads one query per line from stdin (models load once)."""
    from .errors import ConfigError
    from .retrieval import Store, only_stopwords

    path = Path(index_path or _default_index()).expanduser()
    if not path.exists():
        raise ConfigError(f"no index at {path}.", hint="add documents first: smallfleet index add PATH...")
    store = Store(path)
    if store.count() == 0:
        console.print("[yellow]the index is empty[/]: add documents with `smallfleet index add`")
    queries = [q.strip() for q in sys.stdin] if query == "-" else [query]
    for q in queries:
        if not q:
            continue
        if only_stopwords(q):
            console.print(f"[yellow]{q!r} has only common words: ranked by meaning alone[/]")
        hits = store.search(q, k, mode)
        if as_json or query == "-":
            sys.stdout.write(orjson.dumps([h.as_dict() for h in hits]).decode() + "\n")
        else:
            for h in hits:
                out.print(f"[bold]{h.score:.4f}[/] {h.source} [dim]#{h.id}[/]\n  {' '.join(h.text.split())[:200]}")
    store.close()


from .evals.cli import bench as _bench  # noqa: E402 - its own module; heavy imports stay inside the command
from .guards.cli import detector as _detector  # noqa: E402

cli.add_command(_bench)
cli.add_command(_detector)


@cli.command(short_help="Answer a question from the knowledge base, with citations.")
@click.argument("question")
@_INDEX_OPT
@click.option("--model", default="auto", show_default=True, help="'auto' routes and escalates; a fleet model name passes through.")
@click.option("--max-tokens", type=int, default=300, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON: answer, citations (n, id, source, score, relevance, cited), verdict.")
@click.pass_context
def ask(ctx: click.Context, question: str, index_path: str | None, model: str, max_tokens: int, as_json: bool) -> None:
    """A grounded answer: evidence from the index, numbered citations, and a check that every number,
    name and quote in the answer comes from the evidence (else one tier up, or "not in the sources")."""
    from .engine import Engine
    from .errors import ConfigError

    path = Path(index_path or _default_index()).expanduser()
    if not path.is_file():
        raise ConfigError(f"no index at {path}.", hint="add documents first: smallfleet index add PATH...")
    if not question.strip():
        raise click.UsageError("the question is empty")
    request = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": question}]}

    async def go() -> Any:
        engine = Engine(_config(ctx))
        try:
            with console.status("searching and answering …"):
                return await engine.complete(request, kb=str(path))
        finally:
            await engine.aclose()

    outcome = asyncio.run(go())
    ev = outcome.step.evidence
    answer = (outcome.final.result.message.get("content") if outcome.final.result else "") or ""
    if as_json:
        sys.stdout.write(orjson.dumps({"answer": answer, "citations": ev.citations() if ev else [], "verdict": outcome.verdict,
                                       "model": outcome.final.spec.name, "escalated": outcome.escalated,
                                       "reason": outcome.reason}).decode() + "\n")
        return
    out.print(answer, markup=False, highlight=False)
    for c in ev.citations() if ev else []:
        mark = "[bold]*[/]" if c["cited"] else " "
        out.print(f"{mark} [{c['n']}] {c['source']} [dim]#{c['id']} relevance {c['relevance']:.2f}[/]")
    console.print(f"[dim]{outcome.final.spec.name} ({outcome.final.tier}) · verdict {outcome.verdict} · "
                  f"escalated={outcome.escalated} · {outcome.reason}[/]")


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli(prog_name="smallfleet")


if __name__ == "__main__":
    main()
