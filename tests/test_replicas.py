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


def test_a_replica_killed_under_load_loses_no_answered_step(pg_url: str, tmp_path: Path) -> None:
    """Two replicas, requests spread over both; one is killed (SIGKILL) mid-load and its clients go to
    the other, as a load balancer would send them. Every answered step is whole in the ledger."""
    import random
    import signal
    import threading
    import time

    from smallfleet.privacy import new_key

    cfg = write_config(tmp_path)
    key = new_key()
    env = {"SMALLFLEET_DATABASE_URL": pg_url, "SMALLFLEET_SESSION_KEY": key, "SMALLFLEET_MEMORY_KEY": key}
    replicas = [start_serve(cfg, tmp_path / f"r{i}.log", env=env) for i in range(2)]
    answered: list[str] = []
    lock = threading.Lock()

    def ask(i: int) -> None:
        order = [replicas[i % 2][1], replicas[(i + 1) % 2][1]]
        for base in order:  # the balancer: on a dead replica, the other one
            try:
                r = httpx.post(base + "/v1/chat/completions", timeout=120, headers={"x-smallfleet-run": "killed"},
                               json={"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": f"Say hello {i}"}]})
            except httpx.TransportError:
                continue
            assert r.status_code == 200, r.text
            with lock:
                answered.append(r.headers["x-smallfleet-step-id"])
            return

    try:
        with ThreadPoolExecutor(6) as pool:
            futs = [pool.submit(ask, i) for i in range(24)]
            time.sleep(1.0 + random.random())
            replicas[0][0].send_signal(signal.SIGKILL)
            for f in futs:
                f.result()
        led = Ledger(pg_url)
        steps = {r[0]: (r[1], r[2]) for r in led.query(
            "SELECT step_id, COUNT(*), SUM(final) FROM attempts WHERE run_id='killed' GROUP BY step_id")}
        assert len(answered) == 24 and set(answered) <= set(steps)  # no answered step lost
        assert all(final == 1 for _, final in steps.values())  # each written whole: its attempts and one final row
        run = led.run("killed")
        assert run is not None and run["steps"] == len(steps)  # the run's count agrees with the attempts
        led.close()
    finally:
        for proc, _ in replicas:
            stop_serve(proc)


def test_a_database_that_goes_away_is_a_503_and_the_gateway_recovers(pg_server, pg_url: str, scripted_gateway) -> None:
    from smallfleet.privacy import new_key

    key = new_key()
    gw = scripted_gateway(env={"SMALLFLEET_DATABASE_URL": pg_url, "SMALLFLEET_SESSION_KEY": key, "SMALLFLEET_MEMORY_KEY": key})
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    h = {"x-smallfleet-run": "r"}
    assert httpx.post(gw.base + "/v1/chat/completions", json=body, headers=h, timeout=30).status_code == 200
    pg_server.stop()
    try:
        r = httpx.post(gw.base + "/v1/chat/completions", json=body, headers=h, timeout=60)
        assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable", r.text
        assert httpx.get(gw.base + "/health", timeout=5).status_code == 200  # alive, and says so
    finally:
        pg_server.start()
    r = httpx.post(gw.base + "/v1/chat/completions", json=body, headers=h, timeout=60)
    assert r.status_code == 200, r.text
    led = Ledger(pg_url)
    assert led.run("r")["steps"] == 2  # the step during the outage left nothing behind
    led.close()
