"""The ``smallfleet`` command group and the helpers its command modules share (consoles, progress, config)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from ..config import ENV_VARS, Config, load_config
from ..errors import SmallfleetError

console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 160)  # logs and CI get full-width tables

ENV_HELP = "\n".join(f"  {k:<28} {v}" for k, v in ENV_VARS.items())


F = TypeVar("F", bound=Callable[..., Any])


def gateway_address(fn: F) -> F:
    """``--host``/``--port`` for a command that talks to a running gateway (default: the config's)."""
    fn = click.option("--port", type=click.IntRange(0, 65535), default=None,
                      help="The gateway's port (default from config / SMALLFLEET_PORT: 8088).")(fn)
    return click.option("--host", default=None, help="The gateway's address (default from config / SMALLFLEET_HOST: "
                                                     "127.0.0.1).")(fn)


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
    cfg = obj.get("config")
    if not isinstance(cfg, Config):
        cfg = obj["config"] = load_config(obj.get("config_path"))
    return cfg


def _hoist_config(args: list[str], ctx: click.Context | None = None) -> list[str]:
    """``args`` with a ``--config FILE`` / ``--config=FILE`` given after the command moved before it, where the
    group reads it: ``smallfleet doctor --config f.toml`` is ``smallfleet --config f.toml doctor``."""
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":  # the group's own options
        i += 2 if args[i] == "--config" else 1
    if i >= len(args) or args[i] == "--":
        return args
    head, rest = args[:i + 1], args[i + 1:]  # i: the command's name
    moved: list[str] = []
    j = 0
    while j < len(rest) and rest[j] != "--":  # after "--" every token is an argument
        if rest[j] == "--config":
            if j + 1 >= len(rest):
                raise click.UsageError("Option '--config' requires an argument.", ctx)
            moved += rest[j:j + 2]
            del rest[j:j + 2]
        elif rest[j].startswith("--config="):
            moved.append(rest.pop(j))
        else:
            j += 1
    # before the command, after any group-level --config: the later one wins, as click does for one option
    return head[:-1] + moved + head[-1:] + rest


class _Group(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _hoist_config(args, ctx))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SmallfleetError as e:
            # Text, not markup: messages and hints name tables ([models.NAME]) that rich would read as tags
            console.print(Text.assemble(("error:", "bold red"), " ", e.message))
            if e.hint:
                console.print(Text.assemble("  ", ("hint:", "yellow"), " ", e.hint))
            sys.exit(2 if e.status < 500 or e.type == "config_error" else 1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog="\b\nEnvironment variables (override smallfleet.toml):\n" + ENV_HELP)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="SMALLFLEET_CONFIG",
              help="smallfleet.toml to load (default: ./smallfleet.toml if present, else built-in fleet); "
                   "also accepted after the command: smallfleet doctor --config FILE.")
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
    smallfleet traces import F start the learning loop from an agent's logs (or capture traffic)
    smallfleet learn clusters  tasks in the traffic; then learn replay, apply, report, export, finetune
      smallfleet detector scan   look for injected instructions in text
      smallfleet bench agentdojo prompt-injection benchmark, policy off vs on
    """
    ctx.ensure_object(dict)["config_path"] = config_path
