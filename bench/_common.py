"""What the scripts under bench/ share: where things are, the results files, small statistics, and starting and
stopping the processes a benchmark measures.

A benchmark runs from the repository root in either form (bench/README.md lists them all):

    python bench/NAME.py [options]        # as a script
    python -m bench.NAME [options]        # as a module: bench/ is a package

and the probes and tools in the subfolders as modules only: ``python -m bench.probes.NAME``,
``python -m bench.tools.NAME``.

Every script imports its helpers as ``from _common import ...``. Run as a script, Python has put bench/ first
on sys.path and finds this file as ``_common``; run as a module, bench/__init__.py has registered it under that
name. Importing it sets up the import path the same way for both forms, and this is the only place under
bench/ that touches sys.path: bench/ comes off it (so bench/agentdojo.py and bench/agents.py cannot shadow the
installed ``agentdojo`` and ``agents`` packages) and the repository root goes on (so the shared modules import
as ``bench.NAME``: ``bench._bfcl``, ``bench._facts``, ``bench.agent_suite``). A benchmark never imports
another benchmark; what two of them share lives in one of those modules.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
# The public data sets (ProcessBench, GSM8K, presidio-research's PII set) live beside the checkout, as for
# smallfleet.verify's default_data_dir().
SHARED_DATA = ROOT.parent / "shared" / "data"


def _bootstrap() -> None:
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
    if not any(Path(p or ".").resolve() == ROOT for p in sys.path):
        sys.path.insert(0, str(ROOT))
    me = sys.modules[__name__]
    sys.modules.setdefault("_common", me)
    sys.modules.setdefault("bench._common", me)


_bootstrap()


# Short free-text prompts of different kinds, for the serving benchmarks (serving.py, batching.py).
PROMPTS = [
    "Explain in two sentences why the sky is blue.",
    "Write a Python function that reverses a string.",
    "List three tips for writing clear e-mails.",
    "What is the difference between a list and a tuple in Python?",
    "Summarise the plot of Romeo and Juliet in three sentences.",
    "Give a short checklist for shipping a parcel abroad.",
    "Describe how a refund process usually works in an online shop.",
    "Write a haiku about a desk lamp.",
    "Explain what an API rate limit is.",
    "Suggest a name for a lamp shop and say why.",
]


# -- command line and results files ------------------------------------------------------------------
def parser(doc: str | None, **kw: Any) -> argparse.ArgumentParser:
    """An ArgumentParser whose --help shows the script's docstring as written, options after it."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, **kw)


def write_json(path: str | Path, obj: Any, *, indent: int | None = 1, text: str | None = None, quiet: bool = False,
               **dumps: Any) -> Path:
    """Write ``obj`` as JSON (or ``text`` when given) to ``path``, creating its folder; print where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((json.dumps(obj, indent=indent, **dumps) if text is None else text) + "\n", encoding="utf-8")
    if not quiet:
        print(f"wrote {path}")
    return path


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def git_describe() -> str | None:
    """``git describe --always --dirty`` of the checkout, or None outside git."""
    try:
        g = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return g.stdout.strip() or None


def version(dist: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(**extra: Any) -> dict[str, Any]:
    """What a results file records of the machine: Python, platform, cores, git, plus ``extra``."""
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(), "git": git_describe(),
            **extra}


def load_avg() -> list[float]:
    """The 1/5/15-minute load averages, rounded (the machine is shared: runs record it)."""
    return [round(x, 2) for x in os.getloadavg()]


def progress(width: int = 38) -> Any:
    """A rich progress bar: description, bar, done/total, elapsed, remaining."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn(f"{{task.description:{width}}}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn())


# -- statistics --------------------------------------------------------------------------------------
def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes out of n ((0, 0) for n = 0, as the published files have it);
    the interval itself is the learning loop's (smallfleet.learn.replay.wilson)."""
    if n == 0:
        return 0.0, 0.0
    from smallfleet.learn.replay import wilson as interval

    return interval(k, n, z)


# -- processes: the gateway and its neighbours -------------------------------------------------------
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int, *, config: Path | None = None, env: Mapping[str, str] | None = None, log: IO[str] | None = None,
          cwd: Path | None = None, preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen:
    """Start ``smallfleet serve --port PORT`` (this Python, ``--config`` when given) in a child process; output to
    ``log`` when given. Returns at once: see wait_ready."""
    cmd = [sys.executable, "-m", "smallfleet.cli", *(["--config", str(config)] if config else []), "serve", "--port", str(port)]
    return subprocess.Popen(cmd, env=dict(env) if env is not None else None, cwd=cwd, preexec_fn=preexec_fn,
                            stdout=log, stderr=subprocess.STDOUT if log is not None else None)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120, log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200. RuntimeError if ``proc`` exits first (with the end of ``log``) or
    ``timeout`` seconds pass."""
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log is not None and log.is_file() else ""
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}" + (f":\n{tail}" if tail else ""))
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


def stop(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """Terminate a child process; kill it if it has not exited after ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
