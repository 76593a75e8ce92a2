"""The HTTP backend against a real OpenAI-compatible server: smallfleet's own gateway."""

import asyncio
import socket
import threading
from dataclasses import replace

import pytest

from smallfleet.config import ModelSpec
from smallfleet.errors import BackendError, BackendTimeoutError, InvalidRequestError
from smallfleet.models.openai_http import OpenAIHTTPBackend

pytestmark = pytest.mark.model


def spec(url: str, **kw) -> ModelSpec:
    return replace(ModelSpec(name="remote", backend="openai", tier="frontier", location=url, remote_model="smollm2",
                             timeout_s=30, retries=1), **kw)


async def _chat_and_close(b: OpenAIHTTPBackend):
    try:
        return await b.chat({"messages": [{"role": "user", "content": "x"}]})
    finally:
        await b.aclose()


def test_chat_and_stream_through_http(gateway) -> None:
    b = OpenAIHTTPBackend(spec(gateway.base + "/v1"))

    async def go():
        res = await b.chat({"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 6})
        chunks = [c async for c in b.stream({"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 6})]
        await b.aclose()
        return res, chunks

    res, chunks = asyncio.run(go())
    assert res.content and res.tokens_out > 0 and res.extra["x-smallfleet-model"] == "smollm2"
    assert any(c.get("usage") for c in chunks)


def test_upstream_4xx_is_the_callers_fault(gateway) -> None:
    b = OpenAIHTTPBackend(spec(gateway.base + "/v1", remote_model="no-such-model"))
    with pytest.raises(InvalidRequestError, match="404"):
        asyncio.run(_chat_and_close(b))


def test_backend_down() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    b = OpenAIHTTPBackend(spec(f"http://127.0.0.1:{port}/v1"))
    with pytest.raises(BackendError, match="cannot reach"):
        asyncio.run(_chat_and_close(b))


def test_backend_timeout_after_retries() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns = []
    stop = threading.Event()

    def accept_and_hang():  # a server that accepts and never answers
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept_and_hang, daemon=True)
    t.start()
    try:
        b = OpenAIHTTPBackend(spec(f"http://127.0.0.1:{srv.getsockname()[1]}/v1", timeout_s=0.5, retries=1))
        with pytest.raises(BackendTimeoutError, match="timed out"):
            asyncio.run(_chat_and_close(b))
        assert len(conns) == 2  # first try + one retry
    finally:
        stop.set()
        t.join()
        srv.close()
