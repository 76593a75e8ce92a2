"""API keys and their limits: the store on SQLite and PostgreSQL, a key's budget held exactly across
ledger handles, requests per minute counted in the shared database, allowed models, and all of it
through the real gateway and the CLI."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from smallfleet.errors import InvalidRequestError
from smallfleet.keys import KeyRing, KeyStore, LocalRate, account, sliding_wait
from smallfleet.ledger import Ledger, account_holder
from tests.conftest import create_key, sf
from tests.test_hostile import OK, post
from tests.test_ledger import burst, row


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "keys.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


def test_keys_with_limits_on_either_store(store_target: str) -> None:
    with KeyStore(store_target) as store:
        info, key = store.create("ci-bot", rpm=60, models=["small", "large"])
        assert info.rpm == 60 and info.models == frozenset({"small", "large"})
        ring = KeyRing(store_target)
        assert ring.check(key) == info
        limited = store.limit("ci-bot", rpm=5)
        assert limited is not None and limited.rpm == 5 and limited.models == info.models  # what is not named stays
        cleared = store.limit(info.id, clear_rpm=True, clear_models=True)
        assert cleared is not None and cleared.rpm is None and cleared.models is None
        with pytest.raises(InvalidRequestError):
            store.limit("ci-bot", rpm=0)
        with pytest.raises(InvalidRequestError):
            store.create("other", models=["no spaces allowed"])
        store.revoke("ci-bot")
        ring.refresh(force=True)
        assert ring.check(key) is None and not ring.enabled
        ring.close()


def test_a_key_store_from_before_limits_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    old = sqlite3.connect(path)  # the schema smallfleet wrote before keys had limits
    old.executescript("CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, digest TEXT NOT NULL UNIQUE, "
                      "admin INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, revoked REAL);"
                      "INSERT INTO api_keys VALUES ('0123abcd', 'old', 'd', 0, 1.0, NULL);")
    old.close()
    with KeyStore(path) as store:
        [k] = store.list()
        assert k.name == "old" and k.rpm is None and k.models is None
        assert store.limit("old", rpm=3) is not None


def test_the_sliding_minute() -> None:
    assert sliding_wait(0, 5, 0.5, 5) == 0
    assert sliding_wait(0, 6, 0.5, 5) == pytest.approx(30)  # nothing from the last minute: wait for the next
    assert sliding_wait(10, 1, 0.5, 5) == pytest.approx(6)  # 5 + 1 > 5: one of the last minute's must slide out
    assert sliding_wait(10, 1, 0.95, 5) == 0
    rate = LocalRate()
    assert [rate.take("a", 3) for _ in range(3)] == [0, 0, 0] and rate.take("a", 3) > 0 and rate.take("b", 3) == 0


def test_a_keys_budget_is_exact_across_handles_under_a_burst(store_target: str) -> None:
    """40 steps of one key, in 40 different runs, over two ledger handles: the key's budget covers 5."""
    replicas = [Ledger(store_target), Ledger(store_target)]
    acct = account("0123abcd")
    replicas[0].set_budget(acct, 0.05)
    def write(led: Ledger, i: int, held: float) -> None:
        assert held == 0.01
        led.record_step([row(f"s{i}", 0, True, cost=0.01, run=f"run{i}")], account=acct)

    passed, refused = burst(replicas, lambda led, i: led.reserve(acct, None, 0.01, key=account_holder(f"s{i}")), write)
    assert all(e.code == "key_budget_exceeded" and "API key '0123abcd'" in e.message for e in refused)
    acc = replicas[1].run(acct)
    assert acc is not None and len(passed) == 5 and len(refused) == 35
    assert acc["spent_usd"] == pytest.approx(0.05) and acc["steps"] == 5
    assert replicas[0].query("SELECT COUNT(*) FROM reservations")[0][0] == 0
    for led in replicas:
        led.close()


def test_requests_per_minute_are_counted_in_the_shared_database(pg_url: str) -> None:
    a, b = Ledger(pg_url), Ledger(pg_url)
    got = [(a if i % 2 else b).take_rate("@key:k1", 6) for i in range(9)]
    assert got[:6] == [0.0] * 6 and all(w > 0 for w in got[6:]), got  # two replicas, one count
    assert a.take_rate("@key:k2", 6) == 0.0  # per key
    assert a.query("SELECT count FROM rate_windows WHERE account='@key:k1'")[0][0] == 6  # refused ones not counted
    a.close()
    b.close()


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": "Bearer " + key}


