"""Personal data and routing, end to end: what a remote endpoint receives, and what the ledger keeps.

The "remote" model is a real HTTP server on loopback that records every request body and forwards it
to a real smallfleet gateway serving SmolLM2, so the answers are real model output.
"""

import asyncio
import sqlite3
import threading
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from smallfleet.checks import Verdict, register_check
from smallfleet.config import load_config
from smallfleet.engine import Engine

from .conftest import free_port

pytestmark = pytest.mark.model

PII = {"name": "Jane Doe", "email": "jane.doe@example.com", "phone": "+1 415 555 0199",
       "card": "4111 1111 1111 1111", "iban": "GB82 WEST 1234 5698 7654 32"}
PROMPT = (f"Hi, this is {PII['name']}. Please confirm the refund to {PII['email']} or call {PII['phone']}. "
          f"Card {PII['card']}, IBAN {PII['iban']}. Reply in one short sentence.")

register_check("remote_only", lambda step, res, pol: Verdict("remote_only", res.model == "remote", "test: local answers rejected"))


class CaptureProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream, self.bodies, self.port = upstream, [], free_port()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        data = orjson.loads(body)
        data["model"] = "smollm2"
        async with aiohttp.ClientSession() as s, s.post(self.upstream, data=orjson.dumps(data),
                                                        headers={"content-type": "application/json"}) as r:
            return web.Response(body=await r.read(), status=r.status, content_type="application/json")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture(scope="module")
def proxy(gateway) -> CaptureProxy:
    return CaptureProxy(gateway.base + "/v1/chat/completions")


def engine(tmp_path: Path, proxy: CaptureProxy, tiers: tuple[str, str], checks: list[str], env: dict | None = None,
           scripted=None) -> Engine:
    """The local SmolLM2 (or ``scripted``, a function standing in for it) and a remote model behind the capture proxy."""
    local, remote = tiers
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
[fleet]
tiers = ["small", "frontier"]
[models.smollm2]
path = "package:smollm2-135m"
tier = "{local}"
price_in = 0.01
price_out = 0.02
context = 2048
threads = 2
[models.remote]
backend = "openai"
url = "{proxy.url}"
model = "whatever"
tier = "{remote}"
price_in = 2.5
price_out = 10.0
[routing.generation]
start = "small"
checks = {orjson.dumps(checks).decode()}
[ledger]
path = "{tmp_path / 'ledger.db'}"
""")
    config = load_config(cfg, env=env or {})
    if scripted is None:
        return Engine(config)
    from smallfleet.fleet import Fleet
    from smallfleet.models import FunctionBackend

    return Engine(config, fleet=Fleet(config, backends={"smollm2": FunctionBackend(config.models["smollm2"], scripted)}))


def complete(eng: Engine, request: dict, **kw):  # type: ignore[type-arg]
    """One step through the engine, which is closed after it."""
    async def go():
        try:
            return await eng.complete(request, **kw)
        finally:
            await eng.aclose()

    return asyncio.run(go())


def test_only_pseudonymised_text_reaches_the_remote_model_and_the_ledger_keeps_no_pii(tmp_path, proxy) -> None:
    eng = engine(tmp_path, proxy, ("small", "frontier"), ["nonempty", "remote_only"])
    before = len(proxy.bodies)

    async def go():
        try:
            outs = []
            for _ in range(2):  # two turns of one session: same placeholders both times
                outs.append(await eng.complete({"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 24},
                                               session_id="sess-1", run_id="pii-run"))
            return outs
        finally:
            await eng.aclose()

    outs = asyncio.run(go())
    sent = proxy.bodies[before:]
    assert len(sent) == 2
    for body in sent:
        text = body.decode()
        for raw in PII.values():
            assert raw not in text, f"{raw!r} left the machine"
        assert "<PERSON_1>" in text and "<EMAIL_ADDRESS_1>" in text and "<CREDIT_CARD_1>" in text
    assert sent[0] == sent[1]  # consistent pseudonyms across turns of the session
    for o in outs:
        assert [a.spec.name for a in o.attempts] == ["smollm2", "remote"]
        assert "pseudonymised" in o.reason
    # The ledger (database and WAL) holds no raw personal data.
    db = tmp_path / "ledger.db"
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.db*"))
    for raw in PII.values():
        assert raw.encode() not in blob
    con = sqlite3.connect(db)
    rows = con.execute("SELECT COUNT(*) FROM attempts WHERE run_id='pii-run' AND step_kind != 'memory'").fetchone()[0]
    assert rows == 4
    # the session's fact extraction (the first turn only: the second replays a turn already read) is logged too
    assert con.execute("SELECT COUNT(*) FROM attempts WHERE run_id='pii-run' AND step_kind = 'memory'").fetchone()[0] >= 1


def test_a_step_with_pii_prefers_the_local_tier(tmp_path, proxy) -> None:
    # The remote model is the *cheapest* tier here, so the policy would start there.
    eng = engine(tmp_path, proxy, ("frontier", "small"), ["nonempty"])
    before = len(proxy.bodies)

    async def go():
        try:
            with_pii = await eng.complete({"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 12})
            without = await eng.complete({"messages": [{"role": "user", "content": "Say hello to the team."}], "max_tokens": 12})
            return with_pii, without
        finally:
            await eng.aclose()

    with_pii, without = asyncio.run(go())
    assert with_pii.attempts[0].spec.name == "smollm2" and "personal data present" in with_pii.reason
    assert without.attempts[0].spec.name == "remote"
    assert len(proxy.bodies) - before == 1  # only the PII-free step went out


def test_the_local_pass_hides_what_patterns_and_ner_miss_from_the_remote_server(tmp_path, proxy) -> None:
    """[privacy] local_pass: a local model lists a grandmother's first name and a name in Chinese script, which
    the patterns and the English NER miss; the remote model's HTTP server receives placeholders for both."""
    from smallfleet.privacy.localpass import PROMPT as PASS_PROMPT

    text = "mi abuela Carmen vive con 王小明 cerca del parque. Write her a birthday wish in one short sentence."

    def local(req):  # the scripted local model: the pass's listing, and a plain (rejected) answer otherwise
        if req["messages"][0].get("content") == PASS_PROMPT:
            return orjson.dumps({"items": [{"text": "Carmen", "type": "PERSON"}, {"text": "王小明", "type": "PERSON"},
                                           {"text": "Carmela", "type": "PERSON"}]}).decode()
        return "ok"

    eng = engine(tmp_path, proxy, ("small", "frontier"), ["nonempty", "remote_only"],
                 env={"SMALLFLEET_PRIVACY_LOCAL_PASS": "smollm2"}, scripted=local)
    before = len(proxy.bodies)

    out = complete(eng, {"messages": [{"role": "user", "content": text}], "max_tokens": 24}, run_id="pass-run")
    sent = [b.decode() for b in proxy.bodies[before:]]
    assert sent and out.final.spec.name == "remote"
    for body in sent:
        assert "Carmen" not in body and "王小明" not in body and "\\u738b\\u5c0f\\u660e" not in body
        assert "<PERSON_1>" in body and "<PERSON_2>" in body
    assert eng.privacy.local_pass is not None and eng.privacy.local_pass.stats.calls >= 1


