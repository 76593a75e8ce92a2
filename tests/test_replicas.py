"""Two gateway processes on one PostgreSQL behave as one gateway for the ledger and budgets: a
concurrent burst of budgeted steps spread over both never passes the run's budget by more than one
step's estimate, and either replica reports the other's steps."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from smallfleet.ledger import Ledger
from tests.conftest import start_serve, stop_serve, write_config

pytestmark = pytest.mark.model


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
    proc, base = start_serve(cfg, tmp_path / "w.log", "--workers", "2")
    try:
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) >= 2  # two workers (and multiprocessing's resource tracker, maybe)
        burst([base], Ledger(tmp_path / "ledger.db"))
    finally:
        stop_serve(proc, 30)
    assert "starting it again" not in (tmp_path / "w.log").read_text()  # no worker died and was restarted


def test_two_replicas_share_the_ledger_and_hold_a_budget_exactly(pg_url: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    from smallfleet.privacy import new_key

    key = new_key()  # the session state and session memory in PostgreSQL are encrypted: the same key on each replica
    env = {"SMALLFLEET_DATABASE_URL": pg_url, "SMALLFLEET_SESSION_KEY": key, "SMALLFLEET_MEMORY_KEY": key}
    replicas = [start_serve(cfg, tmp_path / f"r{i}.log", env=env) for i in range(2)]
    try:
        led = Ledger(pg_url)
        codes = burst([b for _, b in replicas], led)
        # one gateway: either replica's report holds the steps both wrote
        reports = [httpx.get(b + "/v1/smallfleet/report?run=shared-run", timeout=30).json() for _, b in replicas]
        assert reports[0]["steps"] == reports[1]["steps"] == codes.count(200)
        led.close()
    finally:
        for proc, _ in replicas:
            stop_serve(proc)
