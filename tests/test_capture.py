"""Capture (S1) and curation (S2): the gateway's trace store, log import, the traces CLI, on scripted models."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from smallfleet.capture import Trace, TraceStore, curate, from_logged, import_jsonl, sampled, structure_signature
from smallfleet.cli import cli
from smallfleet.config import load_config
from smallfleet.errors import ConfigError, InvalidRequestError
from smallfleet.privacy import new_key

KEY = new_key()
PII = "Hi, this is Jane Doe, jane.doe@example.com, +1 415 555 0199. Please write a short thank-you note."
RAW = ("Jane Doe", "jane.doe@example.com", "415 555 0199")
WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def capture_toml(tmp: Path, **kw: Any) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in kw.items())
    return f'\n[capture]\nenabled = true\nstore = "{tmp / "traces.db"}"\n{extra}'


def test_gateway_captures_scrubbed_encrypted_steps_and_takes_feedback(scripted_gateway, tmp_path: Path) -> None:
    gw = scripted_gateway(extra=capture_toml(tmp_path), env={"SMALLFLEET_CAPTURE_KEY": KEY},
                          answer=lambda req: "Dear Jane Doe, thank you!")
    url = gw.base + "/v1/chat/completions"
    a = httpx.post(url, json={"model": "auto", "messages": [{"role": "user", "content": PII}]}, timeout=30)
    b = httpx.post(url, json={"model": "auto", "messages": [{"role": "user", "content": "Count to three."}]},
                   headers={"x-smallfleet-capture": "off"}, timeout=30)
    c = httpx.post(url, json={"model": "auto", "messages": [{"role": "user", "content": "Name a colour."}]},
                   headers={"x-smallfleet-run": "run-7"}, timeout=30)
    assert a.status_code == b.status_code == c.status_code == 200
    bad = httpx.post(url, json={"model": "auto", "messages": [{"role": "user", "content": "x"}]},
                     headers={"x-smallfleet-capture": "maybe"}, timeout=30)
    assert bad.status_code == 400 and "x-smallfleet-capture" in bad.text
    # feedback by the answer's chatcmpl id may arrive before the step is written: it is kept for it
    fb = httpx.post(gw.base + "/v1/smallfleet/feedback", json={"step_id": a.json()["id"], "success": True}, timeout=30)
    assert fb.status_code == 200
    gw.engine.capturer.drain()
    assert httpx.post(gw.base + "/v1/smallfleet/feedback", json={"run_id": "run-7", "success": False}, timeout=30).status_code == 200
    unknown = httpx.post(gw.base + "/v1/smallfleet/feedback", json={"step_id": "step_nope", "success": True}, timeout=30)
    assert unknown.status_code == 404

    store = TraceStore(tmp_path / "traces.db", key=KEY)
    got = {t.id: t for t in store.iter()}
    assert set(got) == {a.headers["x-smallfleet-step-id"], c.headers["x-smallfleet-step-id"]}  # b opted out
    pii = got[a.headers["x-smallfleet-step-id"]]
    text = orjson.dumps(pii.payload()).decode()
    assert not any(r in text for r in RAW) and "<PERSON_1>" in text and "<EMAIL" in text
    assert pii.final["content"] == "Dear <PERSON_1>, thank you!"  # the same person, the same placeholder
    assert pii.feedback == 1.0 and pii.verified is not None and pii.attempts and pii.kind == "generation"
    assert got[c.headers["x-smallfleet-step-id"]].trace == "run-7" and got[c.headers["x-smallfleet-step-id"]].feedback == 0.0
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("traces.db*"))
    assert b"thank-you" not in raw and b"colour" not in raw  # texts are encrypted at rest
    with pytest.raises(ConfigError, match="not the key"):
        TraceStore(tmp_path / "traces.db", key=new_key())


def test_sampling_is_per_conversation_and_off_by_default(scripted_gateway, tmp_path: Path) -> None:
    assert load_config(None, env={}).capture.enabled is False
    assert all(sampled(f"run-{i}", 1.0) for i in range(50)) and not any(sampled(f"run-{i}", 0.0) for i in range(50))
    share = sum(sampled(f"run-{i}", 0.3) for i in range(4000)) / 4000
    assert 0.27 < share < 0.33 and sampled("run-9", 0.3) == sampled("run-9", 0.3)
    gw = scripted_gateway(extra=capture_toml(tmp_path, sample=0.0), env={"SMALLFLEET_CAPTURE_KEY": KEY})
    httpx.post(gw.base + "/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    gw.engine.capturer.drain()
    assert TraceStore(tmp_path / "traces.db", key=KEY).count() == 0


def test_capture_config_is_checked() -> None:
    cfg = load_config(None, env={"SMALLFLEET_CAPTURE": "on", "SMALLFLEET_TRACES": "/tmp/x/t.db"})
    assert cfg.capture.enabled and str(cfg.capture.store_path) == "/tmp/x/t.db"
    with pytest.raises(ConfigError, match="SMALLFLEET_CAPTURE"):
        load_config(None, env={"SMALLFLEET_CAPTURE": "yes"})


def line(request: dict[str, Any], answer: Any, **extra: Any) -> dict[str, Any]:
    msg = {"role": "assistant", "content": answer} if isinstance(answer, str) else {"role": "assistant", "content": None, **answer}
    return {"request": request, "response": {"id": "chatcmpl-1", "object": "chat.completion", "created": 1764547200,
                                             "model": "gpt-4o", "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
                                             "usage": {"prompt_tokens": 100, "completion_tokens": 20}}, **extra}


def ask(text: str, tools: bool = False) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **({"tools": WEATHER} if tools else {})}


CALL = {"tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}}]}


def test_import_reports_bad_lines_by_number_and_keeps_the_rest(tmp_path: Path) -> None:
    log = tmp_path / "agent.jsonl"
    good = [line(ask("Weather in Lyon?", tools=True), CALL, trace="conv-1", feedback=1),
            line(ask(PII), "Dear Jane Doe, thanks.", id="mine-2")]
    bad = ["{not json", orjson.dumps({"request": ask("x")}).decode(),
           orjson.dumps(line({"messages": [{"role": "wizard", "content": "x"}]}, "ok")).decode(),
           orjson.dumps({"request": ask("x"), "response": {"choices": []}}).decode(),
           orjson.dumps(line(ask("x"), "ok", feedback=7)).decode(),
           orjson.dumps(line(ask("x"), "ok", extra_key=1)).decode(),
           orjson.dumps(line(ask("x"), {"tool_calls": "nope"})).decode(),
           "[" * 5000 + "]" * 5000]
    log.write_text("\n".join([orjson.dumps(good[0]).decode(), *bad, "", orjson.dumps(good[1]).decode()]) + "\n")
    store = TraceStore(tmp_path / "t.db", key=KEY)
    rep = import_jsonl(log, store)
    assert rep.imported == 2 and rep.duplicates == 0
    assert [n for n, _ in rep.skipped] == [2, 3, 4, 5, 6, 7, 8, 9]
    whys = dict(rep.skipped)
    assert "not JSON" in whys[2] and "response" in whys[3] and "role" in whys[4] and "choices[0]" in whys[5]
    assert "feedback" in whys[6] and "extra_key" in whys[7] and "response message" in whys[8]
    again = import_jsonl(log, store)
    assert again.imported == 0 and again.duplicates == 2  # the same file twice adds nothing
    ts = {t.id: t for t in store.iter()}
    assert "mine-2" in ts and not any(r in orjson.dumps(ts["mine-2"].payload()).decode() for r in RAW)
    call = next(t for t in ts.values() if t.trace == "conv-1")
    assert call.kind == "tool_choice" and call.feedback == 1.0 and call.source == "import" and call.model == "gpt-4o"
    # the city, detected in the question, is replaced in the call's arguments too, by the same placeholder
    ph = re.fullmatch(r"Weather in (<[A-Z]+_1>)\?", call.request["messages"][0]["content"])
    assert ph and call.final["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": f'{{"city":"{ph[1]}"}}'}
    assert call.ts == 1764547200
    assert call.cost_usd == pytest.approx((100 * 2.5 + 20 * 10.0) / 1e6)


def test_a_logged_line_obeys_the_gateways_request_bounds() -> None:
    with pytest.raises(InvalidRequestError, match="request"):
        from_logged(line({"messages": [{"role": "user", "content": "x"}] * 5000}, "ok"))
    with pytest.raises(InvalidRequestError, match="id"):
        from_logged(line(ask("x"), "ok", id="x" * 300))


def test_traces_cli_import_ls_show_stats_rm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMALLFLEET_CAPTURE_KEY", KEY)
    monkeypatch.delenv("SMALLFLEET_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(orjson.dumps(x).decode() for x in [
        line(ask("Weather in Lyon?", tools=True), CALL, id="a1", trace="c"), line(ask("Say hi"), "Hi!", id="a2"), "oops"]) + "\n")
    st = str(tmp_path / "t.db")
    run = CliRunner().invoke
    missing = run(cli, ["traces", "ls", "--store", st])
    assert missing.exit_code != 0 and "no trace store" in missing.output and "traces import" in missing.output
    r = run(cli, ["traces", "import", str(log), "--store", st, "--json"])
    assert r.exit_code == 0, r.output
    rep = orjson.loads(r.stdout)
    assert rep["imported"] == 2 and rep["skipped"] == [[3, rep["skipped"][0][1]]]
    r = run(cli, ["traces", "ls", "--store", st, "--json"])
    assert [orjson.loads(x)["id"] for x in r.stdout.splitlines()] == ["a2", "a1"]  # newest first (same time: last written)
    r = run(cli, ["traces", "show", "a1", "--store", st])
    assert r.exit_code == 0 and "get_weather" in r.output and "Lyon" not in r.output and "_1>" in r.output
    r = run(cli, ["traces", "stats", "--store", st, "--json"])
    s = orjson.loads(r.stdout)
    assert s["traces"] == 2 and s["by_kind"] == {"tool_choice": 1, "generation": 1}
    assert run(cli, ["traces", "show", "zz", "--store", st]).exit_code != 0
    r = run(cli, ["traces", "rm", "a1", "--store", st])
    assert r.exit_code == 0 and "removed 1" in r.output
    assert run(cli, ["traces", "rm", "--store", st]).exit_code == 2  # nothing named
    r = run(cli, ["traces", "rm", "--all", "--yes", "--store", st])
    assert "removed 1" in r.output
    db = sqlite3.connect(st)
    assert db.execute("SELECT COUNT(*) FROM traces").fetchone()[0] == 0


def _t(i: int, text: str, answer: str = "ok", **kw: Any) -> Trace:
    req = ask(text)
    return Trace(id=f"t{i}", kind="generation", request={"messages": req["messages"]},
                 final={"role": "assistant", "content": answer}, ts=float(i), **kw)


def test_curate_drops_errors_refusals_unverified_low_feedback_and_duplicates() -> None:
    long = ("Please summarise the quarterly report for the board meeting and list the three biggest risks "
            "with their owners and the dates they were raised in the review")
    ts = [_t(0, long), _t(1, long),  # exact duplicate
          _t(2, long + " today"),  # near duplicate (one word more)
          _t(3, "Translate 'good morning' into French"),
          _t(4, "x", answer=""), _t(5, "y", error="backend timed out"),
          _t(6, "z", answer="I'm sorry, but I can't help with that."),
          _t(7, "w", verified=False), _t(8, "v", feedback=0.0), _t(9, "u", feedback=0.9)]
    rep = curate(ts)
    assert [t.id for t in rep.kept] == ["t0", "t3", "t9"]
    assert rep.dropped == {"duplicate": 1, "near_duplicate": 1, "error": 2, "refusal": 1, "unverified": 1, "low_feedback": 1}
    assert rep.duplicate_of == {"t1": "t0", "t2": "t0"}
    # near duplicates are per structure: another tool set is another task
    other = _t(10, long)
    other.request["tools"] = WEATHER
    assert [t.id for t in curate([ts[0], other]).kept] == ["t0", "t10"]
    assert structure_signature(other.request, "generation") != structure_signature(ts[0].request, "generation")


def test_the_trace_store_lives_in_postgresql_beside_the_ledger(pg_url: str, tmp_path: Path) -> None:
    """With SMALLFLEET_DATABASE_URL and no store file named, traces go to the ledger's database: encrypted,
    read back whole, feedback, learned objects and removal as with the file."""
    cfg = load_config(None, env={"SMALLFLEET_DATABASE_URL": pg_url, "SMALLFLEET_CAPTURE_KEY": KEY})
    assert cfg.capture.target == pg_url
    with pytest.raises(ConfigError, match="needs its key in SMALLFLEET_CAPTURE_KEY"):
        TraceStore(pg_url)
    st = TraceStore(cfg.capture.target, key=KEY)
    t = [Trace(id=f"p{i}", kind="extraction", trace="conv", ts=float(i), request={"messages": [{"role": "user", "content": f"q{i}"}]},
               final={"role": "assistant", "content": '{"order_id": null}'}) for i in range(3)]
    assert st.add(t) == 3 and st.add(t) == 0  # an id already stored is skipped
    assert [x.id for x in st.iter()] == ["p0", "p1", "p2"] and st.get("p1").request == t[1].request
    assert st.set_feedback(conversation="conv", score=0.0) == 3 and st.get("p2").feedback == 0.0
    st.put_learned("clusters", {"a": [1, 2]})
    st.put_learned("clusters", {"a": [3]})
    assert st.get_learned("clusters")[1] == {"a": [3]} and st.learned_names("clu") == ["clusters"]
    st.add_shadow("p0", "m", "small", True, "same", None)
    assert st.shadows()[0]["agree"] is True and st.stats().traces == 3 and st.stats().bytes > 0
    import psycopg

    with psycopg.connect(pg_url) as c:  # the texts are encrypted in the database, not just on disk files
        payload = bytes(c.execute("SELECT payload FROM traces WHERE id='p1'").fetchone()[0])
    assert b'"q1"' not in payload and b"order_id" not in payload  # quotes are not in base64's alphabet
    assert st.remove(["p0", "p0"]) == 1 and st.remove(everything=True) == 2
    st.close()
    with pytest.raises(ConfigError, match="is not the key"):
        TraceStore(pg_url, key=new_key())
