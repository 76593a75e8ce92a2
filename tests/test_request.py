import pytest

from smallfleet.errors import InvalidRequestError
from smallfleet.request import validate_request

OK = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


def test_valid_request_passes_unchanged() -> None:
    body = {**OK, "unknown_field": 1}
    assert validate_request(body) is body


@pytest.mark.parametrize("body, param", [
    ([], "body"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({**OK, "tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
    ({**OK, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}]}, "tools[0].function.parameters"),
    ({**OK, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]}, "tools[0].function.parameters"),
    ({**OK, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}},
     "tool_choice"),
    ({**OK, "response_format": {"type": "xml"}}, "response_format"),
    ({**OK, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema"),
    ({**OK, "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 5}}}}, "response_format.json_schema.schema"),
    ({**OK, "max_tokens": 0}, "max_tokens"),
    ({**OK, "temperature": 7}, "temperature"),
    ({**OK, "n": 2}, "n"),
    ({**OK, "stream": "yes"}, "stream"),
])
def test_bad_requests_name_the_field(body, param) -> None:
    with pytest.raises(InvalidRequestError) as e:
        validate_request(body)
    assert e.value.param == param
    assert e.value.status == 400
    assert e.value.to_openai()["error"]["param"] == param


CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
    {"id": "b", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]}


@pytest.mark.parametrize("msgs, param", [
    ([{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "a", "content": "1"}], "messages[1].tool_call_id"),
    ([{"role": "user", "content": "hi"}, CALL, {"role": "tool", "tool_call_id": "zz", "content": "1"}], "messages[2].tool_call_id"),
    ([{"role": "user", "content": "hi"}, CALL, {"role": "tool", "tool_call_id": "a", "content": "1"},
      {"role": "user", "content": "and?"}, {"role": "tool", "tool_call_id": "b", "content": "2"}], "messages[4].tool_call_id"),
])
def test_tool_results_must_answer_a_call_that_was_made(msgs, param) -> None:
    with pytest.raises(InvalidRequestError) as e:
        validate_request({"messages": msgs})
    assert e.value.param == param and e.value.status == 400


def test_parallel_calls_and_odd_tool_output_are_accepted() -> None:
    # two calls in one turn, answered in any order; output that is not JSON, or is binary-looking text
    msgs = [{"role": "user", "content": "hi"}, CALL, {"role": "tool", "tool_call_id": "b", "content": "\x00\x01 not json"},
            {"role": "tool", "tool_call_id": "a", "content": "x" * 100_000}]
    assert validate_request({"messages": msgs})["messages"] is msgs
