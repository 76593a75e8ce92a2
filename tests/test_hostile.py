"""Regression tests for the hostile-input findings (issue 14), against the real gateway (our uvicorn
protocol, limits and access rules) serving scripted models, so each runs in well under a second.
The few that need llama.cpp itself are marked ``model``."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from pathlib import Path

import httpx
import pytest

from smallfleet.errors import InvalidRequestError
from smallfleet.guards.trust import parse_tool_output, tool_segments
from smallfleet.ledger import Ledger
from smallfleet.schemas import check_schema
from tests.conftest import sf

OK = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
U = [{"role": "user", "content": "hi"}]


def post(gw, body, headers=None, path="/v1/chat/completions", timeout=10.0) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(gw.base + path, content=raw, headers={"content-type": "application/json", **(headers or {})}, timeout=timeout)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmRSS")) / 1024


def yaml_bomb(levels: int) -> str:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, levels + 1):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines)


# -- 1. YAML alias bomb ---------------------------------------------------------------------------
def test_yaml_alias_bomb_is_read_as_text_at_once() -> None:
    bomb = yaml_bomb(8)  # ~330 bytes; expanded it would be 9**9 = 387 million nodes
    before = rss_mb()
    t0 = time.perf_counter()
    assert parse_tool_output(bomb) is None
    segs = tool_segments(bomb, "tool:x#1", "x")
    assert time.perf_counter() - t0 < 0.5 and rss_mb() - before < 50
    assert len(segs) == 1 and segs[0].text == bomb  # kept as one untrusted text segment
    assert parse_tool_output("name: Bob\nitems:\n  - 1\n  - 2") == {"name": "Bob", "items": [1, 2]}  # plain YAML still parses


def test_deep_or_huge_structured_tool_output_is_bounded() -> None:
    assert parse_tool_output("[" * 900 + "]" * 900) is None  # deeper than the walker allows: text
    wide = json.dumps([{"k": i} for i in range(30_000)])
    assert parse_tool_output(wide) is None  # more nodes than the bound
    assert parse_tool_output(json.dumps({"a": [1, {"b": "c"}]})) == {"a": [1, {"b": "c"}]}


def test_yaml_bomb_through_the_gateway(scripted_gateway) -> None:
    gw = scripted_gateway()
    msgs = [{"role": "user", "content": "read the file"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                                 "function": {"name": "read_file", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": yaml_bomb(8)}]
    t0 = time.perf_counter()
    r = post(gw, {"model": "auto", "messages": msgs})
    assert r.status_code == 200 and time.perf_counter() - t0 < 3
    assert httpx.get(gw.base + "/health", timeout=1).status_code == 200


# -- 2. Schemas: contradictory, huge, recursive ---------------------------------------------------
@pytest.mark.parametrize("schema, words", [
    ({"type": "string", "minLength": 500, "maxLength": 200}, "minLength (500) is above maxLength (200)"),
    ({"type": "array", "minItems": 50, "maxItems": 10}, "minItems (50) is above maxItems (10)"),
    ({"type": "integer", "minimum": 10, "maximum": 5}, "minimum (10) is above maximum (5)"),
    ({"type": "object", "minProperties": 5, "maxProperties": 2}, "minProperties"),
    ({"type": "number", "exclusiveMinimum": 3, "exclusiveMaximum": 3}, "exclusiveMinimum"),
    ({"type": "string", "maxLength": 10**6}, "above the gateway's limit"),
    ({"type": "string", "maxLength": 2.5}, "non-negative integer"),
    ({"type": "string", "maxLength": "10"}, "non-negative integer"),
    ({"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(2000)}}, "properties has 2000 entries"),
    ({"enum": [f"v{i}" for i in range(5000)]}, "enum has 5000 values"),
    ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "recursive"),
    ({"$defs": {"n": {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"}, "recursive"),
    ({"$ref": "http://example.com/x.json"}, "own $defs"),
    ({"$ref": "#"}, "own $defs"),
    ({"type": "string", "pattern": "a{5000}"}, "more than 1000 times"),
    ({"type": "string", "pattern": "a{9,3}"}, "minimum is above its maximum"),
    ({"type": "string", "pattern": "line\n\x1b[31mforged"}, "control character"),
    ({"type": "string", "pattern": "(unclosed"}, "not a valid regular expression"),
    ({"type": "banana"}, "type 'banana'"),
    ({"type": "object", "required": "name"}, "required must be a list"),
    ({"anyOf": []}, "non-empty list"),
    ({"$dynamicRef": "#x"}, "not supported"),
])
def test_bad_schemas_are_refused_with_the_reason(schema, words) -> None:
    with pytest.raises(InvalidRequestError) as e:
        check_schema(schema, "response_format.json_schema.schema")
    assert words in e.value.message and e.value.status == 400


def test_deep_schema_is_refused_without_recursion() -> None:
    s: dict = {"type": "string"}
    for depth in range(1, 301):
        s = {"type": "array", "items": s}
        if depth in (100, 300):  # past the walker's bound; past the JSON encoder's own limit
            with pytest.raises(InvalidRequestError, match=r"nests subschemas more than|cannot be serialised"):
                check_schema(s, "p")


def test_ordinary_schemas_pass() -> None:
    check_schema({"type": "object", "properties": {"name": {"type": "string", "maxLength": 30}, "tags": {
        "type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": True}, "when": {"type": "string", "format": "date"},
        "n": {"type": "integer", "minimum": 0, "maximum": 10, "multipleOf": 2}},
        "required": ["name"], "$defs": {"x": {"type": "string"}}, "additionalProperties": False}, "p")
    check_schema({"$defs": {"addr": {"type": "object", "properties": {"city": {"type": "string"}}}},
                  "type": "object", "properties": {"home": {"$ref": "#/$defs/addr"}, "work": {"$ref": "#/$defs/addr"}}}, "p")


def test_impossible_schemas_get_400_before_any_model_work(scripted_gateway) -> None:
    gw = scripted_gateway()
    bomb = {"type": "string", "minLength": 500, "maxLength": 200}
    r = post(gw, {**OK, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": bomb}}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format.json_schema.schema"
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": bomb}}}}]
    assert post(gw, {**OK, "tools": tools}).status_code == 400
    # the extract endpoint: minLength above its own 200-character cap, 10,000 properties, bad types
    for schema in ({"type": "object", "properties": {"a": {"type": "string", "minLength": 300}}},
                   {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(10_000)}},
                   {"type": "object", "properties": {"a": {"type": "string", "maxLength": "x"}}},
                   {"type": "object", "properties": {"a": {"type": "string"}}, "required": "a"},
                   {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}):
        t0 = time.perf_counter()
        r = post(gw, {"text": "Order 42 ships Monday.", "schema": schema}, path="/v1/smallfleet/extract")
        assert r.status_code == 400, (schema, r.text)
        assert time.perf_counter() - t0 < 2
    assert all(not b.calls for b in gw.backends.values())  # no model was asked anything


# -- 3. Knowledge bases by name only ---------------------------------------------------------------
def test_a_request_cannot_open_a_file(scripted_gateway, tmp_path: Path) -> None:
    import sqlite3

    victim = tmp_path / "victim.db"
    sqlite3.connect(victim).execute("CREATE TABLE t (x)").connection.close()
    before = victim.read_bytes()
    gw = scripted_gateway()
    for header in ({"x-smallfleet-kb": str(victim)}, {"x-smallfleet-kb": "/etc/passwd"}, {"x-smallfleet-kb": "/nope.db"}):
        r = post(gw, OK, header)
        assert r.status_code == 400 and "no knowledge base named" in r.json()["error"]["message"]
    r = post(gw, {**OK, "metadata": {"smallfleet_kb": str(victim)}})
    assert r.status_code == 400
    assert victim.read_bytes() == before and not Path(str(victim) + "-wal").exists()  # untouched


# -- 4. Keys, Host, cross-site ---------------------------------------------------------------------
def test_keys_end_to_end_api_report_dashboard(scripted_gateway) -> None:
    gw = scripted_gateway()
    cfg = Path(gw.cfg.source)
    assert post(gw, OK).status_code == 200  # no keys yet: loopback is served
    made = sf("keys", "create", "alice", cfg=cfg)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    store = gw.cfg.key_store_path  # with replicas the keys are in PostgreSQL (test_keys checks that store)
    assert key.startswith("sf-") and (not store.exists() or key not in store.read_bytes().decode("latin-1"))  # only a digest
    bob = sf("keys", "create", "bob", cfg=cfg).stdout.strip().splitlines()[-1]
    admin = sf("keys", "create", "ops", "--admin", cfg=cfg).stdout.strip().splitlines()[-1]
    deadline = time.time() + 5
    while post(gw, OK).status_code != 401:  # a running gateway sees the new keys within seconds
        assert time.time() < deadline
        time.sleep(0.1)
    r = post(gw, OK)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert post(gw, OK, {"authorization": "Bearer sf-00000000-" + "x" * 32}).status_code == 401
    assert httpx.get(gw.base + "/v1/smallfleet/report").status_code == 401
    assert httpx.get(gw.base + "/v1/models").status_code == 401
    assert httpx.get(gw.base + "/health").json() == {"status": "ok"}  # liveness only, no details
    # the official client, the same run id from two keys: two runs, each with its own budget
    from openai import OpenAI

    for k in (key, bob):
        OpenAI(base_url=gw.base + "/v1", api_key=k).chat.completions.create(
            model="auto", messages=U, extra_headers={"x-smallfleet-run": "shared", "x-smallfleet-session": "s1"})
    led = Ledger(gw.ledger)
    runs = {r[0] for r in led.query("SELECT run_id FROM runs")}
    sessions = {r[0] for r in led.query("SELECT DISTINCT session_id FROM attempts WHERE session_id IS NOT NULL")}
    led.close()
    kid_a, kid_b = key.split("-")[1], bob.split("-")[1]
    assert runs == {f"{kid_a}:shared", f"{kid_b}:shared", f"@key:{kid_a}", f"@key:{kid_b}"} and sessions == {f"{kid_a}:s1", f"{kid_b}:s1"}
    mine = httpx.get(gw.base + "/v1/smallfleet/report", headers={"authorization": f"Bearer {key}"}).json()
    everyone = httpx.get(gw.base + "/v1/smallfleet/report", headers={"authorization": f"Bearer {admin}"}).json()
    assert mine["steps"] == 1 and everyone["steps"] == 3  # the admin also sees the keyless step from before
    # the dashboard: a login form, then a same-site cookie that only the dashboard pages accept
    page = httpx.get(gw.base + "/")
    assert page.status_code == 401 and "<form" in page.text
    bad = httpx.post(gw.base + "/login", data={"key": "sf-nope"})
    assert bad.status_code == 401
    ok = httpx.post(gw.base + "/login", data={"key": key})
    assert ok.status_code == 303 and "HttpOnly" in ok.headers["set-cookie"] and "SameSite=Strict" in ok.headers["set-cookie"]
    cookies = {"smallfleet_key": key}
    assert "<svg" in httpx.get(gw.base + "/", cookies=cookies).text
    assert httpx.post(gw.base + "/v1/chat/completions", json=OK, cookies=cookies).status_code == 401  # the API ignores it
    # revoked: refused within seconds
    assert sf("keys", "revoke", "alice", cfg=cfg).returncode == 0
    deadline = time.time() + 5
    while post(gw, OK, {"authorization": f"Bearer {key}"}).status_code != 401:
        assert time.time() < deadline
        time.sleep(0.1)
    assert post(gw, OK, {"authorization": f"Bearer {bob}"}).status_code == 200
    ls = sf("keys", "ls", "--json", cfg=cfg)
    listed = json.loads(ls.stdout)
    assert {k["name"] for k in listed} == {"alice", "bob", "ops"} and all("digest" not in k for k in listed)


def test_keyless_gateway_refuses_other_hosts_and_cross_site_requests(scripted_gateway) -> None:
    gw = scripted_gateway()
    assert post(gw, OK, {"host": "evil.example"}).status_code == 403  # DNS rebinding
    assert post(gw, OK, {"host": f"localhost:{gw.port}"}).status_code == 200
    assert post(gw, OK, {"host": "127.0.0.1:1"}).status_code == 403  # another port: not this gateway
    r = post(gw, b'{"model": "auto"}', {"origin": "http://evil.example", "content-type": "text/plain"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert post(gw, OK, {"sec-fetch-site": "cross-site"}).status_code == 403
    assert post(gw, OK, {"origin": f"http://127.0.0.1:{gw.port}"}).status_code == 200  # its own page


def test_keyless_gateway_serves_loopback_clients_only() -> None:
    from smallfleet.errors import ForbiddenError
    from smallfleet.keys import KeyRing
    from smallfleet.server.access import Access

    acc = Access(KeyRing(Path("/nonexistent/keys.db")), "0.0.0.0")
    assert acc.admit({"host": "127.0.0.1:8088"}, "127.0.0.1", 8088).key is None
    with pytest.raises(ForbiddenError, match="loopback"):
        acc.admit({"host": "192.168.1.5:8088"}, "192.168.1.9", 8088)


# -- 5. Budgets ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e309", "-0.5", "NaN", "abc"])
def test_budget_values_must_be_finite_and_non_negative(scripted_gateway, value) -> None:
    gw = scripted_gateway()
    r = post(gw, OK, {"x-smallfleet-run": "r", "x-smallfleet-budget": value})
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-smallfleet-budget"


def test_concurrent_steps_cannot_overshoot_a_budget(scripted_gateway) -> None:
    gw = scripted_gateway(delay=1.0)
    est = gw.engine.recorder.estimate(gw.engine.make_step({**OK, "max_tokens": 16}), gw.cfg.tier_model("small"))
    h = {"x-smallfleet-run": "one-step", "x-smallfleet-budget": repr(est * 1.5)}

    def go(_: int) -> int:
        return post(gw, {**OK, "max_tokens": 16}, h).status_code

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(go, range(8)))
    assert codes.count(200) == 1 and codes.count(429) == 7, codes
    led = Ledger(gw.ledger)
    run = led.run("one-step")
    led.close()
    assert run["steps"] == 1 and run["spent_usd"] <= est * 1.5


def test_a_client_cannot_raise_its_budget_but_the_operator_can(scripted_gateway) -> None:
    gw = scripted_gateway(answer=lambda req: "word " * 800)  # costs far more than the step's estimate
    est = gw.engine.recorder.estimate(gw.engine.make_step({**OK, "max_tokens": 16}), gw.cfg.tier_model("small"))
    body = {**OK, "max_tokens": 16}
    assert post(gw, body, {"x-smallfleet-run": "r1", "x-smallfleet-budget": repr(est * 1.2)}).status_code == 200
    r = post(gw, body, {"x-smallfleet-run": "r1", "x-smallfleet-budget": "1000"})  # asking for more changes nothing
    assert r.status_code == 429 and "smallfleet budget" in r.json()["error"]["message"]
    assert "$0.000000 of" not in r.json()["error"]["message"]  # readable amounts
    led = Ledger(gw.ledger)
    assert led.run("r1")["budget_usd"] == pytest.approx(est * 1.2)
    led.close()
    out = sf("budget", "r1", "1.0", cfg=Path(gw.cfg.source))
    assert out.returncode == 0 and "budget $1.00" in out.stdout
    assert post(gw, body, {"x-smallfleet-run": "r1"}).status_code == 200  # the operator's raise is seen


# -- 6. Client errors are 4xx ----------------------------------------------------------------------
BAD_BODIES = [
    {**OK, "stream_options": 5}, {**OK, "stream_options": {"include_usage": "yes"}},
    {**OK, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": "f"}},
    {**OK, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"function": ["f"]}},
    {**OK, "tool_choice": "required"},
    {"messages": [{"role": ["user"], "content": "x"}]}, {"messages": [{"role": {"a": 1}, "content": "x"}]},
    {"messages": [{"role": "assistant", "content": None, "tool_calls": 5}]},
    {"messages": [{"role": "assistant", "content": None, "tool_calls": True}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
    {"messages": [{"role": "user", "content": [5]}]},
    {"messages": [{"role": "user", "content": "x", "name": 7}]},
    {"messages": [{"role": "assistant", "content": None,
                   "tool_calls": [{"id": 5, "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]},
    {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{not json"}}]}]},
    {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"a": 1}}}]}]},
    {"messages": [{"role": "user", "content": "x", "extra": json.loads("[" * 70 + "]" * 70)}]},
    {**OK, "top_p": "high"}, {**OK, "top_p": 3}, {**OK, "seed": "x"}, {**OK, "seed": 1.5}, {**OK, "logprobs": "yes"},
    {**OK, "top_logprobs": 99}, {**OK, "stop": 5}, {**OK, "stop": ["a", "b", "c", "d", "e"]}, {**OK, "stop": [""]},
    {**OK, "presence_penalty": "x"}, {**OK, "frequency_penalty": 9}, {**OK, "cache_prompt": "no"},
    {**OK, "temperature": 99}, {**OK, "metadata": {"a": 5}}, {**OK, "metadata": []},
    {**OK, "model": 5}, {**OK, "user": ["x"]}, {**OK, "parallel_tool_calls": "y"}, {**OK, "max_tokens": "5"},
    {**OK, "tools": [{"type": "function", "function": {"name": "f", "description": 5}}]},
    {**OK, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                                    "properties": {"a": {"type": "string", "maxLength": 1.5}}}}}]},
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_client_errors_are_400_in_openai_shape(scripted_gateway_shared, body) -> None:
    r = post(scripted_gateway_shared, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"] and "Traceback" not in err["message"]


def test_deep_json_is_400_not_a_recursion_error(scripted_gateway_shared) -> None:
    deep = b'{"model": "auto", "messages": [{"role": "user", "content": "x"}], "x": ' + b"[" * 500 + b"]" * 500 + b"}"
    r = post(scripted_gateway_shared, deep)
    assert r.status_code == 400 and "levels deep" in r.json()["error"]["message"]


def test_unknown_paths_are_404_and_wrong_methods_405(scripted_gateway_shared) -> None:
    gw = scripted_gateway_shared
    assert httpx.post(gw.base + "/v1/responsez", json={}).status_code == 404
    assert httpx.get(gw.base + "/etc/passwd").status_code == 404
    r = httpx.get(gw.base + "/v1/chat/completions")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert httpx.head(gw.base + "/health").status_code == 200


def test_a_server_fault_is_500_without_internals(scripted_gateway) -> None:
    def boom(req):
        raise RuntimeError("secret internal detail /srv/x.py")

    gw = scripted_gateway(answer=boom)
    r = post(gw, OK)
    assert r.status_code == 500 and "secret" not in r.text and "internal error (id " in r.json()["error"]["message"]


# -- 7. Time and resource limits -------------------------------------------------------------------
LIMITS = "\n[server]\nheader_timeout_s = 1.0\nbody_timeout_s = 1.0\nmax_concurrent = 2\nmax_body_mb = 1\n"


def test_slow_clients_are_dropped(scripted_gateway) -> None:
    gw = scripted_gateway(extra=LIMITS)
    idle, slow_head, slow_body = (socket.create_connection(("127.0.0.1", gw.port)) for _ in range(3))
    slow_head.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n")
    slow_body.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 100\r\n\r\n{")
    time.sleep(1.6)
    for s in (idle, slow_head, slow_body):
        s.settimeout(2)
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        assert data == b"", data  # closed by the gateway (a timeout here would mean it is still open)
        s.close()
    assert post(gw, OK).status_code == 200


def test_oversized_body_is_413(scripted_gateway) -> None:
    gw = scripted_gateway(extra=LIMITS)
    r = post(gw, {"model": "auto", "messages": [{"role": "user", "content": "x" * (2 << 20)}]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_requests_over_the_concurrency_cap_get_503(scripted_gateway) -> None:
    from tests.conftest import REPLICAS

    if REPLICAS:
        pytest.skip("the cap is per process: two replicas admit twice as many")
    gw = scripted_gateway(extra=LIMITS, delay=1.0)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: post(gw, OK).status_code, range(4)))
    assert sorted(codes) == [200, 200, 503, 503]


def test_a_client_that_goes_away_cancels_the_model_work(scripted_gateway) -> None:
    gw = scripted_gateway(delay=3.0)
    for stream in (False, True):
        s = socket.create_connection(("127.0.0.1", gw.port))
        body = json.dumps({**OK, "stream": stream}).encode()
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{gw.port}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n" + ("x-smallfleet-stream: live\r\n" if stream else "") + "\r\n")
        s.sendall(head.encode() + body)
        time.sleep(0.4)
        s.close()
    deadline = time.time() + 2
    while sum(b.cancelled for b in gw.backends.values()) < 2:
        assert time.time() < deadline, [b.cancelled for b in gw.backends.values()]
        time.sleep(0.05)
    led = Ledger(gw.ledger)
    # nothing half-written: the plain request left no row; the live stream recorded its attempt as ended early
    rows = led.attempts()
    led.close()
    assert len(rows) <= 1 and all(r["final"] == 1 and "ended early" in (r["error"] or "") for r in rows)


def test_a_huge_prompt_is_refused_without_loading_a_model(tiny_config) -> None:
    from smallfleet.engine import Engine
    from smallfleet.errors import ContextLengthError

    eng = Engine(tiny_config, ledger=False)
    req = {"model": "auto", "messages": [{"role": "user", "content": "lorem ipsum dolor " * 60_000}]}  # ~1 MB
    t0 = time.perf_counter()
    with pytest.raises(ContextLengthError):
        asyncio.run(eng.complete(req))
    assert time.perf_counter() - t0 < 2
    assert not any(eng.fleet.loaded(m) for m in tiny_config.models)


def test_log_lines_cannot_be_forged() -> None:
    from smallfleet.server import SafeLogFilter

    rec = logging.LogRecord("smallfleet.gateway", logging.WARNING, __file__, 1, "bad pattern %s", ("a\nFAKE LINE\x1b[31m",), None)
    SafeLogFilter().filter(rec)
    msg = rec.getMessage()
    assert "\n" not in msg and "\x1b" not in msg and "\\n" in msg and "\\x1b" in msg


# -- Low ------------------------------------------------------------------------------------------
def test_parser_positions_are_not_street_addresses() -> None:
    from smallfleet.privacy import Detector

    d = Detector()
    assert not d.detect("Expecting value: line 5 column 22 (char 21)")
    assert [e.type for e in d.detect("I live at 5 Column Street")] == ["STREET_ADDRESS"]


def test_index_add_does_not_follow_symlinks_out_of_the_folder(tmp_path: Path) -> None:
    from .conftest import write_config

    docs, secret = tmp_path / "docs", tmp_path / "secret"
    docs.mkdir()
    secret.mkdir()
    (docs / "a.md").write_text("# A\nThe refund window is 30 days.\n")
    (secret / "vault.md").write_text("# Vault\nThe vault code is 7741-ALPHA.\n")
    (docs / "link.md").symlink_to(secret / "vault.md")
    cfg = write_config(tmp_path)
    idx = tmp_path / "idx.db"
    r = sf("index", "add", str(docs), "--index", str(idx), cfg=cfg)
    assert r.returncode == 0 and "outside the folder" in r.stderr
    listed = sf("index", "ls", "--json", "--index", str(idx), cfg=cfg).stdout
    assert "a.md" in listed and "link.md" not in listed and "vault" not in listed


def test_text_caches_are_bounded_in_bytes() -> None:
    from smallfleet.guards import trust

    cache = trust._parse_cached.cache
    for i in range(300):  # 60 MB of distinct tool results; each entry is charged 10 bytes per character
        trust.parse_tool_output(json.dumps({"i": i, "blob": "x" * 200_000}))
    assert cache.bytes <= cache.max_bytes and len(cache) < 40


@pytest.mark.model
def test_impossible_schema_never_reaches_llama_cpp(gateway) -> None:
    """The finding itself, on the real gateway and models: it used to take 23 GB and a kill."""
    for schema in ({"type": "string", "minLength": 500, "maxLength": 200},
                   {"type": "array", "items": {"type": "string", "maxLength": 100}, "minItems": 50, "maxItems": 10},
                   {"enum": [f"v{i}" for i in range(5000)]}):
        t0 = time.perf_counter()
        r = post(gateway, {"model": "auto", "messages": U, "max_tokens": 8,
                           "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}, timeout=30)
        assert r.status_code == 400 and time.perf_counter() - t0 < 1.0
    t0 = time.perf_counter()
    assert httpx.get(gateway.base + "/health", timeout=1).status_code == 200 and time.perf_counter() - t0 < 1.0


def test_a_broken_loop_answer_on_every_tier_is_reported_as_failed(scripted_gateway) -> None:
    """A model that echoes the tool output on every tier: escalated, then answered with verdict fail, and the
    ledger's final attempt is not a pass (issue 13's checks, on scripted models)."""
    echo = '{"city": "Madrid", "temp_c": 31, "sky": "clear"}'
    gw = scripted_gateway(answer=lambda req: echo)
    msgs = [{"role": "user", "content": "What's the weather in Madrid?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                                 "function": {"name": "get_weather", "arguments": '{"city":"Madrid"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": echo}]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    r = post(gw, {"model": "auto", "messages": msgs, "tools": tools}, {"x-smallfleet-run": "broken-loop"})
    assert r.status_code == 200 and r.headers["x-smallfleet-verdict"] == "fail:loop_answer"
    assert r.headers["x-smallfleet-escalated"] == "true"
    led = Ledger(gw.ledger)
    rows = led.attempts(run_id="broken-loop")
    led.close()
    assert len(rows) >= 2 and rows[-1]["final"] == 1 and rows[-1]["passed"] == 0
    rep = httpx.get(gw.base + "/v1/smallfleet/report?run=broken-loop").json()
    assert rep["unverified_steps"] == 1 and rep["verified_steps"] == 0 and rep["parity_savings_usd"] < 0


def test_feedback_and_savings_at_parity(scripted_gateway) -> None:
    """Unverified steps are counted apart, and a run its agent reports as failed saves nothing."""
    gw = scripted_gateway()
    assert post(gw, OK, {"x-smallfleet-run": "good"}).status_code == 200
    assert post(gw, OK, {"x-smallfleet-run": "bad"}).status_code == 200
    rep = httpx.get(gw.base + "/v1/smallfleet/report").json()
    assert rep["verified_steps"] == 2 and rep["unverified_steps"] == 0
    assert rep["parity_savings_usd"] == pytest.approx(rep["savings_usd"])
    r = post(gw, {"run_id": "bad", "success": False}, path="/v1/smallfleet/feedback")
    assert r.status_code == 200 and r.json()["recorded"]
    rep = httpx.get(gw.base + "/v1/smallfleet/report").json()
    assert rep["failed_steps"] == 1 and rep["verified_steps"] == 1 and rep["parity_savings_usd"] < rep["savings_usd"]
    assert post(gw, {"run_id": "never", "success": True}, path="/v1/smallfleet/feedback").status_code == 404
    for bad in ({"run_id": "good"}, {"run_id": "good", "step_id": "x", "success": True}, {"success": "yes", "run_id": "good"}, []):
        assert post(gw, bad, path="/v1/smallfleet/feedback").status_code == 400
    page = httpx.get(gw.base + "/").text
    assert "unverified" in page and "at parity" in page
