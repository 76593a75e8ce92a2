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


# -- llama.cpp's own HTTP server (what an operator runs for N replicas) ------------------------------
LLAMA_SERVER = """
import sys, time, xllamacpp
from smallfleet.assets import ensure_packaged
p = xllamacpp.CommonParams()
p.model.path = str(ensure_packaged("qwen2.5-coder-0.5b"))
p.n_ctx, p.n_parallel, p.verbosity = 4096, 2, -1
p.cpuparams.n_threads = p.cpuparams_batch.n_threads = 1
p.hostnames, p.port = ["127.0.0.1"], int(sys.argv[1])
server = xllamacpp.Server(p)  # serves llama.cpp's HTTP API until this process ends
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


@pytest.fixture(scope="module")
def llama_server():
    """llama.cpp's HTTP server (llama-server's code, through xllamacpp) in its own process."""
    import subprocess
    import sys
    import time

    import httpx

    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", LLAMA_SERVER, str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.time() < deadline, "llama.cpp server did not start"
        time.sleep(0.3)
    yield base
    proc.kill()
    proc.wait(10)


def test_the_openai_backend_on_llama_cpps_own_server(llama_server: str, tmp_path) -> None:
    """A fleet whose small tier is llama.cpp's HTTP server: a plain step, a tool call and its tool
    result, and a stream, through the whole engine."""
    from smallfleet.config import load_config
    from smallfleet.engine import Engine

    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
[fleet]
tiers = ["small"]
replace_builtin = true
[models.served]
backend = "openai"
url = "{llama_server}/v1"
model = "qwen"
tier = "small"
price_in = 0.01
price_out = 0.02
context = 4096
on_premises = true
[ledger]
path = "{tmp_path / 'ledger.db'}"
""")
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                              "required": ["city"]}}}]

    async def go():
        eng = Engine(load_config(cfg, env={}))
        try:
            plain = await eng.complete({"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": "Say hi"}]})
            call = await eng.complete({"model": "auto", "max_tokens": 64, "temperature": 0, "tools": tools, "tool_choice": "required",
                                       "messages": [{"role": "user", "content": "Weather in Paris?"}]})
            tc = (call.final.result.message.get("tool_calls") or [None])[0]
            after = await eng.complete({"model": "auto", "max_tokens": 24, "tools": tools, "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [tc]},
                {"role": "tool", "tool_call_id": tc["id"], "content": '{"temp_c": 21, "sky": "clear"}'}]})
            return plain, call, tc, after
        finally:
            await eng.aclose()

    plain, call, tc, after = asyncio.run(go())
    assert plain.final.result.content and plain.final.spec.name == "served" and plain.final.result.tokens_out > 0
    # this llama.cpp writes the call as JSON text (tool_choice not enforced): the backend lifts it out
    assert tc is not None and tc["function"]["name"] == "get_weather" and call.final.passed
    assert after.final.result is not None and after.final.spec.name == "served"
