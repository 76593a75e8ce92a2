"""The gateway as users meet it: a real `smallfleet serve` process and the official openai client."""

import json
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from smallfleet.ledger import Ledger

pytestmark = pytest.mark.model

HEADERS = ("x-smallfleet-model", "x-smallfleet-tier", "x-smallfleet-step-kind", "x-smallfleet-escalated", "x-smallfleet-cost")


@pytest.fixture(scope="module")
def client(gateway) -> OpenAI:
    return OpenAI(base_url=gateway.base + "/v1", api_key="unused", max_retries=0)


def test_plain_completion_with_headers(client) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Write a haiku about lamps"}], max_tokens=12)
    for h in HEADERS:
        assert raw.headers.get(h), h
    assert raw.headers["x-smallfleet-step-kind"] == "generation"
    assert float(raw.headers["x-smallfleet-cost"]) > 0
    resp = raw.parse()
    assert resp.choices[0].message.content and resp.usage.completion_tokens > 0
    assert resp.model == raw.headers["x-smallfleet-model"]


def test_streaming(client) -> None:
    with client.chat.completions.with_streaming_response.create(
            model="auto", messages=[{"role": "user", "content": "Say hi to Ann"}], max_tokens=10, stream=True,
            stream_options={"include_usage": True}) as raw:
        assert raw.headers["x-smallfleet-tier"] in ("small", "large")
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_tools(client) -> None:
    tools = [{"type": "function", "function": {"name": "track_shipment", "description": "Where is a parcel",
                                               "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                                                              "required": ["order_id"]}}}]
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Where is order ORD-12345?"}], tools=tools,
        tool_choice="required", max_tokens=40)
    assert raw.headers["x-smallfleet-step-kind"] == "tool_choice"
    msg = raw.parse().choices[0].message
    assert msg.tool_calls and msg.tool_calls[0].function.name == "track_shipment"
    assert "order_id" in json.loads(msg.tool_calls[0].function.arguments)
    # the same through a stream
    stream = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Track ORD-55555"}],
                                            tools=tools, tool_choice="required", max_tokens=40, stream=True)
    calls = [tc for c in stream if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "track_shipment"


def test_json_schema(client) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 30}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Bob is 30 years old. Extract name and age."}], max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}})
    assert raw.headers["x-smallfleet-step-kind"] == "extraction"
    data = json.loads(raw.parse().choices[0].message.content)
    assert set(data) == {"name", "age"} and isinstance(data["age"], int)


def test_models_and_health(client, gateway) -> None:
    ids = [m.id for m in client.models.list().data]
    assert {"auto", "smollm2", "qwen05", "frontier-stand-in"} <= set(ids)
    h = httpx.get(gateway.base + "/health").json()
    assert h["status"] == "ok" and h["models"]["smollm2"] is True  # --preload loaded it
    assert "steps" in httpx.get(gateway.base + "/v1/smallfleet/report").json()
    assert "<svg" in httpx.get(gateway.base + "/").text


@pytest.mark.parametrize("body, status, code", [
    (b"{not json", 400, "invalid_request"),
    (json.dumps({"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]}).encode(), 404, "model_not_found"),
    (json.dumps({"model": "auto", "messages": [{"role": "user", "content": "x"}],
                 "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "banana"}}}]}).encode(), 400, "invalid_request"),
    (json.dumps({"model": "auto", "messages": []}).encode(), 400, "invalid_request"),
    (json.dumps({"model": "smollm2", "messages": [{"role": "user", "content": "word " * 3000}]}).encode(), 400, "context_length_exceeded"),
])
def test_errors_in_openai_format(gateway, body, status, code) -> None:
    r = httpx.post(gateway.base + "/v1/chat/completions", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["code"] == code and err["message"]


def test_budget_gets_429_and_the_client_sees_it(client, gateway) -> None:
    import openai

    h = {"x-smallfleet-run": "tiny-budget", "x-smallfleet-budget": "0.0000001"}
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=4, extra_headers=h)
    assert "budget" in str(e.value) and e.value.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in e.value.response.headers  # the SDK must not retry a budget that can never pass


def test_ledger_has_the_gateway_steps(client, gateway) -> None:
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}], max_tokens=4,
                                   extra_headers={"x-smallfleet-run": "ledger-check"})
    led = Ledger(gateway.ledger)
    rows = led.attempts(run_id="ledger-check")
    assert rows and rows[-1]["final"] == 1 and rows[-1]["tokens_out"] > 0


def test_live_streaming_is_opt_in_and_recorded(client, gateway) -> None:
    h = {"x-smallfleet-stream": "live", "x-smallfleet-run": "live-run"}
    with client.chat.completions.with_streaming_response.create(
            model="auto", messages=[{"role": "user", "content": "Write a haiku about lamps"}], max_tokens=16, stream=True,
            stream_options={"include_usage": True}, extra_headers=h) as raw:
        assert raw.headers["x-smallfleet-stream"] == "live" and "x-smallfleet-cost" not in raw.headers
        chunks = list(raw.parse())
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 3  # token by token, not one replayed block
    last = chunks[-1]
    assert last.usage.completion_tokens > 0 and last.model_extra["smallfleet"]["step_kind"] == "generation"
    rows = Ledger(gateway.ledger).attempts(run_id="live-run")
    assert len(rows) == 1 and rows[0]["tokens_out"] > 0 and rows[0]["cost_usd"] > 0
    # JSON answers must be checked before they leave: the live header falls back to verified streaming
    with client.chat.completions.with_streaming_response.create(
            model="auto", messages=[{"role": "user", "content": "Bob is 3. JSON please."}], max_tokens=20, stream=True,
            response_format={"type": "json_object"}, extra_headers=h) as raw:
        assert "x-smallfleet-stream" not in raw.headers and raw.headers["x-smallfleet-cost"]
        list(raw.parse())


def test_live_streaming_pins_session_facts_and_grounded_steps_stream_verified(client, gateway, tmp_path) -> None:
    h = {"x-smallfleet-stream": "live", "x-smallfleet-session": "live-memory-1"}
    first = [{"role": "user", "content": "My name is Priya Raman and my order number is 88412."}]
    with client.chat.completions.with_streaming_response.create(model="auto", messages=first, max_tokens=8, stream=True,
                                                                 extra_headers=h) as raw:
        assert raw.headers["x-smallfleet-stream"] == "live"
        list(raw.parse())
    later = first + [{"role": "assistant", "content": "Noted."}, {"role": "user", "content": "What is my order number?"}]
    with client.chat.completions.with_streaming_response.create(model="auto", messages=later, max_tokens=8, stream=True,
                                                                 extra_headers=h) as raw:
        assert raw.headers["x-smallfleet-stream"] == "live"
        assert "session facts pinned" in raw.headers["x-smallfleet-reason"]
        list(raw.parse())
    # a grounded answer's citation check may escalate: it is streamed only once verified
    doc = tmp_path / "kb.md"
    doc.write_text("# Returns\nItems can be returned within 30 days with the receipt.\n")
    from smallfleet.retrieval import Store

    index = tmp_path / "kb.db"
    store = Store(index)
    store.add(doc)
    store.close()
    with client.chat.completions.with_streaming_response.create(
            model="auto", messages=[{"role": "user", "content": "How many days do I have to return an item?"}], max_tokens=16,
            stream=True, extra_headers={"x-smallfleet-stream": "live", "x-smallfleet-kb": gateway.knowledge("returns", index)}) as raw:
        assert "x-smallfleet-stream" not in raw.headers and raw.headers["x-smallfleet-citations"]
        list(raw.parse())


WEATHER_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                                 "required": ["city"]}}}]


