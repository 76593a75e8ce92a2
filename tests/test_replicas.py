"""Two gateway processes on one PostgreSQL behave as one gateway for the ledger and budgets: a
concurrent burst of budgeted steps spread over both never passes the run's budget by more than one
step's estimate, and either replica reports the other's steps."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from smallfleet.ledger import Ledger
from tests.conftest import free_port, write_config

pytestmark = pytest.mark.model


def start(cfg: Path, url: str | None, log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "SMALLFLEET_CONFIG": str(cfg), **({"SMALLFLEET_DATABASE_URL": url} if url else {})}
    for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "SMALLFLEET_FRONTIER_URL"):
        env.pop(k, None)
    proc = subprocess.Popen([sys.executable, "-m", "smallfleet.cli", "serve", "--port", str(port), "--preload", *extra],
                            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited: {log.read_text()}")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("gateway did not start in 120 s")


def burst(bases: list[str], led: Ledger) -> list[int]:
    """16 budgeted requests at once, spread over ``bases``; checks the budget held; their status codes."""
    led.set_budget("shared-run", 0.000002)  # a few steps' worth at the tiny fleet's prices (~5e-7 a step)

    def ask(i: int) -> int:
        r = httpx.post(bases[i % len(bases)] + "/v1/chat/completions", timeout=120, headers={"x-smallfleet-run": "shared-run"},
                       json={"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": f"Say hello {i}"}]})
        return r.status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(ask, range(16)))
    run = led.run("shared-run")
    costs = [r["cost_usd"] for r in led.attempts(run_id="shared-run")]
    assert run is not None and set(codes) <= {200, 429} and codes.count(200) >= 1 and codes.count(429) >= 1, (codes, run, costs)
    assert run["steps"] == codes.count(200)
    estimate = max(r["cost_usd"] for r in led.attempts(run_id="shared-run"))  # an upper bound of one step's error
    assert run["spent_usd"] <= 0.000002 + estimate, (codes, run, costs)
    assert led.query("SELECT COUNT(*) FROM reservations")[0][0] == 0
    return codes


def test_workers_share_one_port_and_one_sqlite_ledger(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    proc, base = start(cfg, None, tmp_path / "w.log", "--workers", "2")
    try:
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) >= 2  # two workers (and multiprocessing's resource tracker, maybe)
        burst([base], Ledger(tmp_path / "ledger.db"))
    finally:
        proc.terminate()
        proc.wait(30)
    assert "starting it again" not in (tmp_path / "w.log").read_text()  # no worker died and was restarted


def test_two_replicas_share_the_ledger_and_hold_a_budget_exactly(pg_url: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    replicas = [start(cfg, pg_url, tmp_path / f"r{i}.log") for i in range(2)]
    try:
        led = Ledger(pg_url)
        codes = burst([b for _, b in replicas], led)
        # one gateway: either replica's report holds the steps both wrote
        reports = [httpx.get(b + "/v1/smallfleet/report?run=shared-run", timeout=30).json() for _, b in replicas]
        assert reports[0]["steps"] == reports[1]["steps"] == codes.count(200)
        led.close()
    finally:
        for proc, _ in replicas:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
