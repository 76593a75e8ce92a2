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
    assert "sha256 verified" in r.stdout and "session memory: store will be created" in r.stdout
    assert "capture off" in r.stdout and "learned routes: none yet" in r.stdout
    r = sf("doctor", "--no-load", env={**env, "SMALLFLEET_CAPTURE": "on", "SMALLFLEET_TRACES": str(tmp_path / "t.db"),
                                       "SMALLFLEET_ROUTES": str(tmp_path / "routes.json")})
    assert f"capture on: traces go to {tmp_path / 't.db'}" in r.stdout
    (tmp_path / "routes.json").write_text("{broken")
    r = sf("doctor", "--no-load", env={**env, "SMALLFLEET_ROUTES": str(tmp_path / "routes.json")})
    assert r.returncode == 1 and "not a table written by `smallfleet learn apply`" in r.stdout
    from smallfleet.memory import FactStore
    from smallfleet.privacy import new_key

    FactStore(tmp_path / "memory.db", key=new_key()).close()  # the config's [memory] path, now encrypted
    r = sf("doctor", "--no-load", env=env)
    assert r.returncode == 1 and "encrypted and no key" in r.stdout and "SMALLFLEET_MEMORY_KEY" in r.stdout
    missing = tmp_path / "m.toml"
    missing.write_text(cfg.read_text().replace("package:smollm2-135m", str(tmp_path / "gone.gguf")))
    r = sf("doctor", "--no-load", env={"SMALLFLEET_CONFIG": str(missing)})
    assert r.returncode == 1 and "gone.gguf" in r.stdout and "fix:" in r.stdout


def test_redact_and_restore_json_lines(tmp_path: Path) -> None:
    from smallfleet.privacy import new_key

    env = {"SMALLFLEET_VAULT_KEY": new_key()}
    vault = tmp_path / "v.vault"
    lines = '{"text": "Mail Jane Doe at jane.doe@example.com"}\nnot json\n{"text": "jane.doe@example.com again"}\n'
    r = sf("redact", "--vault", str(vault), input=lines, env=env)
    assert r.returncode == 1 and "1 line(s) failed" in r.stderr  # the bad line is reported, the rest go on
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert out[0]["redacted"] == "Mail <PERSON_1> at <EMAIL_ADDRESS_1>"
    assert out[0]["entities"][1] == {"type": "EMAIL_ADDRESS", "start": 17, "end": 37, "placeholder": "<EMAIL_ADDRESS_1>"}
    assert out[1]["line"] == 2 and "not valid JSON" in out[1]["error"]
    assert out[2]["redacted"] == "<EMAIL_ADDRESS_1> again"  # one vault across lines
    r = sf("redact", "--restore", "--vault", str(vault), env=env,
           input='{"text": "Dear [PERSON 1], see <EMAIL_ADDRESS_1> and <PERSON_4>"}\n')
    assert r.returncode == 0, r.stderr
    back = json.loads(r.stdout)
    assert back == {"restored": "Dear Jane Doe, see jane.doe@example.com and <PERSON_4>", "mangled": ["[PERSON 1]"],
                    "unknown": ["<PERSON_4>"]}
    r = sf("redact", "--restore", input="{}\n")
    assert r.returncode == 2 and "--vault" in r.stderr
    r = sf("redact", "--restore", "--vault", str(vault), env={"SMALLFLEET_VAULT_KEY": new_key()}, input="{}\n")
    assert r.returncode != 0 and "cannot decrypt" in r.stderr


def test_verify_json_lines() -> None:
    lines = ('{"problem": "Tom has 3 apples and buys 5 more.", "steps": ["3 + 5 = 9", "So 9."], "id": 7}\n'
             '{"problem": "x", "steps": []}\nnot json\n\n'
             + json.dumps({"problem": "p", "steps": ["2 + 2 = 5 " + "and so on " * 500]}) + "\n")
    r = sf("verify", input=lines)
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 1 and "2 line(s) failed" in r.stderr
    assert out[0]["first_error_step"] == 0 and 0 <= out[0]["p_flawed"] <= 1 and len(out[0]["step_scores"]) == 2
    assert out[0]["arithmetic_errors"][0]["actual"] == 8.0
    assert out[1] == {"line": 2, "error": "the trace has no steps."} and out[2]["line"] == 3
    # the blank line is skipped; a step over 4,000 characters is checked in part, and the output says so
    assert len(out) == 4 and "step(s) 0 were checked on their first 4000" in out[3]["truncated"]
    assert out[3]["arithmetic_errors"][0]["actual"] == 4.0


def test_config_hints_print_brackets_verbatim(tmp_path: Path) -> None:
    # rich reads "[models.NAME]" as a markup tag; every printer of a message or hint must show it as written
    bad = tmp_path / "bad.toml"
    bad.write_text('[fleet]\nreplace_builtin = true\n[models.s]\npath = "s.gguf"\ntier = "small"\n')
    r = sf("--config", str(bad), "doctor", "--no-load")
    assert r.returncode == 1 and 'fix: add a [models.NAME] with tier = "large"' in r.stdout, r.stdout
    r = sf("--config", str(bad), "models")
    assert r.returncode == 2 and 'hint: add a [models.NAME] with tier = "large"' in r.stderr, r.stderr
    bad.write_text('[models.qwen2.5-coder-0.5b]\npath = "package:qwen2.5-coder-0.5b"\ntier = "small"\n')
    r = sf("--config", str(bad), "models")
    assert r.returncode == 2 and "[models.qwen2] holds a sub-table" in r.stderr
    assert 'hint: quote a name that has dots: [models."qwen2.5-coder-0.5b"]' in r.stderr, r.stderr