def test_rewrite_mode_sends_a_locally_rewritten_request_and_composes_the_answer_locally(tmp_path, proxy) -> None:
    """[privacy] rewrite: the remote server receives the local model's rewrite, never the private request; the
    client's answer is the local model's composition from the remote answer and the original request."""
    from smallfleet.privacy.rewrite import COMPOSE, REWRITE

    text = "Write a two-line birthday wish for mi abuela Carmen, who turns 80 in Zaragoza on Sunday."
    seen: dict[str, str] = {}

    def local(req):  # the scripted local model: rewrite, compose, and a plain (rejected) answer otherwise
        system = req["messages"][0].get("content")
        if system == REWRITE:
            seen["rewrite_input"] = req["messages"][1]["content"]
            return "Write a two-line birthday wish for my grandmother, who turns 80 this weekend."
        if system == COMPOSE:
            seen["compose_input"] = req["messages"][1]["content"]
            return "Happy 80th birthday, abuela Carmen! All our love from Zaragoza."
        return "ok"

    eng = engine(tmp_path, proxy, ("small", "frontier"), ["nonempty", "remote_only"],
                 env={"SMALLFLEET_PRIVACY_REWRITE": "generation"}, scripted=local)
    before = len(proxy.bodies)

    out = complete(eng, {"messages": [{"role": "user", "content": text}], "max_tokens": 40}, run_id="rewrite-run", step_kind="generation")
    sent = [orjson.loads(b) for b in proxy.bodies[before:]]
    assert len(sent) == 1
    body = orjson.dumps(sent[0]).decode()
    assert "Carmen" not in body and "Zaragoza" not in body and "abuela" not in body
    # the rewrite, pseudonymised as a safety net for what it kept ("turns 80" is an age)
    assert sent[0]["messages"][-1]["content"] == "Write a two-line birthday wish for my grandmother, who turns <AGE_1> this weekend."
    assert "Carmen" in seen["rewrite_input"]  # the local model read the original
    assert "Answer to the anonymised request" in seen["compose_input"] and "Carmen" in seen["compose_input"]
    assert out.final.spec.name == "remote" and out.message["content"] == "Happy 80th birthday, abuela Carmen! All our love from Zaragoza."
    assert "rewrite mode" in out.reason


