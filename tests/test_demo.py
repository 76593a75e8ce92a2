"""The main job on the default fleet (0.5B small, 1.5B large): a short slice of the inbox."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smallfleet.demo.inbox import CATEGORIES, load_inbox, run_tool

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_inbox_data_and_tools() -> None:
    inbox = load_inbox()
    assert len(inbox["emails"]) == 12 and sum(1 for m in inbox["emails"] if m.get("hard")) == 1
    assert run_tool("issue_refund", {"order_id": "ORD-1", "amount": 5})["refunded"] == 5
    assert "unknown tool" in run_tool("nope", {})["error"]
    assert "refund" in CATEGORIES


def test_demo_runs_and_records(tmp_path: Path) -> None:
    env = {**os.environ, "SMALLFLEET_LEDGER": str(tmp_path / "l.db")}
    env.pop("SMALLFLEET_CONFIG", None)
    out = tmp_path / "demo.json"
    r = subprocess.run([sys.executable, "-m", "smallfleet.cli", "demo", "--limit", "2", "--json", str(out)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "savings:" in r.stdout and "all-frontier" in r.stdout
    data = json.loads(out.read_text())
    kinds = {s["kind"] for s in data["steps"]}
    assert {"classification", "extraction", "tool_choice", "reshaping"} <= kinds
    assert data["report"]["steps"] == len(data["steps"]) >= 8
    assert data["report"]["spend_usd"] < data["report"]["counterfactual_usd"]
    assert "at parity" in r.stdout  # unverified steps are counted apart from verified ones
    rep = data["report"]
    assert rep["verified_steps"] + rep["unverified_steps"] == rep["steps"]
    assert sum(not s["verified"] for s in data["steps"]) == rep["unverified_steps"]
    calc = [s for s in data["steps"] if s["step"] == "work out amount"]
    if calc:  # refund and billing mail: the reasoning step is cross-checked by a program, and the demo says with what
        assert any("program" in s["crosscheck"] for s in calc) and "cross-checked by a program" in r.stdout
