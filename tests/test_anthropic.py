from smallfleet.models.anthropic import from_messages_response, to_messages_request


def test_openai_request_to_messages() -> None:
    req = {"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                               "function": {"name": "w", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "rain"},
    ], "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}], "tool_choice": "required",
        "temperature": 1.5}
    body = to_messages_request(req, "claude-x", 512)
    assert body["system"] == "be brief" and body["max_tokens"] == 512 and body["temperature"] == 1.0
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"][0] == {"type": "tool_use", "id": "c1", "name": "w", "input": {"city": "Oslo"}}
    assert body["messages"][2]["content"][0]["type"] == "tool_result"
    assert body["tool_choice"] == {"type": "any"} and body["tools"][0]["input_schema"] == {"type": "object"}


def test_messages_response_to_openai() -> None:
    data = {"content": [{"type": "text", "text": "ok"}, {"type": "tool_use", "id": "t", "name": "w", "input": {"a": 1}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 7, "output_tokens": 3}}
    msg, finish, tin, tout = from_messages_response(data, forced_json=False)
    assert msg["content"] == "ok" and msg["tool_calls"][0]["function"] == {"name": "w", "arguments": '{"a":1}'}
    assert (finish, tin, tout) == ("tool_calls", 7, 3)
    msg, finish, _, _ = from_messages_response({"content": [{"type": "tool_use", "name": "respond", "input": {"x": 2}}],
                                                "stop_reason": "tool_use"}, forced_json=True)
    assert msg["content"] == '{"x":2}' and finish == "stop" and "tool_calls" not in msg