def test_what_a_rewrite_copies_of_the_original_is_still_hidden(tmp_path, proxy) -> None:
    """The 0.5B sometimes answers instead of rewriting, or keeps a name ("Happy birthday to Carmen!"): no cue
    there says Carmen is a person, but the original request said so, and that is carried over."""
    from smallfleet.privacy.rewrite import COMPOSE, REWRITE

    text = "Write a two-line birthday wish for my grandmother Carmen, who turns 80 in Zaragoza on Sunday."

    def local(req):
        system = req["messages"][0].get("content")
        if system == REWRITE:
            return "Happy birthday to Carmen! Greetings from Zaragoza."
        if system == COMPOSE:
            return "Happy birthday, Carmen!"
        return "ok"

    eng = engine(tmp_path, proxy, ("small", "frontier"), ["nonempty", "remote_only"],
                 env={"SMALLFLEET_PRIVACY_REWRITE": "generation"}, scripted=local)
    before = len(proxy.bodies)

    out = complete(eng, {"messages": [{"role": "user", "content": text}], "max_tokens": 40}, step_kind="generation")
    body = b"".join(proxy.bodies[before:]).decode()
    assert body and "Carmen" not in body and "Zaragoza" not in body and "<PERSON_1>" in body
    assert out.message["content"] == "Happy birthday, Carmen!"


def test_rewrite_mode_leaves_tool_steps_in_placeholder_mode(tmp_path, proxy) -> None:
    from smallfleet.privacy.guard import PrivacyGuard, PrivacySettings
    from smallfleet.privacy.rewrite import Rewriter

    g = PrivacyGuard(PrivacySettings(rewrite=("generation", "tool_choice")))
    g.rewriter = Rewriter(None)  # type: ignore[arg-type]  # never called here
    assert g.rewrites("generation", {"messages": []})
    assert not g.rewrites("generation", {"messages": [], "response_format": {"type": "json_object"}})
    assert not g.rewrites("tool_choice", {"messages": [], "tools": [{"type": "function", "function": {"name": "f"}}]})
    assert not g.rewrites("classification", {"messages": []})


def test_local_pass_and_rewrite_mode_through_the_http_gateway(tmp_path, proxy) -> None:
    """The whole way a user meets them: the official client → `smallfleet serve` (local pass and rewrite mode
    on, the local SmolLM2 doing both) → a remote model behind a real HTTP server that keeps what it receives."""
    from openai import OpenAI

    from .conftest import start_serve, stop_serve

    cfg = tmp_path / "serve.toml"
    cfg.write_text(f"""
[fleet]
tiers = ["small", "frontier"]
[models.smollm2]
path = "package:smollm2-135m"
tier = "small"
context = 2048
threads = 2
[models.remote]
backend = "openai"
url = "{proxy.url}"
model = "whatever"
tier = "frontier"
price_in = 2.5
price_out = 10.0
[routing.generation]
start = "frontier"
checks = ["nonempty"]
[routing.tool_choice]
start = "frontier"
checks = ["tool_call_valid"]
[privacy]
prefer_local = false
local_pass = "small"
rewrite = ["generation"]
[memory]
enabled = false
[ledger]
path = "{tmp_path / 'ledger.db'}"
""")
    proc, base = start_serve(cfg, tmp_path / "serve.log")
    try:
        client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=300)
        before = len(proxy.bodies)
        raw = client.chat.completions.with_raw_response.create(
            model="auto", max_tokens=40, messages=[{"role": "user", "content": PROMPT}])
        assert raw.headers["x-smallfleet-tier"] == "frontier" and "rewrite mode" in raw.headers["x-smallfleet-reason"]
        assert raw.parse().choices[0].message.content
        # a tool step stays in placeholder mode; the local pass read it first
        tools = [{"type": "function", "function": {"name": "send_refund", "parameters": {
            "type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}}}]
        tool = client.chat.completions.with_raw_response.create(
            model="auto", max_tokens=40, tools=tools, tool_choice="required", messages=[{"role": "user", "content": PROMPT}])
        assert tool.headers["x-smallfleet-tier"] == "frontier" and "rewrite mode" not in tool.headers["x-smallfleet-reason"]
        sent = b"\n".join(proxy.bodies[before:]).decode()
        assert len(proxy.bodies) - before == 2
        for value in PII.values():
            assert value not in sent, f"{value!r} left the machine"
    finally:
        stop_serve(proc)