def test_config_option_after_the_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[fleet]\nmax_escalatons = 1\n")
    for args in (("doctor", "--config", str(bad), "--no-load"), ("doctor", "--no-load", f"--config={bad}")):
        r = sf(*args)
        assert r.returncode == 1 and "[fleet]: unknown key 'max_escalatons'" in r.stdout, r.stdout
        assert "fix: did you mean max_escalations?" in r.stdout
    r = sf("serve", "--config", str(bad), "--port", "0")  # the config fails before anything binds
    assert r.returncode == 2 and "max_escalatons" in r.stderr and "Traceback" not in r.stderr, r.stderr
    good = tmp_path / "good.toml"
    good.write_text(f'[models.mine]\npath = "{tmp_path / "mine.gguf"}"\ntier = "small"\n')
    r = sf("models", "--config", str(good), env={"SMALLFLEET_PORT": "1"})
    assert r.returncode == 0 and "mine" in r.stdout and "qwen2.5-coder-1.5b" in r.stdout, r.stderr
    assert "also accepted after the command" in " ".join(sf("--help").stdout.split())  # help wraps lines


def test_hoist_config_moves_it_before_the_command() -> None:
    import click

    from smallfleet.cli._app import _hoist_config

    assert _hoist_config(["doctor", "--config", "a.toml", "--no-load"]) == ["--config", "a.toml", "doctor", "--no-load"]
    assert _hoist_config(["serve", "--port", "0", "--config=a.toml"]) == ["--config=a.toml", "serve", "--port", "0"]
    # after a group-level --config: the one after the command wins, as for a repeated option
    assert _hoist_config(["--config", "a", "run", "--config", "b", "hi"]) == ["--config", "a", "--config", "b", "run", "hi"]
    assert _hoist_config(["bench", "agentdojo", "--config", "a"]) == ["--config", "a", "bench", "agentdojo"]
    assert _hoist_config(["run", "--", "--config", "x"]) == ["run", "--", "--config", "x"]  # an argument after --
    assert _hoist_config(["--config", "a", "doctor"]) == ["--config", "a", "doctor"]
    assert _hoist_config([]) == [] and _hoist_config(["--help"]) == ["--help"]
    with pytest.raises(click.UsageError, match="requires an argument"):
        _hoist_config(["doctor", "--config"])


def test_serve_on_a_busy_port_says_which_and_how_to_pick_another(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = sf("serve", "--port", str(port), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "Errno" not in r.stderr
    assert f"port 127.0.0.1:{port} is in use" in r.stderr and f"--port {port + 1}" in r.stderr


def test_models_and_doctor_ask_the_gateway_at_host_and_port(scripted_gateway_shared, tmp_path: Path) -> None:
    gw = scripted_gateway_shared
    r = sf("models", "--port", str(gw.port), cwd=tmp_path)
    assert r.returncode == 0 and "no gateway answering" not in r.stdout
    r = sf("models", "--host", "127.0.0.1", "--port", "1", cwd=tmp_path)
    assert "no gateway answering at 127.0.0.1:1" in r.stdout
    r = sf("doctor", "--no-load", "--port", str(gw.port), cwd=tmp_path)
    assert f"a smallfleet gateway already answers on 127.0.0.1:{gw.port}" in r.stdout
    for cmd in ("models", "doctor"):
        assert "--port" in sf(cmd, "--help").stdout and "--host" in sf(cmd, "--help").stdout


def test_a_slow_check_is_named_and_doctor_goes_on() -> None:
    import time

    from smallfleet.cli._checks import SlowCheck, load_in_child, within

    t0 = time.monotonic()
    with pytest.raises(SlowCheck, match=r"opening the ledger did not finish in 0\.2 s"):
        within(0.2, "opening the ledger", lambda: time.sleep(5))
    assert time.monotonic() - t0 < 2
    assert within(5, "quick", lambda: 42) == 42
    with pytest.raises(ZeroDivisionError):
        within(5, "raises", lambda: 1 / 0)
    from smallfleet.config import load_config

    spec = load_config(None, env={}).tier_model("small")
    t0 = time.monotonic()
    with pytest.raises(SlowCheck):  # a child process cannot even start Python in 50 ms: killed, reported
        load_in_child(spec, 0.05)
    assert time.monotonic() - t0 < 10


def test_the_ledger_lives_beside_the_projects_config(tmp_path: Path) -> None:
    (tmp_path / "smallfleet.toml").write_text("[fleet]\nmax_escalations = 1\n")
    r = sf("doctor", "--no-load", cwd=tmp_path, env={"SMALLFLEET_LEDGER": ""})
    assert f"ledger writable at {tmp_path / '.smallfleet' / 'ledger.db'}" in r.stdout
    assert (tmp_path / ".smallfleet" / "ledger.db").is_file()