def test_a_tool_loop_finishes_with_an_answer(client) -> None:
    """The loop of issue 13: call, role "tool" result, then an answer in words (not the call again, not the JSON)."""
    msgs = [{"role": "user", "content": "What's the weather in Madrid?"}]
    first = client.chat.completions.create(model="auto", messages=msgs, tools=WEATHER_TOOLS, tool_choice="required", max_tokens=60)
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and "Madrid" in call.function.arguments
    msgs += [first.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": '{"city": "Madrid", "temp_c": 31, "sky": "clear"}'}]
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=msgs, tools=WEATHER_TOOLS, max_tokens=80)
    answer = raw.parse().choices[0].message
    assert raw.headers["x-smallfleet-step-kind"] == "reshaping" and raw.headers["x-smallfleet-verdict"] == "pass", raw.headers
    assert not answer.tool_calls and "arguments" not in answer.content and "{" not in answer.content
    assert "31" in answer.content or "clear" in answer.content.lower()  # words that carry the result


def test_metrics_count_requests_steps_and_tokens_without_request_text(client, gateway) -> None:
    secret = "Zanzibar-7731"
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": f"Say hi to {secret}"}], max_tokens=4)
    httpx.post(gateway.base + "/no/such/path/" + secret, timeout=10)
    r = httpx.get(gateway.base + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert secret not in text  # neither the prompt nor the unknown path
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(lines['smallfleet_requests_total{endpoint="/v1/chat/completions",status="200"}']) >= 1
    assert float(lines['smallfleet_requests_total{endpoint="other",status="404"}']) >= 1
    steps = {k: float(v) for k, v in lines.items() if k.startswith("smallfleet_steps_total{")}
    assert steps and sum(steps.values()) >= 1 and all('kind="' in k and 'tier="' in k for k in steps)
    assert any(k.startswith('smallfleet_tokens_total{model="smollm2",direction="out"}') for k in lines)
    assert float(lines['smallfleet_request_duration_seconds_count{endpoint="/v1/chat/completions"}']) >= 1
    assert lines['smallfleet_request_duration_seconds_bucket{endpoint="/v1/chat/completions",le="+Inf"}'] == \
        lines['smallfleet_request_duration_seconds_count{endpoint="/v1/chat/completions"}']
    # the access log: one Common Log Format line per request, routes only, never the request's text
    log = (Path(gateway.ledger).parent / "serve.log").read_text()
    access = [ln for ln in log.splitlines() if ln.startswith("127.0.0.1 - - [")]
    assert any('"POST /v1/chat/completions HTTP/1.1" 200 ' in ln for ln in access)
    assert any('"POST other HTTP/1.1" 404 ' in ln for ln in access) and secret not in log


def test_the_gateway_serves_its_openapi_document(gateway) -> None:
    r = httpx.get(gateway.base + "/openapi.json", timeout=10)
    assert r.status_code == 200 and r.json()["openapi"] == "3.1.0" and "/v1/chat/completions" in r.json()["paths"]
