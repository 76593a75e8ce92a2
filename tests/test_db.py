"""smallfleet.db on both databases: a SQLite file and a real PostgreSQL server (tests/pg.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from smallfleet.db import Database, DatabaseUnavailable, redact_url
from smallfleet.errors import ConfigError

MIGRATIONS_V1 = {
    "sqlite": ["CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT NOT NULL, n INTEGER NOT NULL DEFAULT 0)"],
    "postgresql": ["CREATE TABLE things (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name TEXT NOT NULL, "
                   "n INTEGER NOT NULL DEFAULT 0)"],
}
MIGRATIONS_V2 = {d: [*m, "ALTER TABLE things ADD COLUMN note TEXT; CREATE INDEX things_name ON things(name)"]
                 for d, m in MIGRATIONS_V1.items()}


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "x.db")
    return str(request.getfixturevalue("pg_url"))


def test_migrations_apply_once_in_order_and_a_newer_database_is_refused(target: str) -> None:
    db = Database(target)
    assert db.migrate("things", MIGRATIONS_V1) == 1
    db.execute("INSERT INTO things (name) VALUES (?)", ("a?b%c",))  # '?' and '%' in values are only values
    assert db.migrate("things", MIGRATIONS_V1) == 1  # nothing to do
    assert db.migrate("things", MIGRATIONS_V2) == 2  # upgraded in place, the row kept
    db.execute("UPDATE things SET note = ? WHERE name = ?", ("kept", "a?b%c"))
    assert db.query("SELECT name, note FROM things") == [("a?b%c", "kept")]
    with pytest.raises(ConfigError, match=r"newer smallfleet \(schema 2; this one knows 1\)"):
        db.migrate("things", MIGRATIONS_V1)
    db.close()


def test_a_transaction_is_all_or_nothing(target: str) -> None:
    db = Database(target)
    db.migrate("things", MIGRATIONS_V1)
    with pytest.raises(RuntimeError), db.transaction() as cur:
        cur.execute("INSERT INTO things (name) VALUES (?)", ("half",))
        raise RuntimeError("crash mid-step")
    with db.transaction() as cur:
        cur.executemany("INSERT INTO things (name) VALUES (?)", [("x",), ("y",)])
    assert sorted(r[0] for r in db.query("SELECT name FROM things")) == ["x", "y"]
    db.close()


def test_concurrent_writers_from_two_handles_lose_no_update(target: str) -> None:
    """Two handles on one database (two replicas' worth): a locked read-modify-write is exact."""
    a, b = Database(target), Database(target)
    a.migrate("things", MIGRATIONS_V1)
    b.migrate("things", MIGRATIONS_V1)
    a.execute("INSERT INTO things (name) VALUES ('counter')")
    lock = " FOR UPDATE" if a.dialect == "postgresql" else ""

    def bump(db: Database) -> None:
        for _ in range(50):
            with db.transaction() as cur:
                n = cur.execute("SELECT n FROM things WHERE name='counter'" + lock).fetchone()[0]
                cur.execute("UPDATE things SET n = ? WHERE name='counter'", (n + 1,))

    ts = [threading.Thread(target=bump, args=(d,)) for d in (a, b, a, b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert a.query("SELECT n FROM things WHERE name='counter'") == [(200,)]
    a.close()
    b.close()


def test_a_database_that_goes_away_is_a_503_and_it_recovers(pg_server, pg_url: str) -> None:
    db = Database(pg_url, connect_timeout=2)
    db.migrate("things", MIGRATIONS_V1)
    pg_server.stop()
    try:
        with pytest.raises(DatabaseUnavailable) as e:
            db.execute("INSERT INTO things (name) VALUES ('lost')")
        assert e.value.status == 503 and "nothing was written" in (e.value.hint or "")
    finally:
        pg_server.start()
    db.execute("INSERT INTO things (name) VALUES ('after')")
    assert db.query("SELECT name FROM things") == [("after",)]
    db.close()


def test_unreachable_and_malformed_targets_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable, match=r"cannot reach PostgreSQL at postgresql://u:\*\*\*@127\.0\.0\.1:9/x"):
        Database("postgresql://u:secret@127.0.0.1:9/x", connect_timeout=1)
    assert redact_url("postgresql://u:p@h/db") == "postgresql://u:***@h/db" and redact_url("postgresql://h/db") == "postgresql://h/db"
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError, match="cannot open the database"):
        Database(tmp_path / "junk.db").migrate("things", MIGRATIONS_V1)
