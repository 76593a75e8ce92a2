"""A crash mid-request leaves a consistent ledger: kill -9 the gateway under load, then inspect."""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from .conftest import free_port, write_config

pytestmark = pytest.mark.model


def test_sigkill_under_load_leaves_whole_steps_only(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    port = free_port()
    env = {**os.environ, "SMALLFLEET_CONFIG": str(cfg)}
    proc = subprocess.Popen([sys.executable, "-m", "smallfleet.cli", "serve", "--port", str(port), "--preload"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    done = []

    def client(i: int) -> None:
        for j in range(50):
            try:
                r = httpx.post(base + "/v1/chat/completions", timeout=30, headers={"x-smallfleet-run": f"crash-{i}"},
                               json={"model": "auto", "max_tokens": 4, "messages": [{"role": "user", "content": f"Say {i}-{j}"}]})
                done.append(r.status_code)
            except httpx.HTTPError:
                return

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    while len(done) < 6 and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # no shutdown hook, no flush: a crash
    proc.wait(10)
    for t in threads:
        t.join(60)
    assert len(done) >= 6 and all(s == 200 for s in done)
    db = sqlite3.connect(tmp_path / "ledger.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    steps = db.execute("SELECT step_id, SUM(final), COUNT(*), MAX(attempt) FROM attempts GROUP BY step_id").fetchall()
    assert len(steps) >= len(done)  # every answered request was committed before its answer went out
    assert all(final == 1 and count == max_attempt + 1 for _, final, count, max_attempt in steps)  # whole steps only
    spent = dict(db.execute("SELECT run_id, spent_usd FROM runs").fetchall())
    per_run = dict(db.execute("SELECT run_id, SUM(cost_usd) FROM attempts GROUP BY run_id").fetchall())
    assert spent.keys() == per_run.keys() and all(abs(spent[k] - per_run[k]) < 1e-12 for k in spent)
