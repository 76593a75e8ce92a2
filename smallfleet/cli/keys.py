"""Operator commands: API keys (keys create|ls|revoke) and run budgets (budget)."""

from __future__ import annotations

import sys
import time

import click
import orjson
from rich.table import Table

from ..keys import KeyInfo
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
    about a second. The store is keys.db beside the ledger ([server] keys or SMALLFLEET_KEYS), or the
    PostgreSQL database when one is set (SMALLFLEET_DATABASE_URL), shared by every replica.
    Limits per key: `keys limit NAME --budget USD --rpm N --models small,large`.
    """


def _store(ctx: click.Context):  # type: ignore[no-untyped-def]
    from ..keys import KeyStore

    return KeyStore(_config(ctx).key_store)


def _models(value: str | None) -> list[str] | None:
    return [m.strip() for m in value.split(",") if m.strip()] if value else None


def _usd(value: str) -> float | None:
    from ..errors import InvalidRequestError

    try:
        return None if value.lower() == "none" else float(value)
    except ValueError:
        raise InvalidRequestError(f"{value!r} is not a number of USD (or 'none').") from None


def _set_budget(ctx: click.Context, key_id: str, value: float | None) -> None:
    from ..keys import account
    from ..ledger import Ledger

    led = Ledger(_config(ctx).ledger_target)
    try:
        led.set_budget(account(key_id), value)
    finally:
        led.close()


@keys.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="This key also sees every key's runs in the report and dashboard.")
@click.option("--budget", "budget_usd", default=None, metavar="USD", help="Spend limit in USD over all of this key's steps.")
@click.option("--rpm", type=int, default=None, help="At most this many requests a minute (all replicas together).")
@click.option("--models", default=None, metavar="A,B", help="Only these fleet models or tiers (e.g. small,large); default all.")
@click.pass_context
def keys_create(ctx: click.Context, name: str, admin: bool, budget_usd: str | None, rpm: int | None, models: str | None) -> None:
    """Create a key named NAME; the key is printed once, on the last line (it is not stored, only its hash)."""
    budget = _usd(budget_usd) if budget_usd is not None else None
    from ..ledger import check_budget_value

    check_budget_value(budget)
    with _store(ctx) as store:
        info, key = store.create(name, admin=admin, rpm=rpm, models=_models(models))
        if budget is not None:
            _set_budget(ctx, info.id, budget)
        console.print(f"created key [bold]{info.name}[/] (id {info.id}{', admin' if admin else ''}) in {store.where}; "
                      "copy it now, it cannot be shown again:")
    sys.stdout.write(key + "\n")


@keys.command("limit")
@click.argument("name_or_id")
@click.option("--budget", "budget_usd", default=None, metavar="USD", help="Spend limit in USD over all its steps ('none' removes it).")
@click.option("--rpm", default=None, metavar="N", help="Requests a minute, all replicas together ('none' removes it).")
@click.option("--models", default=None, metavar="A,B", help="Only these fleet models or tiers ('all' removes the limit).")
@click.pass_context
def keys_limit(ctx: click.Context, name_or_id: str, budget_usd: str | None, rpm: str | None, models: str | None) -> None:
    """Set or remove a key's budget, rate limit and allowed models; running gateways follow within seconds.

    \b
      smallfleet keys limit ci-bot --budget 5 --rpm 120 --models small,large
      smallfleet keys limit ci-bot --rpm none --models all
    A key's budget is checked like a run's: before each model call, against its spend plus what its
    running steps hold, on every replica at once.
    """
    from ..errors import InvalidRequestError

    if budget_usd is None and rpm is None and models is None:
        raise click.UsageError("name at least one of --budget, --rpm, --models.")
    try:
        rpm_n = None if rpm is None or rpm.lower() == "none" else int(rpm)
    except ValueError:
        raise InvalidRequestError(f"--rpm {rpm!r}: a whole number of requests a minute, or 'none'.") from None
    with _store(ctx) as store:
        info = store.limit(name_or_id, rpm=rpm_n, clear_rpm=rpm is not None and rpm.lower() == "none",
                           models=None if models in (None, "all") else _models(models), clear_models=models == "all")
        if info is None:
            console.print(f"[red]no active key named {name_or_id!r}[/]")
            sys.exit(1)
        if budget_usd is not None:
            from ..ledger import check_budget_value

            value = _usd(budget_usd)
            check_budget_value(value)
            _set_budget(ctx, info.id, value)
    out.print(f"{info.name} ({info.id}): " + _limits(info, _spend(ctx).get(info.id)))


def _spend(ctx: click.Context) -> dict[str, tuple[float, float | None, int]]:
    """key id -> (spent, budget, steps), from the ledger."""
    from ..keys import ACCOUNT
    from ..ledger import Ledger

    led = Ledger(_config(ctx).ledger_target)
    try:
        rows = led.query("SELECT run_id, spent_usd, budget_usd, steps FROM runs WHERE run_id LIKE ?", (ACCOUNT + "%",))
    finally:
        led.close()
    return {r[0][len(ACCOUNT):]: (r[1], r[2], r[3]) for r in rows}


def _limits(info: KeyInfo, spend: tuple[float, float | None, int] | None) -> str:
    from ..ledger import usd

    spent, budget, steps = spend or (0.0, None, 0)
    return (f"{steps} step(s), spent {usd(spent)} of " + (f"a {usd(budget)} budget" if budget is not None else "no budget") +
            f"; {f'{info.rpm} requests a minute' if info.rpm else 'no rate limit'}; "
            f"models {', '.join(sorted(info.models)) if info.models else 'all'}")


@keys.command("ls")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_ls(ctx: click.Context, as_json: bool) -> None:
    """List keys: names, ids, limits, spend, when created or revoked (never the keys themselves)."""
    with _store(ctx) as store:
        rows = store.list()
    spend = _spend(ctx) if rows else {}
    if as_json:
        sys.stdout.write(orjson.dumps([{**r.as_dict(), "spent_usd": spend.get(r.id, (0.0,))[0],
                                        "budget_usd": spend.get(r.id, (0.0, None))[1]} for r in rows]).decode() + "\n")
        return
    if not rows:
        out.print("no keys: the gateway serves loopback clients only (create one with `smallfleet keys create NAME`)")
        return
    from ..ledger import usd

    t = Table(title=f"{sum(r.active for r in rows)} active key(s)")
    for c in ("name", "id", "admin", "spent", "budget", "rpm", "models", "created", "revoked"):
        t.add_column(c)
    for r in rows:
        spent, budget, _ = spend.get(r.id, (0.0, None, 0))
        t.add_row(r.name, r.id, "yes" if r.admin else "", usd(spent), usd(budget) if budget is not None else "",
                  str(r.rpm or ""), ",".join(sorted(r.models)) if r.models else "all",
                  time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)),
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
