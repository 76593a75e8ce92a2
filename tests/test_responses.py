"""POST /v1/responses with the official OpenAI client, on the real gateway with scripted models; the
OpenAI Agents SDK's default (Responses) model runs against the real models in test_frameworks.py."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai import OpenAI

from smallfleet.errors import InvalidRequestError, ResponseNotFoundError
from smallfleet.server.responses import to_chat

TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


def answer(req):
    """Calls get_weather for a fresh user question with tools; otherwise says how many messages it read."""
    last = req["messages"][-1]
    if req.get("tools") and last["role"] == "user":
        return {"content": None, "tool_calls": [{"id": "call_w1", "type": "function",
                                                 "function": {"name": "get_weather", "arguments": '{"city":"Madrid"}'}}]}
    return f"It is 31 degrees ({len(req['messages'])} messages, last {last['role']})."


@pytest.fixture
def gw(scripted_gateway):
    return scripted_gateway(answer=answer)


@pytest.fixture
def client(gw) -> OpenAI:
    return OpenAI(base_url=gw.base + "/v1", api_key="unused", max_retries=0)


def test_text_in_text_out_with_instructions(client, gw) -> None:
    r = client.responses.create(model="auto", input="hello", instructions="Be brief.")
    assert r.status == "completed" and r.output_text.startswith("It is 31") and "2 messages" in r.output_text
    assert r.usage.input_tokens > 0 and r.id.startswith("resp_")
    seen = gw.backends["smollm2"].calls[-1]["messages"]
    assert seen[0] == {"role": "system", "content": "Be brief."} and seen[1]["role"] == "user"


def test_a_tool_loop_stateless_and_with_previous_response_id(client, gw) -> None:
    first = client.responses.create(model="auto", input=[{"role": "user", "content": "Weather in Madrid?"}], tools=TOOLS)
    call = next(o for o in first.output if o.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Madrid"}
    out = {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 31}'}
    chained = client.responses.create(model="auto", previous_response_id=first.id, input=[out], tools=TOOLS)
    stateless = client.responses.create(model="auto", tools=TOOLS, input=[
        {"role": "user", "content": "Weather in Madrid?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments}, out])
    for r in (chained, stateless):
        assert r.output_text.startswith("It is 31") and "last tool" in r.output_text
    sent = gw.backends["smollm2"].calls[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["id"] == call.call_id and sent[2]["tool_call_id"] == call.call_id


def test_parallel_calls_share_one_assistant_turn() -> None:
    req = to_chat({"input": [{"role": "user", "content": "x"},
                             {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
                             {"type": "function_call", "call_id": "b", "name": "g", "arguments": "{}"},
                             {"type": "function_call_output", "call_id": "a", "output": "1"},
                             {"type": "function_call_output", "call_id": "b", "output": "2"},
                             {"type": "reasoning", "summary": []}]}, [])
    assert [m["role"] for m in req["messages"]] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in req["messages"][1]["tool_calls"]] == ["a", "b"]


def test_streaming_events(client) -> None:
    with client.responses.stream(model="auto", input="stream me") as s:
        kinds = [e.type for e in s]
        final = s.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and final.output_text.startswith("It is 31")
    with client.responses.stream(model="auto", input=[{"role": "user", "content": "Weather?"}], tools=TOOLS) as s:
        kinds = [e.type for e in s]
        final = s.get_final_response()
    assert "response.function_call_arguments.done" in kinds and final.output[0].type == "function_call"


def test_json_schema_output(client, scripted_gateway) -> None:
    gw = scripted_gateway(answer=lambda req: '{"city": "Madrid", "temp_c": 31}')
    c = OpenAI(base_url=gw.base + "/v1", api_key="unused", max_retries=0)
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp_c": {"type": "integer"}},
              "required": ["city", "temp_c"], "additionalProperties": False}
    r = c.responses.create(model="auto", input="Madrid is 31 degrees. Extract city and temperature.",
                           text={"format": {"type": "json_schema", "name": "w", "schema": schema, "strict": True}})
    assert json.loads(r.output_text) == {"city": "Madrid", "temp_c": 31}
    assert gw.backends["smollm2"].calls[-1]["response_format"]["json_schema"]["schema"] == schema


@pytest.mark.parametrize("body, param", [
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]}, "input[0].content[0].type"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"input": [{"type": "function_call_output", "call_id": 5, "output": "x"}]}, "input[0].call_id"),
    ({"input": [{"role": "user", "content": "hi"}, {"type": "function_call_output", "call_id": "c9", "output": "x"}]}, "input[1].call_id"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "x", "tool_choice": {"type": "file_search"}}, "tool_choice"),
    ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format"),
    ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ({"input": 5}, "input"),
    ({"input": []}, "input"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "tools": [{"type": "function", "name": "bad name!"}]}, "tools[0].name"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "string", "minLength": 9, "maxLength": 2}}}},
     "text.format.schema"),
])
def test_bad_requests_are_400_naming_the_field(gw, body, param) -> None:
    r = httpx.post(gw.base + "/v1/responses", json={"model": "auto", **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_unknown_previous_response_is_404_and_responses_are_scoped_to_keys(client, gw) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="auto", input="x", previous_response_id="resp_nope")
    store = gw.app.responses
    store.put("resp_a", "k1", [{"role": "user", "content": "secret"}], {"role": "assistant", "content": "ok"})
    assert store.get("resp_a", "k1")[0]["content"] == "secret"
    with pytest.raises(ResponseNotFoundError, match="no response"):
        store.get("resp_a", "k2")  # another key's response is as good as unknown
    with pytest.raises(ResponseNotFoundError):
        store.get("resp_a", None)


def test_invalid_input_to_chat_conversion() -> None:
    with pytest.raises(InvalidRequestError):
        to_chat({"input": [{"role": "wizard", "content": "x"}]}, [])
    with pytest.raises(InvalidRequestError):
        to_chat([], [])
