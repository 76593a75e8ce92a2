"""Upstream faults against a real misbehaving HTTP server: retries with jitter and retry-after, a
circuit breaker, an unreadable answer, a stream cut mid-way, and the cascade moving to the next tier
with a consistent ledger."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from smallfleet import Engine, Fleet, FunctionBackend, load_config
from smallfleet.errors import BackendError
from smallfleet.ledger import Ledger
from smallfleet.models.openai_http import Breaker, OpenAIHTTPBackend
from smallfleet.spec import ModelSpec

OK = {"id": "x", "object": "chat.completion", "model": "m", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


class Upstream:
    """An OpenAI-compatible server that misbehaves on demand: each request takes the next mode of
    ``plan`` (the last one repeats). Modes: ok, 503, garbage, cut (a stream that stops mid-way), stream."""

    def __init__(self) -> None:
        self.plan: list[str] = ["ok"]
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        mode = self.plan[min(self.requests, len(self.plan) - 1)]
        self.requests += 1
        if mode == "503":
            return web.json_response({"error": {"message": "overloaded"}}, status=503, headers={"retry-after": "0"})
        if mode == "garbage":
            return web.Response(text="<html>502 Bad Gateway from some proxy</html>", content_type="text/html")
        if mode in ("cut", "stream"):
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            for word in ("one ", "two "):
                chunk = {"choices": [{"index": 0, "delta": {"content": word}}]}
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if mode == "cut":
                assert request.transport is not None
                request.transport.abort()  # the connection drops before [DONE]
                return resp
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        return web.json_response(OK)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.close()


def backend(url: str, **kw: Any) -> OpenAIHTTPBackend:
    return OpenAIHTTPBackend(replace(ModelSpec(name="remote", backend="openai", tier="frontier", location=url, timeout_s=5, retries=2), **kw))


def ask(b: OpenAIHTTPBackend, n: int = 1) -> list[Any]:
    async def go() -> list[Any]:
        out: list[Any] = []
        for _ in range(n):
            try:
                out.append(await b.chat({"messages": [{"role": "user", "content": "hi"}]}))
            except BackendError as e:
                out.append(e)
        await b.aclose()
        return out
    return asyncio.run(go())


def test_5xx_is_retried_with_the_upstreams_retry_after(upstream: Upstream) -> None:
    upstream.plan = ["503", "503", "ok"]
    (res,) = ask(backend(upstream.url))
    assert res.content == "fine" and upstream.requests == 3


def test_an_unreadable_answer_is_a_clear_error_not_retried(upstream: Upstream) -> None:
    upstream.plan = ["garbage"]
    (err,) = ask(backend(upstream.url))
    assert isinstance(err, BackendError) and "unreadable response" in err.message and upstream.requests == 1


def test_the_breaker_opens_fails_fast_then_probes_and_closes(upstream: Upstream) -> None:
    upstream.plan = ["503"]
    b = backend(upstream.url, retries=0)
    b.breaker = Breaker("remote", failures=3, cooldown_s=0.3)
    results = ask(b, 5)
    assert all(isinstance(r, BackendError) for r in results)
    assert upstream.requests == 3  # the last two never reached the server
    assert "circuit open after 3 failed calls" in results[3].message
    import time

    time.sleep(0.35)
    upstream.plan, upstream.requests = ["ok"], 0
    (probe, after) = ask(b, 2)
    assert probe.content == "fine" and after.content == "fine" and not b.breaker.is_open and upstream.requests == 2


def test_a_stream_cut_mid_way_is_an_error_not_a_short_answer(upstream: Upstream) -> None:
    upstream.plan = ["cut"]
    b = backend(upstream.url)

    async def go() -> list[Any]:
        got: list[Any] = []
        try:
            async for c in b.stream({"messages": [{"role": "user", "content": "hi"}]}):
                got.append(c)
        except BackendError as e:
            got.append(e)
        await b.aclose()
        return got

    got = asyncio.run(go())
    assert isinstance(got[-1], BackendError) and ("ended before its last event" in got[-1].message or "cannot reach" in got[-1].message)
    upstream.plan, upstream.requests = ["stream"], 0
    got = asyncio.run(go())
    assert [c["choices"][0]["delta"]["content"] for c in got] == ["one ", "two "]


def test_the_cascade_moves_to_the_next_tier_and_the_ledger_holds_both_attempts(upstream: Upstream, tmp_path: Path) -> None:
    upstream.plan = ["503"]
    cfg = load_config(None, env={"SMALLFLEET_LEDGER": str(tmp_path / "l.db"), "SMALLFLEET_MEMORY": "off"})
    small = cfg.tier_model("small")
    remote = replace(small, backend="openai", location=upstream.url, retries=1, timeout_s=5)
    backends: dict[str, Any] = {n: FunctionBackend(s, lambda req: "the large tier answered") for n, s in cfg.models.items()}
    backends[small.name] = OpenAIHTTPBackend(remote)
    eng = Engine(cfg, fleet=Fleet(cfg, backends=backends))

    async def go() -> Any:
        try:
            return await eng.complete({"messages": [{"role": "user", "content": "Write one sentence about lamps."}]},
                                      step_kind="generation", run_id="faulty")
        finally:
            await eng.aclose()

    out = asyncio.run(go())
    assert out.message["content"] == "the large tier answered" and out.final.tier != "small"
    assert out.attempts[0].tier == "small" and "overloaded" in (out.attempts[0].error or "") and upstream.requests == 2
    rows = Ledger(tmp_path / "l.db").attempts(run_id="faulty")
    assert [r["attempt"] for r in rows] == [0, 1] and rows[0]["error"] and rows[1]["final"] == 1 and rows[0]["final"] == 0
