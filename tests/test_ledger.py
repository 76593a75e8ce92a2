import sqlite3
from pathlib import Path

import pytest

from smallfleet.config import load_config
from smallfleet.errors import BudgetExceededError, ConfigError
from smallfleet.ledger import AttemptRow, Ledger
from smallfleet.report import build_report


def row(step: str, attempt: int, final: bool, tier: str = "small", cost: float = 0.001, run: str | None = "r1", **kw) -> AttemptRow:
    base = dict(step_id=step, run_id=run, session_id=None, step_kind="extraction", attempt=attempt, model="m-" + tier,
                tier=tier, stand_in=False, tokens_in=100, tokens_out=20, cached_tokens=0, cost_usd=cost,
                frontier_cost_usd=0.01, latency_ms=5.0, checks=[{"check": "schema_valid", "passed": final}],
                passed=final, escalated=not final, final=final)
    base.update(kw)
    return AttemptRow(**base)


def test_record_and_report(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.db")
    led.record_step([row("s1", 0, True)])
    led.record_step([row("s2", 0, False), row("s2", 1, True, tier="large", cost=0.003)])
    rep = build_report(led, load_config(env={}))
    assert (rep.steps, rep.attempts) == (2, 3)
    assert rep.spend_usd == pytest.approx(0.005)
    assert rep.counterfactual_usd == pytest.approx(0.02)  # final attempts at the frontier price
    assert rep.savings_pct == pytest.approx(75.0)
    assert {r["tier"]: r["steps"] for r in rep.by_tier} == {"small": 1, "large": 1}
    assert rep.by_kind[0]["escalation_rate"] == pytest.approx(0.5)
    assert led.query("SELECT spent_usd, steps FROM runs WHERE run_id='r1'")[0] == (pytest.approx(0.005), 2)


def test_a_failed_write_leaves_nothing_half_written(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.db")
    bad = row("s1", 1, True, tokens_in=None)  # NOT NULL violation on the second row of the step
    with pytest.raises(sqlite3.IntegrityError):
        led.record_step([row("s1", 0, False), bad])
    assert led.query("SELECT COUNT(*) FROM attempts")[0][0] == 0
    assert led.query("SELECT COUNT(*) FROM runs")[0][0] == 0
    led.record_step([row("s2", 0, True)])  # the connection is still usable
    assert led.query("SELECT COUNT(*) FROM attempts")[0][0] == 1


def test_budget_per_run(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.db")
    led.check_budget("r1", 0.002, 0.001)
    led.record_step([row("s1", 0, True, cost=0.0015)], budget=0.002)
    with pytest.raises(BudgetExceededError) as e:
        led.check_budget("r1", None, 0.001)  # the stored budget applies
    assert e.value.status == 429 and e.value.message == (
        "run 'r1' has spent $0.0015 of its $0.0020 budget; this step is estimated at $0.0010, which would pass it.")
    assert e.value.http_headers() == [(b"x-should-retry", b"false")]  # waiting cannot help: no retry
    led.check_budget("other-run", None, 1.0)  # no budget: unlimited
    led.close()
    again = Ledger(tmp_path / "l.db")  # spend survives a restart
    with pytest.raises(BudgetExceededError):
        again.check_budget("r1", None, 0.001)


def test_a_budget_held_by_running_steps_says_retry_after(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.db")
    led.set_budget("r", 0.01)
    held = led.reserve("r", None, 0.008)  # a step still running holds most of it
    with pytest.raises(BudgetExceededError) as e:
        led.reserve("r", None, 0.004)
    assert "$0.0080 is held by its steps still running" in e.value.message and "retry in a moment" in (e.value.hint or "")
    assert e.value.http_headers() == [(b"retry-after", b"1")]
    led.release("r", held)
    led.release("r", led.reserve("r", None, 0.004))  # the running step is done: room again
    with pytest.raises(BudgetExceededError) as e:
        led.reserve("r", None, 0.02)  # more than the whole budget: no wait makes room
    assert e.value.http_headers() == [(b"x-should-retry", b"false")]
    with pytest.raises(BudgetExceededError) as e:
        Ledger(tmp_path / "z.db").reserve("zero", 0.0, 0.001)
    assert "has spent $0 of its $0 budget" in e.value.message
    led.close()


def test_not_a_database(tmp_path: Path) -> None:
    p = tmp_path / "junk.db"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="cannot open the ledger"):
        Ledger(p)


def test_group_commit_writes_concurrent_steps_and_isolates_a_bad_one(tmp_path: Path) -> None:
    import asyncio

    led = Ledger(tmp_path / "l.db")

    async def go():
        good = [led.record_step_async([row(f"s{i}", 0, True)]) for i in range(20)]
        bad = led.record_step_async([row("bad", 0, False), row("bad", 1, True, tokens_in=None)])
        return await asyncio.gather(*good, bad, return_exceptions=True)

    results = asyncio.run(go())
    assert results[:20] == [None] * 20 and isinstance(results[20], sqlite3.IntegrityError)
    assert led.query("SELECT COUNT(DISTINCT step_id) FROM attempts")[0][0] == 20
    assert led.query("SELECT COUNT(*) FROM attempts WHERE step_id='bad'")[0][0] == 0
    assert led.query("SELECT steps FROM runs WHERE run_id='r1'")[0][0] == 20
    led.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One ledger database that several handles (replicas) open: a file, or a real PostgreSQL."""
    return str(tmp_path / "shared.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


def burst(replicas: list[Ledger], reserve, write, n: int = 40) -> tuple[list[int], list[BudgetExceededError]]:  # type: ignore[no-untyped-def]
    """``n`` steps released at once over the ledger handles, step i on handle i % len: ``reserve(led, i)``
    holds its budget (or raises BudgetExceededError), ``write(led, i, held)`` records it. The steps that
    passed, and the refusals."""
    import threading

    passed: list[int] = []
    refused: list[BudgetExceededError] = []
    failed: list[BaseException] = []  # an assertion in a thread would otherwise be lost
    lock, start = threading.Lock(), threading.Barrier(n)

    def step(i: int) -> None:
        led = replicas[i % len(replicas)]
        start.wait()
        try:
            held = reserve(led, i)
        except BudgetExceededError as e:
            with lock:
                refused.append(e)
            return
        try:
            write(led, i, held)
        except BaseException as e:
            with lock:
                failed.append(e)
            return
        with lock:
            passed.append(i)

    threads = [threading.Thread(target=step, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise failed[0]
    return passed, refused


def test_budgets_are_exact_across_replicas_under_a_burst(shared: str) -> None:
    """Two ledger handles on one database (two gateway processes' worth), 40 steps at once against a
    budget that covers 5: exactly 5 pass, and the run's spend never passes the budget."""
    replicas = [Ledger(shared), Ledger(shared)]
    replicas[0].set_budget("burst", 0.05)
    passed, refused = burst(replicas, lambda led, i: led.reserve("burst", None, 0.01, key=f"s{i}"),
                            lambda led, i, held: led.record_step([row(f"s{i}", 0, True, cost=0.01, run="burst")], reserved=held))
    run = replicas[1].run("burst")
    assert run is not None and len(passed) == 5 and len(refused) == 35
    assert run["spent_usd"] == pytest.approx(0.05) and run["steps"] == 5
    assert replicas[0].query("SELECT COUNT(*) FROM reservations")[0][0] == 0  # every hold went with its step's write
    for led in replicas:
        led.close()


def test_a_reservation_of_a_process_that_died_lapses(shared: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import smallfleet.ledger as ledger_mod

    led = Ledger(shared)
    led.set_budget("r", 0.01)
    monkeypatch.setattr(ledger_mod, "HOLD_S", 0.2)
    led.reserve("r", None, 0.008, key="dead-step")  # its process dies: no write, no release
    with pytest.raises(BudgetExceededError):
        led.reserve("r", None, 0.004, key="next")
    import time

    time.sleep(0.3)
    assert led.reserve("r", None, 0.004, key="next") == 0.004
    led.close()


def test_a_ledger_on_postgresql_that_goes_away_is_a_503(pg_server, pg_url: str) -> None:
    from smallfleet.db import DatabaseUnavailable

    led = Ledger(pg_url)
    led.set_budget("r", 1.0)
    pg_server.stop()
    try:
        with pytest.raises(DatabaseUnavailable) as e:
            led.reserve("r", None, 0.01, key="s")
        assert e.value.status == 503
        with pytest.raises(DatabaseUnavailable):
            led.record_step([row("s", 0, True, run="r")])
    finally:
        pg_server.start()
    led.record_step([row("s", 0, True, run="r")])  # back: nothing half-written before, the step now
    assert [r["step_id"] for r in led.attempts(run_id="r")] == ["s"]
    led.close()


def test_the_report_reads_a_postgresql_ledger(pg_url: str) -> None:
    led = Ledger(pg_url)
    led.record_step([row("s1", 0, True)])
    led.record_step([row("s2", 0, False), row("s2", 1, True, tier="large", cost=0.003)], budget=1.0)
    assert led.record_feedback(run_id="r1", success=True)
    rep = build_report(led, load_config(env={}))
    assert (rep.steps, rep.attempts) == (2, 3) and rep.spend_usd == pytest.approx(0.005)
    assert {r["tier"]: r["steps"] for r in rep.by_tier} == {"small": 1, "large": 1}
    assert build_report(led, load_config(env={}), run_prefix="r").steps == 2
    led.close()
