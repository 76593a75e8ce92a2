"""The trace store on the command line: import an agent's logs, list, show, remove, count.

The store is ``[capture] store`` (default ``~/.local/share/smallfleet/traces.db``) or ``--store PATH``;
its texts are pseudonymised and encrypted (``SMALLFLEET_CAPTURE_KEY``, else ``traces.key`` beside it).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
from rich.table import Table

from ._app import _config, cli, console, out

STORE_HELP = "Trace store file (default: [capture] store, else ~/.local/share/smallfleet/traces.db)."


def open_store(ctx: click.Context, store: str | None, *, create: bool = False) -> Any:
    """The trace store named by --store or the config; a missing one is an error unless ``create``."""
    from ..capture import TraceStore
    from ..errors import ConfigError

    c = _config(ctx).capture
    target: str | Path = (store if store.startswith(("postgresql://", "postgres://")) else Path(store).expanduser()) if store else c.target
    if isinstance(target, str):  # PostgreSQL: the tables are created on first use
        return TraceStore(target, key=c.key)
    path = target
    if not create and not path.is_file():
        raise ConfigError(f"no trace store at {path}.",
                          hint="import logs with `smallfleet traces import FILE.jsonl`, or turn on [capture] enabled = true "
                               "and send traffic through the gateway")
    return TraceStore(path, key=c.key)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _gist(t: Any, width: int = 60) -> str:
    from ..capture import task_text

    text = " ".join(task_text(t.request).split())
    return text[:width - 1] + "…" if len(text) > width else text


def _answer(msg: dict[str, Any]) -> str:
    calls = msg.get("tool_calls") or []
    if calls:
        return "; ".join(f"{(c.get('function') or {}).get('name')}({(c.get('function') or {}).get('arguments', '')})" for c in calls)
    return str(msg.get("content") or "")


@cli.group()
def traces() -> None:
    """Captured steps for the learning loop: import logs, list, show, remove, count.

    The gateway captures steps when [capture] enabled = true (or SMALLFLEET_CAPTURE=on); a client opts a
    request out with the header x-smallfleet-capture: off. Every text is pseudonymised before it is
    stored, and encrypted at rest."""


@traces.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--store", help=STORE_HELP)
@click.option("--json", "as_json", is_flag=True, help="JSON: {lines, imported, duplicates, skipped: [[line, why]]}.")
@click.pass_context
def traces_import(ctx: click.Context, file: Path, store: str | None, as_json: bool) -> None:
    """Import an agent's own logs (JSONL) so the loop can start from a frontier-only agent's traffic.

    One JSON object a line: {"request": <chat.completions request>, "response": <chat.completion>,
    "id"?: str, "trace"?: str (conversation id), "feedback"?: number 0..1}. Malformed lines are
    reported by number and skipped; the rest are pseudonymised and written in one transaction.
    Importing the same file again adds nothing."""
    from ..capture import import_jsonl

    cfg = _config(ctx)
    st = open_store(ctx, store, create=True)
    t0 = time.monotonic()
    try:
        with console.status(f"reading {file}") as status:
            rep = import_jsonl(file, st, price_in=cfg.reference_price_in, price_out=cfg.reference_price_out,
                               progress=lambda n: status.update(f"reading {file}: line {n}"))
    finally:
        st.close()
    if as_json:
        sys.stdout.write(orjson.dumps({"lines": rep.lines, "imported": rep.imported, "duplicates": rep.duplicates,
                                       "skipped": rep.skipped}).decode() + "\n")
    else:
        console.print(f"[green]imported {rep.imported} steps[/] from {rep.lines} lines into {st.path} "
                      f"in {time.monotonic() - t0:.1f} s; {rep.duplicates} already there, {len(rep.skipped)} skipped")
        for n, why in rep.skipped[:20]:
            console.print(f"  [yellow]line {n}[/]: {why}")
        if len(rep.skipped) > 20:
            console.print(f"  … and {len(rep.skipped) - 20} more (--json lists them all)")
    if rep.skipped and not rep.imported and not rep.duplicates:
        sys.exit(1)


@traces.command("ls")
@click.option("--store", help=STORE_HELP)
@click.option("--kind", help="Only this step kind (tool_choice, extraction, classification, …).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000), help="Newest N.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: one object per trace, without the texts.")
@click.pass_context
def traces_ls(ctx: click.Context, store: str | None, kind: str | None, limit: int, as_json: bool) -> None:
    """List captured steps, newest first."""
    st = open_store(ctx, store)
    try:
        rows = list(st.iter(kind=kind, limit=limit, newest_first=True))
        total = st.count()
    finally:
        st.close()
    if as_json:
        for t in rows:
            sys.stdout.write(orjson.dumps({"id": t.id, "trace": t.trace, "ts": t.ts, "source": t.source, "kind": t.kind,
                                           "model": t.model, "tier": t.tier, "verified": t.verified, "feedback": t.feedback,
                                           "cost_usd": t.cost_usd}).decode() + "\n")
        return
    tb = Table(title=f"{len(rows)} of {total} traces")
    for c in ("id", "when (UTC)", "kind", "source", "model", "verified", "feedback", "task"):
        tb.add_column(c, overflow="fold" if c == "id" else "ellipsis")
    for t in rows:
        tb.add_row(t.id, _when(t.ts), t.kind, t.source, t.model or "-", {True: "yes", False: "no", None: "-"}[t.verified],
                   "-" if t.feedback is None else f"{t.feedback:g}", _gist(t))
    out.print(tb)


@traces.command("show")
@click.argument("trace_id")
@click.option("--store", help=STORE_HELP)
@click.option("--json", "as_json", is_flag=True, help="The whole trace as JSON.")
@click.pass_context
def traces_show(ctx: click.Context, trace_id: str, store: str | None, as_json: bool) -> None:
    """One captured step: its request, each attempt with its verdicts, and the accepted answer."""
    from ..errors import NotFoundError

    st = open_store(ctx, store)
    try:
        t = st.get(trace_id)
    finally:
        st.close()
    if t is None:
        raise NotFoundError(f"no trace {trace_id!r} in the store.", hint="`smallfleet traces ls` lists them")
    if as_json:
        sys.stdout.write(orjson.dumps({**{k: v for k, v in t.__dict__.items() if k != "attempts"},
                                       "attempts": [a.__dict__ for a in t.attempts]}).decode() + "\n")
        return
    out.print(f"[bold]{t.id}[/]  {t.kind}  {t.source}  {_when(t.ts)} UTC  conversation {t.trace or '-'}")
    out.print(f"tools: {', '.join((x.get('function') or {}).get('name', '?') for x in t.request.get('tools') or []) or '-'}")
    for m in t.request.get("messages", []):
        text = m.get("content") if isinstance(m.get("content"), str) else _answer(m)
        out.print(f"  [cyan]{m.get('role')}[/]: {str(text)[:500]}", markup=False, highlight=False)
    for i, a in enumerate(t.attempts, 1):
        verdicts = ", ".join(f"{v['check']} {'ok' if v.get('passed') else 'FAIL: ' + str(v.get('reason'))}" for v in a.verdicts)
        out.print(f"attempt {i}: {a.model} ({a.tier or '-'}) ${a.cost_usd:.6f}  {verdicts or 'no checks'}"
                  + (f"  error: {a.error}" if a.error else ""), markup=False, highlight=False)
    out.print(f"[green]accepted[/] ({t.model}, verified {t.verified}, feedback {t.feedback}): {_answer(t.final)[:1000]}")


@traces.command("rm")
@click.argument("trace_ids", nargs=-1)
@click.option("--store", help=STORE_HELP)
@click.option("--before", help="Also every trace of a step before this date (YYYY-MM-DD, UTC).")
@click.option("--all", "everything", is_flag=True, help="Every trace in the store.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (with --all or --before).")
@click.pass_context
def traces_rm(ctx: click.Context, trace_ids: tuple[str, ...], store: str | None, before: str | None,
              everything: bool, yes: bool) -> None:
    """Remove traces by id, by date, or all of them (deleted bytes are overwritten)."""
    if not trace_ids and before is None and not everything:
        raise click.UsageError("name trace ids, or --before DATE, or --all.")
    cut = None
    if before is not None:
        try:
            cut = datetime.strptime(before, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise click.BadParameter("use YYYY-MM-DD, e.g. 2026-11-01.", param_hint="--before") from None
    if (everything or cut is not None) and not yes:
        click.confirm("Remove " + ("every trace" if everything else f"every trace before {before}") + "?", abort=True)
    st = open_store(ctx, store)
    try:
        n = st.remove(trace_ids, before=cut, everything=everything)
    finally:
        st.close()
    console.print(f"removed {n} traces")


@traces.command("stats")
@click.option("--store", help=STORE_HELP)
@click.option("--json", "as_json", is_flag=True, help="JSON.")
@click.pass_context
def traces_stats(ctx: click.Context, store: str | None, as_json: bool) -> None:
    """How much is captured: steps, conversations, kinds, sources, models, verified, feedback, spend."""
    st = open_store(ctx, store)
    try:
        s = st.stats()
    finally:
        st.close()
    if as_json:
        sys.stdout.write(orjson.dumps({**s.__dict__, "store": str(st.path)}).decode() + "\n")
        return
    out.print(f"[bold]{s.traces}[/] steps in {s.conversations} conversations, {_when(s.first_ts)} .. {_when(s.last_ts)} UTC; "
              f"store {st.path} ({s.bytes / 1e6:.1f} MB, encrypted)")
    out.print(f"verified {s.verified}, failed checks {s.unverified}, never checked {s.traces - s.verified - s.unverified}; "
              f"with feedback {s.with_feedback}; spend ${s.cost_usd:.4f}")
    for title, d in (("kind", s.by_kind), ("source", s.by_source), ("model", s.by_model)):
        tb = Table(title=f"by {title}")
        tb.add_column(title)
        tb.add_column("steps", justify="right")
        for k, v in d.items():
            tb.add_row(k or "-", str(v))
        out.print(tb)
