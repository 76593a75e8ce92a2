"""OpenTelemetry spans through the real gateway, exported by the real OTLP/HTTP exporter to a real
HTTP collector stand-in on loopback that decodes what it receives."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from aiohttp import web

from smallfleet.errors import ConfigError
from smallfleet.telemetry import traces_url
from tests.conftest import free_port

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class Collector:
    """Accepts OTLP/HTTP protobuf exports and keeps the spans."""

    def __init__(self) -> None:
        self.spans: list = []  # type: ignore[type-arg]
        self.port = free_port()
        ready = threading.Event()

        async def traces(request: web.Request) -> web.Response:
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

            msg = ExportTraceServiceRequest()
            msg.ParseFromString(await request.read())
            for rs in msg.resource_spans:
                for ss in rs.scope_spans:
                    self.spans.extend(ss.spans)
            return web.Response(body=b"", content_type="application/x-protobuf")

        def run() -> None:
            loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/v1/traces", traces)
            runner = web.AppRunner(app)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            ready.set()
            loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)


def test_spans_per_step_and_attempt_under_the_clients_trace(scripted_gateway) -> None:  # type: ignore[no-untyped-def]
    col = Collector()
    # the small tier's answers fail a check, so the step escalates: two attempts under one step
    extra = '[routing.generation]\nstart = "small"\nchecks = ["nonempty"]\n'
    calls: list[int] = []

    def answer(req: dict) -> str:  # type: ignore[type-arg]
        calls.append(1)
        return "" if len(calls) == 1 else "fine"

    gw = scripted_gateway(answer=answer, extra=extra,
                          env={"SMALLFLEET_OTLP_ENDPOINT": f"http://127.0.0.1:{col.port}"})
    r = httpx.post(gw.base + "/v1/chat/completions", timeout=30, headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"},
                   json={"model": "auto", "messages": [{"role": "user", "content": "Write a haiku about Jane Doe."}]})
    assert r.status_code == 200, r.text
    for replica in getattr(gw, "replicas", [gw]):  # SMALLFLEET_TEST_REPLICAS=2: the step ran on either
        replica.engine.telemetry.flush()
    step = next(s for s in col.spans if s.name == "smallfleet.step")
    attempts = [s for s in col.spans if s.name == "smallfleet.attempt"]
    assert step.trace_id.hex() == TRACE_ID and step.parent_span_id.hex() == PARENT  # inside the client's trace
    from smallfleet.ledger import Ledger

    led = Ledger(gw.ledger)
    assert len(attempts) == len(led.attempts(step_id=r.headers["x-smallfleet-step-id"])) == 2
    led.close()
    assert all(a.parent_span_id == step.span_id and a.trace_id == step.trace_id for a in attempts)
    assert step.start_time_unix_nano <= min(a.start_time_unix_nano for a in attempts) <= step.end_time_unix_nano
    attrs = {kv.key: kv.value for kv in step.attributes}
    assert attrs["smallfleet.tier"].string_value == r.headers["x-smallfleet-tier"]
    every = str(col.spans)
    assert "Jane" not in every and "haiku" not in every  # no request text in any span


def test_telemetry_config() -> None:
    from smallfleet.config import load_config

    assert traces_url("http://c:4318") == "http://c:4318/v1/traces" and traces_url("http://c:4318/custom") == "http://c:4318/custom"
    assert load_config(None, env={}).otlp_endpoint is None  # off unless asked
    with pytest.raises(ConfigError, match="http"):
        load_config(None, env={"SMALLFLEET_OTLP_ENDPOINT": "collector:4318"})


def test_live_streams_are_traced_and_counted(scripted_gateway) -> None:  # type: ignore[no-untyped-def]
    col = Collector()
    gw = scripted_gateway(answer=lambda req: "a streamed answer", env={"SMALLFLEET_OTLP_ENDPOINT": f"http://127.0.0.1:{col.port}"})
    with httpx.stream("POST", gw.base + "/v1/chat/completions", timeout=30, headers={"x-smallfleet-stream": "live"},
                      json={"model": "auto", "stream": True, "messages": [{"role": "user", "content": "Say something."}]}) as r:
        assert r.status_code == 200 and "[DONE]" in r.read().decode()
    for replica in getattr(gw, "replicas", [gw]):
        replica.engine.telemetry.flush()
    assert any(s.name == "smallfleet.step" for s in col.spans) and any(s.name == "smallfleet.attempt" for s in col.spans)
    metrics = "".join(httpx.get(gw.base + "/metrics", timeout=10).text for _ in range(2))  # either replica's
    assert "smallfleet_steps_total{" in metrics
