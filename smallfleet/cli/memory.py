"""Session memory on the command line: list sessions, show what is kept about one, forget it."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import orjson
from rich.table import Table

from ._app import _config, cli, console, out


def _store(ctx: click.Context) -> Any:
    from ..errors import ConfigError
    from ..memory.store import open_store

    m = _config(ctx).memory
    if not m.url and not m.store_path.is_file():
        raise ConfigError(f"no session memory at {m.store_path}.",
                          hint="it is created by the gateway on the first request with x-smallfleet-session; "
                               "or set [memory] path")
    return open_store(m)


@cli.group()
def memory() -> None:
    """Session memory: the facts the gateway kept per x-smallfleet-session (see [memory] in the config)."""


@memory.command("ls")
@click.option("--json", "as_json", is_flag=True, help="JSON: [{session, active, facts, last}].")
@click.pass_context
def memory_ls(ctx: click.Context, as_json: bool) -> None:
    """List the sessions with facts, newest first."""
    store = _store(ctx)
    rows = store.sessions()
    store.close()
    if as_json:
        sys.stdout.write(orjson.dumps(rows).decode() + "\n")
        return
    t = Table(title=f"{len(rows)} sessions")
    for c in ("session", "active facts", "with history", "last write"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["session"], str(r["active"]), str(r["facts"]), time.strftime("%Y-%m-%d %H:%M", time.localtime(r["last"])))
    out.print(t)


@memory.command("show")
@click.argument("session")
@click.option("--history", is_flag=True, help="Also superseded values.")
@click.option("--json", "as_json", is_flag=True, help="JSON: one object per fact (key, value, turn, source, trust, active).")
@click.pass_context
def memory_show(ctx: click.Context, session: str, history: bool, as_json: bool) -> None:
    """The facts kept for SESSION, with where each came from (turn, role, trust label)."""
    store = _store(ctx)
    facts = store.facts(session, include_history=history)
    store.close()
    if as_json:
        keep = ("key", "label", "value", "turn", "source", "trust", "active", "superseded_by")
        sys.stdout.write(orjson.dumps([{k: getattr(f, k) for k in keep} for f in facts]).decode() + "\n")
        return
    if not facts:
        console.print(f"[yellow]no facts for session {session!r}[/]")
        return
    t = Table(title=f"session {session}")
    for c in ("key", "value", "turn", "source", "trust") + (("active",) if history else ()):
        t.add_column(c)
    for f in facts:
        t.add_row(f.label, f.value, str(f.turn), f.source, f.trust, *(("yes" if f.active else "no",) if history else ()))
    out.print(t)


@memory.command("forget")
@click.argument("session")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def memory_forget(ctx: click.Context, session: str, yes: bool) -> None:
    """Delete every fact (history included) and read mark of SESSION."""
    store = _store(ctx)
    try:
        n = len(store.facts(session, include_history=True))
        if not n:
            console.print(f"[yellow]no facts for session {session!r}[/]")
            return
        if not yes and not click.confirm(f"delete {n} fact(s) of session {session!r}?", err=True):
            sys.exit(1)
        out.print(f"forgot {store.forget(session)} fact(s) of session {session!r}")
    finally:
        store.close()
