"""The knowledge base: index add/rm/ls, search, ask."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click
import orjson
from rich.markup import escape
from rich.table import Table

from ..errors import SmallfleetError
from ._app import _config, cli, console, out


# -- index / search ----------------------------------------------------------------------------------
def _default_index() -> str:
    from ..config import default_data_dir

    return str(default_data_dir() / "index.db")


_INDEX_OPT = click.option("--index", "index_path", type=click.Path(dir_okay=False), default=None,
                          help="The knowledge-base file (default: ~/.local/share/smallfleet/index.db).")


@cli.group()
def index() -> None:
    """A local knowledge base: add, remove and list documents (text, Markdown, HTML, PDF)."""


_WHERE_OPT = click.option("--where", "where", multiple=True, metavar="KEY=VALUE",
                          help="Only documents with this metadata (repeat to require several; `type` is the file "
                               "suffix, e.g. --where type=pdf).")


@index.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@_INDEX_OPT
@click.option("--meta", "meta", multiple=True, metavar="KEY=VALUE",
              help="Metadata for these documents, for `search --where` (repeatable). Re-adding an unchanged "
                   "file with --meta replaces its metadata without re-embedding it.")
@click.option("--follow-symlinks", is_flag=True,
              help="In a folder, also index files whose symlinks lead outside it (skipped by default).")
def index_add(paths: tuple[str, ...], index_path: str | None, meta: tuple[str, ...], follow_symlinks: bool) -> None:
    """Index files (folders are walked); unchanged files are skipped, changed ones re-indexed.

    \b
    Every document gets `type` (its suffix: md, txt, html, pdf, ...) as metadata, e.g.
      smallfleet index add docs/eu --meta region=eu --meta team=support
      smallfleet search "refund window" --where region=eu
    """
    from rich.progress import track

    from ..retrieval import Store, parse_meta

    tags = parse_meta(list(meta), "--meta") if meta else None
    store = Store(index_path or _default_index())
    own = str(store.path.resolve())
    files: list[Path] = []
    outside: list[Path] = []
    for p in paths:
        root = Path(p)
        if root.is_file():  # named on the command line: taken as given
            files.append(root)
            continue
        base = root.resolve()
        for x in sorted(root.rglob("*")):
            if not x.is_file():
                continue
            if not follow_symlinks and not x.resolve().is_relative_to(base):
                outside.append(x)  # a link out of the folder: never read without being asked
                continue
            files.append(x)
    files = [f for f in files if not str(f.resolve()).startswith(own)]  # never index the index (or its -wal/-shm files)
    for x in outside[:5]:
        console.print(f"[yellow]skipped[/] {x}: a symlink to {x.resolve()}, outside the folder (--follow-symlinks to index it)")
    if len(outside) > 5:
        console.print(f"[yellow]skipped[/] {len(outside) - 5} more symlinks out of the folder")
    counts: dict[str, int] = {}
    failed = 0
    for f in track(files, description="indexing", console=console, transient=True):
        try:
            status = store.add(f, tags)
            counts[status] = counts.get(status, 0) + 1
        except SmallfleetError as e:
            failed += 1
            console.print(f"[yellow]skipped[/] {escape(e.message)}")
    store.close()
    out.print(", ".join(f"{n} {'metadata updated' if k == 'metadata' else k}" for k, n in counts.items()) or "nothing indexed")
    if failed:
        console.print(f"[red]{failed} file(s) could not be indexed[/]")
        sys.exit(1)


@index.command("rm")
@click.argument("paths", nargs=-1, required=True)
@_INDEX_OPT
def index_rm(paths: tuple[str, ...], index_path: str | None) -> None:
    """Remove documents from the index."""
    from ..retrieval import Store

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
    from ..retrieval import Store

    store = Store(index_path or _default_index())
    docs = store.list()
    store.close()
    if as_json:
        out.print_json(orjson.dumps(docs).decode())
        return
    t = Table(title=f"{len(docs)} documents")
    for c in ("path", "chunks", "bytes", "metadata"):
        t.add_column(c)
    for d in docs:
        t.add_row(d["path"], str(d["chunks"]), str(d["bytes"]), ", ".join(f"{k}={v}" for k, v in d["meta"].items()))
    out.print(t)


@cli.command()
@click.argument("query")
@_INDEX_OPT
@click.option("--k", type=int, default=5, show_default=True, help="How many chunks.")
@click.option("--mode", type=click.Choice(["hybrid", "rrf", "bm25", "dense"]), default="hybrid", show_default=True,
              help="hybrid: keyword + dense fused by the shipped learned model; rrf: fused by reciprocal rank.")
@click.option("--json", "as_json", is_flag=True, help="JSON output: ranked chunks with id, source, score, text.")
@_WHERE_OPT
def search(query: str, index_path: str | None, k: int, mode: str, as_json: bool, where: tuple[str, ...]) -> None:
    """Search the knowledge base; QUERY "-" reads one query per line from stdin (models load once)."""
    from ..errors import ConfigError
    from ..retrieval import Store, only_stopwords, parse_meta

    flt = parse_meta(list(where), "--where") if where else None

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
        hits = store.search(q, k, mode, where=flt)
        if as_json or query == "-":
            sys.stdout.write(orjson.dumps([h.as_dict() for h in hits]).decode() + "\n")
        else:
            for h in hits:
                out.print(f"[bold]{h.score:.4f}[/] {escape(h.source)} [dim]#{h.id}[/]\n  {escape(' '.join(h.text.split())[:200])}")
    store.close()


@cli.command(short_help="Answer a question from the knowledge base, with citations.")
@click.argument("question")
@_INDEX_OPT
@click.option("--model", default="auto", show_default=True, help="'auto' routes and escalates; a fleet model name passes through.")
@click.option("--max-tokens", type=int, default=300, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON: answer, citations (n, id, source, score, relevance, cited), verdict.")
@_WHERE_OPT
@click.pass_context
def ask(ctx: click.Context, question: str, index_path: str | None, model: str, max_tokens: int, as_json: bool,
        where: tuple[str, ...]) -> None:
    """A grounded answer: evidence from the index, numbered citations, and a check that every number,
    name and quote in the answer comes from the evidence (else one tier up, or "not in the sources")."""
    from ..engine import Engine
    from ..errors import ConfigError
    from ..retrieval.store import parse_meta

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
                return await engine.complete(request, kb_path=path, kb_where=parse_meta(list(where), "--where") if where else None)
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
        out.print(f"{mark} [{c['n']}] {escape(c['source'])} [dim]#{c['id']} relevance {c['relevance']:.2f}[/]")
    console.print(f"[dim]{outcome.final.spec.name} ({outcome.final.tier}) · verdict {outcome.verdict} · "
                  f"escalated={outcome.escalated} · {escape(outcome.reason)}[/]")
