import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import write_config


def sf(*args: str, env: dict | None = None, cwd: Path | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    import os

    e = {**os.environ, **(env or {})}
    e.pop("SMALLFLEET_CONFIG", None)
    if env and "SMALLFLEET_CONFIG" in env:
        e["SMALLFLEET_CONFIG"] = env["SMALLFLEET_CONFIG"]
    return subprocess.run([sys.executable, "-m", "smallfleet.cli", *args], capture_output=True, text=True, env=e,
                          cwd=cwd, input=input, timeout=300)


def test_help_explains_every_command() -> None:
    r = sf("--help")
    assert r.returncode == 0
    for cmd in ("serve", "run", "demo", "report", "models", "doctor", "SMALLFLEET_LEDGER"):
        assert cmd in r.stdout
    assert "x-smallfleet-budget" in sf("serve", "--help").stdout


def test_broken_config_exits_nonzero_with_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[models.a]\nbackend='magic'\npath='x'\ntier='small'\n")
    r = sf("--config", str(bad), "models")
    assert r.returncode == 2 and "backend = 'magic'" in r.stderr and "Traceback" not in r.stderr


def test_report_without_ledger(tmp_path: Path) -> None:
    r = sf("report", env={"SMALLFLEET_LEDGER": str(tmp_path / "none.db")}, cwd=tmp_path)
    assert r.returncode != 0 and "no ledger" in r.stderr and "smallfleet demo" in r.stderr


def test_run_bad_json_input(tmp_path: Path) -> None:
    r = sf("run", "--json", "-", input="{oops", cwd=tmp_path)
    assert r.returncode == 2 and "not valid JSON" in r.stderr


@pytest.mark.model
def test_run_then_report(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    env = {"SMALLFLEET_CONFIG": str(cfg)}
    r = sf("run", "--run-id", "cli-1", "--max-tokens", "6", "Say hello", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "generation" in r.stderr
    r = sf("run", "--raw", "--json", "-", env=env,
           input=json.dumps({"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4}))
    assert r.returncode == 0 and json.loads(r.stdout)["smallfleet"]["step_kind"] == "generation"
    r = sf("report", "--json", env=env)
    rep = json.loads(r.stdout)
    assert r.returncode == 0 and rep["steps"] == 2 and rep["spend_usd"] > 0
    r = sf("report", env=env)
    assert "escalation per step kind" in r.stdout


@pytest.mark.model
def test_models_and_doctor(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    env = {"SMALLFLEET_CONFIG": str(cfg), "SMALLFLEET_PORT": "1"}
    r = sf("models", env=env)
    assert r.returncode == 0 and "smollm2" in r.stdout and "ok" in r.stdout
    r = sf("doctor", "--no-load", env=env)
    assert "sha256 verified" in r.stdout
    missing = tmp_path / "m.toml"
    missing.write_text(cfg.read_text().replace("package:smollm2-135m", str(tmp_path / "gone.gguf")))
    r = sf("doctor", "--no-load", env={"SMALLFLEET_CONFIG": str(missing)})
    assert r.returncode == 1 and "gone.gguf" in r.stdout and "fix:" in r.stdout
