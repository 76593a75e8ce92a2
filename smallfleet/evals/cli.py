"""``smallfleet bench ...``: benchmark harnesses that ship with the package (AgentDojo)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)
out = Console()


@click.group(short_help="Benchmarks that ship with smallfleet (AgentDojo).")
def bench() -> None:
    """Run a benchmark harness; each prints a table and can write JSON."""


def _ids(spec: str | None, prefix: str) -> list[str]:
    if not spec:
        return []
    ids = []
    for part in spec.split(","):
        part = part.strip()
        if "-" in part and part.replace("-", "").isdigit():
            a, b = part.split("-")
            ids += [f"{prefix}{i}" for i in range(int(a), int(b) + 1)]
        elif part.isdigit():
            ids.append(f"{prefix}{part}")
        elif part:
            ids.append(part)
    return ids


@contextlib.contextmanager
def _gateway(config: str | None) -> Iterator[str]:
    """A real `smallfleet serve` on a free port with its own ledger, for the model agent."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="smallfleet-agentdojo-")
    env = {**os.environ, "SMALLFLEET_LEDGER": str(Path(tmp) / "ledger.db")}
    cmd = [sys.executable, "-m", "smallfleet", *(["--config", config] if config else []), "serve", "--port", str(port), "--preload"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    # a SIGTERM to this process must still stop the gateway it started
    old = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        import urllib.request

        deadline = time.time() + 600
        while True:
            if proc.poll() is not None:
                raise click.ClickException(f"the gateway exited: {proc.stderr.read().decode()[-800:] if proc.stderr else ''}")
            try:
                urllib.request.urlopen(url + "/health", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise click.ClickException("the gateway did not come up within 10 minutes") from None
                time.sleep(1)
        yield url + "/v1"
    finally:
        signal.signal(signal.SIGTERM, old)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _table(title: str, report: dict[str, Any], labels: tuple[str, str]) -> Table:
    t = Table(title=title)
    for c in ("suite", "config", "benign utility", "utility under attack", "ASR", "cases"):
        t.add_column(c, justify="right" if c not in ("suite", "config") else "left")

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.1f} %"

    suites = list(report["off"]["per_suite"])
    for s in [*suites, "all"]:
        for key, label in zip(("off", "on"), labels):
            r = report[key] if s == "all" else report[key]["per_suite"][s]
            t.add_row(s if key == "off" else "", label, pct(r["benign_utility"]), pct(r["utility_under_attack"]),
                      pct(r["asr"]) + f" ({r['successful_attacks']})", str(r["cases"]))
    return t


@bench.command("agentdojo")
@click.option("--agent", type=click.Choice(["compromised", "model"]), default="compromised", show_default=True,
              help="compromised: scripted worst case, no model; model: a real model through the gateway.")
@click.option("--suites", default="workspace,travel,banking,slack", show_default=True, help="Comma-separated suites.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the results (keys 'off' and 'on') here.")
@click.option("--no-detector", is_flag=True, help="Policy only: switch the injection detector off (ablation).")
@click.option("--user-tasks", default=None, help="Subset, e.g. '0-4,13' (ids or numbers; default: all).")
@click.option("--injection-tasks", default=None, help="Subset, e.g. '0,1,3' (default: all).")
@click.option("--model", "model_name", default="qwen2.5-coder-1.5b", show_default=True, help="Model agent: the fleet model to use.")
@click.option("--base-url", default=None, help="Model agent: an already running gateway (default: start one).")
@click.pass_context
def agentdojo(ctx: click.Context, agent: str, suites: str, json_out: str | None, no_detector: bool, user_tasks: str | None,
              injection_tasks: str | None, model_name: str, base_url: str | None) -> None:
    """AgentDojo v1.2.2 under the important_instructions attack, policy off vs on, in one run.

    Reports benign utility, utility under attack and attack success rate (ASR) per suite, and lists
    every legitimate call the policy blocked, with the rule and reason. Needs `pip install
    'smallfleet[agentdojo]'`.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from . import agentdojo as ad

    names = [s.strip() for s in suites.split(",") if s.strip()]
    bad = [s for s in names if s not in ad.SUITES]
    if bad:
        raise click.BadParameter(f"unknown suite(s) {bad}; choose from {', '.join(ad.SUITES)}", param_hint="--suites")
    ut = {s: _ids(user_tasks, "user_task_") for s in names} if user_tasks else None
    it = {s: _ids(injection_tasks, "injection_task_") for s in names} if injection_tasks else None
    if agent == "compromised":
        n = 2 * sum(len((ut or {}).get(s) or []) or 0 for s in names) if ut else 2 * ad.count_cases(names)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("agentdojo (compromised agent, off then on)", total=n if not it else None)
            report = ad.compromised_report(names, use_detector=not no_detector,
                                           progress=lambda s, k: bar.update(task, advance=k, description=f"agentdojo {s}"))
        labels = ("policy off", "policy on")
    else:
        config = ctx.obj.get("config_path") if isinstance(ctx.obj, dict) else None
        with contextlib.ExitStack() as stack:
            url = base_url or stack.enter_context(_gateway(config))
            results = {}
            for key, guard in (("off", "off"), ("on", "block")):
                console.print(f"[dim]model agent {model_name}, guard {guard}…[/]")
                with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                              console=console, transient=True) as bar:
                    task = bar.add_task(f"agentdojo model, guard {guard}", total=None)

                    def advance(s: str, k: int, task: TaskID = task) -> None:  # this round's task, bound now
                        bar.update(task, advance=k)

                    results[key] = ad.run_model(url, model_name, suites=names, guard=guard, user_tasks=ut, injection_tasks=it,
                                                progress=advance)
        report = {"agent": "model", "model": model_name, "attack": "important_instructions",
                  "benchmark_version": ad.BENCHMARK_VERSION, "agentdojo": ad._version(), "suites": names, **results}
        labels = ("without guard", "with smallfleet")
    out.print(_table(f"AgentDojo {ad.BENCHMARK_VERSION}, {agent} agent, important_instructions", report, labels))
    legit = report.get("blocked_legitimate_calls")
    if legit is not None:
        out.print(f"{len(legit)} legitimate call(s) blocked with the policy on; {report.get('blocked_injected_calls')} injected call(s) blocked")
        seen: set[tuple[str, str, str]] = set()
        for b in legit:
            case = (b["suite"], b["user_task"], b["tool"])
            if case in seen:
                continue
            seen.add(case)
            out.print(f"  [dim]{b['suite']}/{b['user_task']}[/] {b['tool']}: {b['reason']}")
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        console.print(f"wrote {json_out}")
