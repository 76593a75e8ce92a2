"""The embedded backend on real models (SmolLM2-135M and Qwen2.5-Coder-0.5B)."""

import asyncio
import json

import pytest

from smallfleet.errors import ContextLengthError, ModelUnavailableError
from smallfleet.models.llamacpp import LlamaCppBackend

pytestmark = pytest.mark.model


def test_chat_stream_schema_and_concurrency(shared_fleet) -> None:
    b = shared_fleet.get("smollm2")

    async def go():
        plain = await b.chat({"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8})
        assert plain.tokens_in > 0 and 0 < plain.tokens_out <= 8 and plain.content
        assert plain.token_logprobs and len(plain.token_logprobs) == plain.tokens_out
        assert "".join(plain.token_texts) == plain.content
        chunks = [c async for c in b.stream({"messages": [{"role": "user", "content": "Count: 1 2 3"}], "max_tokens": 6})]
        text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
        assert text and chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")
        schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        js = await b.chat({"messages": [{"role": "user", "content": "Give n=4 as JSON"}], "max_tokens": 20,
                           "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}})
        assert isinstance(json.loads(js.content)["n"], int)
        many = await asyncio.gather(*[b.chat({"messages": [{"role": "user", "content": f"Number {i}"}], "max_tokens": 5})
                                      for i in range(4)])
        assert all(r.tokens_out > 0 for r in many)

    asyncio.run(go())


def test_forced_tool_call_becomes_tool_calls(shared_fleet) -> None:
    b = shared_fleet.get("qwen05")
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    res = asyncio.run(b.chat({"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": tools,
                              "tool_choice": "required", "max_tokens": 40}))
    assert res.finish_reason == "tool_calls" and res.content == ""
    call = res.tool_calls[0]["function"]
    assert call["name"] == "get_weather" and "city" in json.loads(call["arguments"])


SHARE = [{"type": "function", "function": {"name": "share_file", "description": "Share a file with someone", "parameters": {
    "$defs": {"Permission": {"enum": ["r", "rw"], "type": "string"}},
    "type": "object", "required": ["file_id", "permission"],
    "properties": {"file_id": {"type": "string"}, "permission": {"$ref": "#/$defs/Permission"}}}}},
    {"type": "function", "function": {"name": "list_files", "parameters": {"type": "object", "properties": {}}}}]


def test_tool_parameters_with_local_refs_build_a_grammar(shared_fleet) -> None:
    """pydantic-made parameters (an enum behind "#/$defs/…") once made llama.cpp reject the request:
    nested under "arguments", the pointer no longer resolved from the schema's root."""
    from smallfleet.models._toolcalls import next_step_schema

    b = shared_fleet.get("qwen05")
    ask = [{"role": "user", "content": "Share file 7 read-only with me."}]
    res = asyncio.run(b.chat({"messages": ask, "tools": SHARE, "tool_choice": {"type": "function", "function": {"name": "share_file"}},
                              "max_tokens": 60}))
    args = json.loads(res.tool_calls[0]["function"]["arguments"])
    assert args["permission"] in ("r", "rw")  # the grammar held the enum behind the reference
    step = asyncio.run(b.chat({"messages": ask, "max_tokens": 60, "response_format": {
        "type": "json_schema", "json_schema": {"name": "next_step", "schema": next_step_schema(SHARE)}}}))
    out = json.loads(step.content)
    assert "answer" in out or out["name"] in ("share_file", "list_files")


def test_shared_prefix_is_reused(shared_fleet) -> None:
    b = shared_fleet.get("smollm2")
    system = {"role": "system", "content": "You are a support triage bot for a lamp shop. " * 12}

    async def go():
        await b.chat({"messages": [system, {"role": "user", "content": "late parcel"}], "max_tokens": 2})
        return await b.chat({"messages": [system, {"role": "user", "content": "broken lamp"}], "max_tokens": 2})

    second = asyncio.run(go())
    assert second.cached_tokens >= 100  # the long system prompt came from the KV cache


def test_context_overflow_is_a_clear_error(shared_fleet) -> None:
    b = shared_fleet.get("smollm2")
    with pytest.raises(ContextLengthError, match="context"):
        asyncio.run(b.chat({"messages": [{"role": "user", "content": "word " * 3000}], "max_tokens": 4}))


def test_missing_gguf_file(tiny_config, tmp_path) -> None:
    from dataclasses import replace

    spec = replace(tiny_config.models["smollm2"], location=str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        LlamaCppBackend(spec).load()
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model" * 100)
    with pytest.raises(ModelUnavailableError, match="could not load"):
        LlamaCppBackend(replace(spec, location=str(junk))).load()