def test_per_key_limits_through_the_gateway_and_the_cli(scripted_gateway) -> None:  # type: ignore[no-untyped-def]
    gw = scripted_gateway()
    cfg = Path(gw.cfg.source)
    limited = create_key(gw, "limited", "--rpm", "3")  # waiting for the key asks /v1/models: not counted
    small_only = create_key(gw, "small-only", "--models", "small")
    budgeted = create_key(gw, "budgeted", "--budget", "0")
    # rate: three pass, the fourth is a 429 that says when to retry
    codes = [post(gw, OK, _bearer(limited)).status_code for _ in range(3)]
    r = post(gw, OK, _bearer(limited))
    assert codes == [200] * 3 and r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(r.headers["retry-after"]) <= 60 and "3 requests a minute" in r.json()["error"]["message"]
    assert post(gw, OK, _bearer(small_only)).status_code == 200  # other keys are not affected
    # models: auto runs on what the key may use; a model it may not use is a 403 naming what it may
    r = post(gw, OK, _bearer(small_only))
    assert r.status_code == 200 and r.headers["x-smallfleet-tier"] == "small"
    r = post(gw, {**OK, "model": "qwen05"}, _bearer(small_only))
    assert r.status_code == 403 and "may not use qwen05" in r.json()["error"]["message"]
    # budget: zero means no step may run, and the SDK is told not to retry
    r = post(gw, OK, _bearer(budgeted))
    assert r.status_code == 429 and r.json()["error"]["code"] == "key_budget_exceeded" and r.headers["x-should-retry"] == "false"
    # the operator raises it; the ledger holds the key's spend
    assert sf("keys", "limit", "budgeted", "--budget", "1", cfg=cfg).returncode == 0
    deadline = time.time() + 5
    while (r := post(gw, OK, _bearer(budgeted))).status_code != 200:
        assert time.time() < deadline, r.text
        time.sleep(0.2)
    listing = sf("keys", "ls", "--json", cfg=cfg)
    import orjson

    keys = {k["name"]: k for k in orjson.loads(listing.stdout)}
    assert keys["budgeted"]["budget_usd"] == 1.0 and keys["budgeted"]["spent_usd"] > 0
    assert keys["limited"]["rpm"] == 3 and keys["small-only"]["models"] == ["small"]
    # lifting the limits works the same way
    assert sf("keys", "limit", "small-only", "--models", "all", cfg=cfg).returncode == 0
    deadline = time.time() + 5
    while post(gw, {**OK, "model": "qwen05"}, _bearer(small_only)).status_code != 200:
        assert time.time() < deadline
        time.sleep(0.2)


def test_a_key_revoked_mid_run_is_refused_and_its_steps_are_whole(scripted_gateway) -> None:  # type: ignore[no-untyped-def]
    gw = scripted_gateway(delay=0.3)
    key = create_key(gw, "short-lived")
    create_key(gw, "stays")  # with no key left the gateway would serve loopback without one
    h = {**_bearer(key), "x-smallfleet-run": "r"}
    assert post(gw, OK, h).status_code == 200
    assert sf("keys", "revoke", "short-lived", cfg=Path(gw.cfg.source)).returncode == 0
    deadline = time.time() + 5
    while (code := post(gw, OK, h).status_code) == 200:
        assert time.time() < deadline
    assert code == 401
    led = Ledger(gw.ledger)
    run = led.run(f"{key.split('-')[1]}:r")
    steps = led.query("SELECT COUNT(DISTINCT step_id) FROM attempts WHERE run_id=?", (f"{key.split('-')[1]}:r",))[0][0]
    assert run is not None and run["steps"] == steps >= 1  # every step that ran is whole in the ledger
    assert led.query("SELECT COUNT(*) FROM reservations")[0][0] == 0
    led.close()


def test_run_ids_starting_with_at_are_kept_for_keys(scripted_gateway_shared) -> None:  # type: ignore[no-untyped-def]
    r = post(scripted_gateway_shared, OK, {"x-smallfleet-run": "@key:0123abcd"})
    assert r.status_code == 400 and "'@'" in r.json()["error"]["message"]
