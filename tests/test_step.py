import pytest

from smallfleet.errors import InvalidRequestError
from smallfleet.step import StepKind, classify_step

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


def req(content: str = "hi", **kw):
    return {"messages": [{"role": "user", "content": content}], **kw}


def js(schema):
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


@pytest.mark.parametrize("request_, kind", [
    (req(tools=[TOOL]), StepKind.TOOL_CHOICE),
    (req(tools=[TOOL], tool_choice="none"), StepKind.GENERATION),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": []},
                   {"role": "tool", "tool_call_id": "1", "content": "{}"}], "tools": [TOOL]}, StepKind.RESHAPING),
    ({"messages": [{"role": "tool", "tool_call_id": "1", "content": "{}"}]}, StepKind.RESHAPING),
    (req(response_format=js({"enum": ["a", "b"]})), StepKind.CLASSIFICATION),
    (req(response_format=js({"type": "object", "properties": {"l": {"enum": ["a"]}, "ok": {"type": "boolean"}}})), StepKind.CLASSIFICATION),
    (req(response_format=js({"type": "object", "properties": {"name": {"type": "string"}}})), StepKind.EXTRACTION),
    (req(response_format={"type": "json_object"}), StepKind.EXTRACTION),
    (req('Make this a table:\n```\n{"a": 1, "b": 2, "c": [1,2,3], "d": "long value here"}\n```'), StepKind.RESHAPING),
    (req("Is this spam? Answer with one of: spam, ham, unsure"), StepKind.CLASSIFICATION),
    (req("Tom has 3 apples and buys 5 more. How many does he have?"), StepKind.REASONING),
    (req("Write a haiku about autumn"), StepKind.GENERATION),
])
def test_kind_from_structure(request_, kind) -> None:
    assert classify_step(request_) == kind


def test_override_by_header_and_metadata() -> None:
    assert classify_step(req(), "reasoning") == StepKind.REASONING
    assert classify_step(req(metadata={"smallfleet_step_kind": "extraction"})) == StepKind.EXTRACTION
    with pytest.raises(InvalidRequestError, match="unknown step kind"):
        classify_step(req(), "dreaming")
