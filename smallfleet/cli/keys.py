"""Operator commands: API keys (keys create|ls|revoke) and run budgets (budget)."""

from __future__ import annotations

import sys
import time

import click
import orjson
from rich.table import Table

from ._app import _config, cli, console, out


@cli.group()
def keys() -> None:
    """API keys for the gateway. Once any key exists, every endpoint (API, report, dashboard) needs one.

    \b
    Send it as a bearer token, as the OpenAI SDK does with api_key:
      client = OpenAI(base_url="http://HOST:PORT/v1", api_key="sf-...")
    The dashboard asks for it once and keeps it in a same-site cookie. Runs, sessions and their
    memory belong to the key that created them; an --admin key also sees every run in the report.
    Without any key the gateway serves loopback clients only. Changes reach running gateways within
    about a second. The store is keys.db beside the ledger ([server] keys or SMALLFLEET_KEYS).
    """


def _store(ctx: click.Context):  # type: ignore[no-untyped-def]
    from ..keys import KeyStore

    return KeyStore(_config(ctx).key_store_path)


@keys.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="This key also sees every key's runs in the report and dashboard.")
@click.pass_context
def keys_create(ctx: click.Context, name: str, admin: bool) -> None:
    """Create a key named NAME; the key is printed once, on the last line (it is not stored, only its hash)."""
    with _store(ctx) as store:
        info, key = store.create(name, admin=admin)
        console.print(f"created key [bold]{info.name}[/] (id {info.id}{', admin' if admin else ''}) in {store.path}; "
                      "copy it now, it cannot be shown again:")
    sys.stdout.write(key + "\n")


@keys.command("ls")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_ls(ctx: click.Context, as_json: bool) -> None:
    """List keys (names, ids, when created or revoked; never the keys themselves)."""
    with _store(ctx) as store:
        rows = store.list()
    if as_json:
        sys.stdout.write(orjson.dumps([r.__dict__ for r in rows]).decode() + "\n")
        return
    if not rows:
        out.print("no keys: the gateway serves loopback clients only (create one with `smallfleet keys create NAME`)")
        return
    t = Table(title=f"{sum(r.active for r in rows)} active key(s)")
    for c in ("name", "id", "admin", "created", "revoked"):
        t.add_column(c)
    for r in rows:
        t.add_row(r.name, r.id, "yes" if r.admin else "", time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)),
                  time.strftime("%Y-%m-%d %H:%M", time.localtime(r.revoked)) if r.revoked else "")
    out.print(t)


@keys.command("revoke")
@click.argument("name_or_id")
@click.pass_context
def keys_revoke(ctx: click.Context, name_or_id: str) -> None:
    """Revoke a key by name or id; running gateways refuse it within about a second."""
    with _store(ctx) as store:
        info = store.revoke(name_or_id)
        left = sum(k.active for k in store.list())
    if info is None:
        console.print(f"[red]no active key named {name_or_id!r}[/]")
        sys.exit(1)
    out.print(f"revoked {info.name} ({info.id})" + ("" if left else "; no active key is left: the gateway now serves loopback only"))


@cli.command()
@click.argument("run_id")
@click.argument("usd", required=False)
@click.option("--key", "key_id", default=None, help="The run belongs to this key id (runs of keyed clients are KEYID:RUN).")
@click.pass_context
def budget(ctx: click.Context, run_id: str, usd: str | None, key_id: str | None) -> None:
    """Show a run's spend and budget, or set it to USD ("none" removes it).

    Clients can only set or lower a run's budget (x-smallfleet-budget); raising it is this command.
    A running gateway sees the change within a few seconds.
    """
    from ..errors import InvalidRequestError
    from ..ledger import Ledger
    from ..ledger import usd as fmt

    cfg = _config(ctx)
    run = f"{key_id}:{run_id}" if key_id else run_id
    led = Ledger(cfg.ledger_target)
    try:
        if usd is not None:
            try:
                value = None if usd.lower() == "none" else float(usd)
            except ValueError:
                raise InvalidRequestError(f"{usd!r} is not a number of USD (or 'none').") from None
            led.set_budget(run, value)
        row = led.run(run)
    finally:
        led.close()
    if row is None:
        out.print(f"no run {run!r} in {led.where}")
        sys.exit(1)
    limit = "none" if row["budget_usd"] is None else fmt(row["budget_usd"])
    out.print(f"run {run}: {row['steps']} step(s), spent {fmt(row['spent_usd'])}, budget {limit}")
