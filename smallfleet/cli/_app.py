"""The ``smallfleet`` command group and the helpers its command modules share (consoles, progress, config)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from ..config import ENV_VARS, Config, load_config
from ..errors import SmallfleetError

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
            console.print(f"[bold red]error:[/] {escape(e.message)}")  # messages name [sections]: not markup
            if e.hint:
                console.print(f"  [yellow]hint:[/] {escape(e.hint)}")
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
      smallfleet keys create NAME  an API key; once one exists, every endpoint needs one
      smallfleet budget RUN USD  show or set (raise) an agent run's budget
      smallfleet redact          pseudonymise personal data (JSON lines), locally
      smallfleet verify          check reasoning traces with the process verifier
      smallfleet index add PATH  build a local knowledge base; smallfleet search QUERY
      smallfleet ask "question"  a grounded answer with citations from that knowledge base
      smallfleet memory ls       session facts the gateway kept; show SESSION, forget SESSION
      smallfleet detector scan   look for injected instructions in text
      smallfleet bench agentdojo prompt-injection benchmark, policy off vs on
    """
    ctx.ensure_object(dict)["config_path"] = config_path
