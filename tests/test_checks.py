"""Checks on hand-built results: the inputs are what a backend returns, the verdicts are the contract."""

import math

from smallfleet.checks import json_value_spans, run_checks
from smallfleet.config import KindPolicy
from smallfleet.models._toolcalls import make_call, parse_tool_calls
from smallfleet.models.base import ChatResult
from smallfleet.step import Step, StepKind

TOOLS = [{"type": "function", "function": {"name": "refund", "parameters": {
    "type": "object", "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
    "required": ["order_id", "amount"]}}}]
POLICY = KindPolicy("small", (), True, 0.6)


def result(content=None, tool_calls=None, finish="stop", tokens=None):
    msg = {"role": "assistant", "content": content}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    texts = [t for t, _ in tokens] if tokens else None
    lps = [math.log(p) for _, p in tokens] if tokens else None
    return ChatResult("m", msg, finish, 10, 5, 1.0, token_texts=texts, token_logprobs=lps, raw_text=content or "")


def step(**req):
    r = {"messages": [{"role": "user", "content": "x"}], **req}
    return Step(r, StepKind.EXTRACTION)


def verdict(name, st, res):
    v = run_checks([name], st, res, POLICY)
    return v[0] if v else None


SCHEMA = {"type": "json_schema", "json_schema": {"name": "x", "schema": {
    "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}


def test_schema_valid() -> None:
    st = step(response_format=SCHEMA)
    assert verdict("schema_valid", st, result('{"n": 3}')).passed
    assert verdict("schema_valid", st, result('```json\n{"n": 3}\n```')).passed  # fences tolerated
    v = verdict("schema_valid", st, result('{"n": "three"}'))
    assert not v.passed and "n:" in v.reason
    v = verdict("schema_valid", st, result('{"n": 3', finish="length"))
    assert not v.passed and "cut off" in v.reason
    assert verdict("schema_valid", step(), result("plain")) is None  # not a JSON step


def test_tool_call_valid() -> None:
    st = step(tools=TOOLS, tool_choice="required")
    assert verdict("tool_call_valid", st, result(tool_calls=[make_call("refund", {"order_id": "A1", "amount": 5})])).passed
    v = verdict("tool_call_valid", st, result(tool_calls=[make_call("delete_all", {})]))
    assert not v.passed and "not offered" in v.reason
    v = verdict("tool_call_valid", st, result(tool_calls=[make_call("refund", {"order_id": "A1"})]))
    assert not v.passed and "'amount' is a required property" in v.reason
    v = verdict("tool_call_valid", st, result(tool_calls=[make_call("refund", {"order_id": "A1", "amount": "lots"})]))
    assert not v.passed and "amount" in v.reason
    v = verdict("tool_call_valid", st, result("I will not call anything"))
    assert not v.passed and "demands a call" in v.reason
    auto = step(tools=TOOLS)
    assert verdict("tool_call_valid", auto, result("Your refund is on its way.")) is None
    assert "not offered" in verdict("tool_call_valid", auto, result('{"name": "wire_money", "arguments": {}}')).reason
    none = step(tools=TOOLS, tool_choice="none")
    v = verdict("tool_call_valid", none, result('{"name": "refund", "arguments": {"order_id": "A", "amount": 1}}'))
    assert not v.passed and "tool_choice is none" in v.reason
    v = verdict("tool_call_valid", step(), result('{"name": "refund", "arguments": {}}'))
    assert not v.passed and "no tools were offered" in v.reason
    assert verdict("tool_call_valid", step(), result("Your refund is on its way.")) is None


def test_nonempty_and_refusal() -> None:
    assert not verdict("nonempty", step(), result("   ")).passed
    assert verdict("nonempty", step(), result("ok")).passed
    assert not verdict("not_refusal", step(), result("I'm sorry, but I can't help with that.")).passed
    assert verdict("not_refusal", step(), result("Sorry to hear the lamp broke; a refund is on its way.")).passed


def test_confidence_free_text_uses_mean_probability() -> None:
    st = Step({"messages": [{"role": "user", "content": "x"}]}, StepKind.REASONING)
    assert verdict("confidence", st, result("a b", tokens=[("a", 0.9), (" b", 0.8)])).passed
    v = verdict("confidence", st, result("a b", tokens=[("a", 0.5), (" b", 0.4)]))
    assert not v.passed and abs(v.score - 0.45) < 1e-6


def test_confidence_json_looks_only_at_value_tokens() -> None:
    st = step(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"label": {"enum": ["a", "b"]}, "amount": {"type": "number"}}}}})
    # grammar-forced punctuation and the enum label have low (unconstrained) probability: ignored
    toks = [("{", 0.01), ('"label', 0.05), ('":', 0.9), (' "', 0.9), ("a", 0.02), ('",', 0.9), (' "amount', 0.9),
            ('":', 0.9), (" ", 0.3), ("1", 0.95), ("2", 0.97), ("}", 0.2)]
    text = "".join(t for t, _ in toks)
    assert verdict("confidence", st, result(text, tokens=toks)).passed
    toks[10] = ("2", 0.41)  # an unsure digit of the amount
    v = verdict("confidence", st, result(text, tokens=toks))
    assert not v.passed and abs(v.score - 0.41) < 1e-6
    assert verdict("confidence", st, result(text)) is None  # no logprobs: abstain


def test_json_value_spans() -> None:
    t = '{"name": "Ann", "id": null, "amt": 12.5, "tags": ["x", 3]}'
    assert [(t[a:b], k) for a, b, k in json_value_spans(t)] == [("Ann", "name"), ("12.5", "amt"), ("x", "tags"), ("3", "tags")]


def test_parse_tool_calls_from_text() -> None:
    names = {"refund"}
    for text in ('{"name": "refund", "arguments": {"order_id": "A", "amount": 1}}',
                 '```json\n{"name": "refund", "arguments": {"order_id": "A", "amount": 1}}\n```',
                 'Sure: {"name": "refund", "arguments": {"order_id": "A", "amount": 1}}',
                 '<tool_call>{"name": "refund", "arguments": "{\\"order_id\\": \\"A\\", \\"amount\\": 1}"}</tool_call>'):
        calls = parse_tool_calls(text, names)
        assert len(calls) == 1 and calls[0]["function"]["name"] == "refund", text
        assert '"order_id":"A"' in calls[0]["function"]["arguments"]
    assert parse_tool_calls('{"name": "other", "arguments": {}}', names) == []
    assert parse_tool_calls("no json here", names) == []


# -- tool loops: what the local models wrote after a tool result (issue 13) -------------------------
WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
RESULT = '{"city": "Madrid", "temp_c": 31, "sky": "clear"}'
LOOP = [{"role": "user", "content": "What's the weather in Madrid?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                             "function": {"name": "get_weather", "arguments": '{"city":"Madrid"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": RESULT}]


def loop_step(**req):
    return Step({"messages": LOOP, "tools": WEATHER, **req}, StepKind.RESHAPING)


def test_loop_answer_fails_broken_turns() -> None:
    broken = {
        '{"name": "get_weather", "arguments": {"city": "Madrid"}}\n{"temp_c": 31, "sky": "clear"}': "tool call as text",  # the 0.5B
        '{{"name": "get_weather", "arguments": {"city": "Madrid"}}}': "tool call as text",  # the 1.5B
        '```json\n{\n  "name": "get_weather",\n  "arguments": {"city": "Madrid"}\n}\n```': "tool call as text",
        'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Madrid"}}\n</tool_call>': "tool call as text",
        '<tool_response>\n' + RESULT + '\n</tool_response>': "echoes",
        'Here it is: ' + RESULT: "echoes",
        '{"temp_c": 31, "sky": "clear", "city": "Madrid"}': "echoes",
        ("It is sunny.\n" * 5): "repeats the line",
        ("Madrid weather call " * 40): "over and over",
    }
    for text, why in broken.items():
        v = verdict("loop_answer", loop_step(), result(text))
        assert v is not None and not v.passed, text
        assert why.split()[0] in v.reason or (why == "tool call as text" and "as text" in v.reason), (text, v.reason)
    unused = verdict("loop_answer", loop_step(), result("The user wants to know the weather in Madrid."))  # the 135M
    assert not unused.passed and "does not use the tool result" in unused.reason
    cut = verdict("loop_answer", loop_step(), result("The weather in Madrid is", finish="length"))
    assert not cut.passed and "cut off" in cut.reason
    again = verdict("loop_answer", loop_step(), result(tool_calls=[make_call("get_weather", {"city": "Madrid"})]))
    assert not again.passed and "already has a result" in again.reason


def test_loop_answer_passes_answers_and_new_calls() -> None:
    ok = verdict("loop_answer", loop_step(), result("It is 31 °C and clear in Madrid."))
    assert ok.passed
    assert verdict("loop_answer", loop_step(), result(tool_calls=[make_call("get_weather", {"city": "Lyon"})])).passed
    assert verdict("loop_answer", step(), result("plain text, no tools anywhere")) is None  # not a tool loop
    schema = loop_step(response_format={"type": "json_object"})
    assert verdict("loop_answer", schema, result('{"summary": "31 and clear"}')).passed


def test_result_nudge_is_added_only_after_a_tool_result() -> None:
    from smallfleet.models._toolcalls import RESULT_NUDGE, RESULT_NUDGE_NO_TOOLS, with_result_nudge

    msgs = with_result_nudge(LOOP, True)
    assert msgs[:-1] == LOOP and msgs[-1] == {"role": "system", "content": RESULT_NUDGE}
    assert with_result_nudge(LOOP, False)[-1]["content"] == RESULT_NUDGE_NO_TOOLS
    assert with_result_nudge(LOOP[:1], True) == LOOP[:1]


def test_answer_grounded_flags_invented_numbers_in_tool_loops() -> None:
    time_q = Step({"messages": [{"role": "user", "content": "What time is it in Madrid?"}], "tools": WEATHER}, StepKind.TOOL_CHOICE)
    v = verdict("answer_grounded", time_q, result("It is currently 2:15 PM in Madrid."))  # the 135M, without calling a tool
    assert not v.passed and "15" in v.reason
    assert verdict("answer_grounded", loop_step(), result("It is 31 degrees and clear in Madrid today.")).passed
    assert verdict("answer_grounded", loop_step(), result("It is 35 degrees in Madrid.")).passed is False
    assert verdict("answer_grounded", step(), result("The answer is 42.")) is None  # not a tool loop


def test_next_call_takes_only_a_new_call_of_an_offered_tool() -> None:
    from smallfleet.models._toolcalls import answered_calls, next_call, next_step_schema

    done = answered_calls(LOOP)
    assert done.calls == {("get_weather", b'{"city":"Madrid"}')} and done.names == {"get_weather"} and "31" in done.values
    # the same call again (any key order or spacing) is not a next step; another city is
    assert next_call('{"name": "get_weather", "arguments": {"city": "Madrid"}}', {"get_weather"}, done) is None
    new = next_call('{"name": "get_weather", "arguments": {"city": "Lyon"}}', {"get_weather"}, done)
    assert new is not None and new["function"] == {"name": "get_weather", "arguments": '{"city":"Lyon"}'}
    assert next_call('{"answer": "It is 31 °C."}', {"get_weather"}, done) is None
    assert next_call('{"name": "rm_rf", "arguments": {}}', {"get_weather"}, done) is None  # not offered
    assert next_call('{"name": "get_weather", "arguments": "Lyon"}', {"get_weather"}, done) is None
    assert next_call("not json", {"get_weather"}, done) is None
    # calls before the last user message belong to an earlier request
    assert answered_calls([*LOOP, {"role": "user", "content": "and Lyon?"}]).calls == set()
    # the same tool fed its own result back is not a next step (189.0 and 189 are one value)
    conv = [{"role": "user", "content": "120 USD in EUR?"},
            {"role": "assistant", "content": None, "tool_calls": [make_call("convert", {"amount": 120.0, "to": "EUR"})]},
            {"role": "tool", "tool_call_id": "x", "content": '{"amount": 111.11, "currency": "EUR"}'}]
    seen = answered_calls(conv)
    assert next_call('{"name": "convert", "arguments": {"amount": 120, "to": "EUR"}}', {"convert"}, seen) is None
    assert next_call('{"name": "convert", "arguments": {"amount": 111.11, "to": "GBP"}}', {"convert"}, seen) is None
    assert next_call('{"name": "convert", "arguments": {"amount": 50, "to": "GBP"}}', {"convert"}, seen) is not None
    # a client's tool output or arguments nested past the recursion limit are read as text, not walked
    deep = "[" * 990 + "]" * 990
    hostile = answered_calls([{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "d", "type": "function", "function": {"name": "get_weather", "arguments": deep}}]},
        {"role": "tool", "tool_call_id": "d", "content": deep}])
    assert hostile.calls == {("get_weather", deep.encode())}
    assert next_call('{"name": "get_weather", "arguments": {"city": ' + deep + "}}", {"get_weather"}, hostile) is None
    schema = next_step_schema(WEATHER)
    assert [b["properties"].get("name", {}).get("const") for b in schema["anyOf"]] == ["get_weather", None]
    assert schema["anyOf"][-1]["required"] == ["answer"]
    assert "$defs" not in schema  # parameters without references are inlined as they come
    # local references move to the root with the parameters they belong to, pointers rebased
    share = {"type": "function", "function": {"name": "share", "parameters": {
        "$defs": {"P": {"enum": ["r", "rw"]}, "Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        "type": "object", "properties": {"p": {"$ref": "#/$defs/P"}, "n": {"$ref": "#/$defs/Node"}, "self": {"$ref": "#"}}}}}
    refd = next_step_schema([*WEATHER, share])
    assert refd["anyOf"][1]["properties"]["arguments"] == {"$ref": "#/$defs/tool_1"}
    moved = refd["$defs"]["tool_1"]
    assert moved["properties"]["p"] == {"$ref": "#/$defs/tool_1/$defs/P"} and moved["properties"]["self"] == {"$ref": "#/$defs/tool_1"}
    assert moved["$defs"]["Node"]["properties"]["next"] == {"$ref": "#/$defs/tool_1/$defs/Node"}
    assert share["function"]["parameters"]["properties"]["p"] == {"$ref": "#/$defs/P"}  # the client's tools are not touched


def test_label_set_is_read_from_the_prompt() -> None:
    from smallfleet.step import label_set

    assert label_set("Classify this ticket. Answer with one of: billing, shipping, returns.\n\nTicket: late") == (
        "billing", "shipping", "returns")
    assert label_set("Sentiment? Answer with one of positive, negative or neutral.") == ("positive", "negative", "neutral")
    assert label_set('Choose from "urgent", "normal", "low" and reply with the word only.') == ("urgent", "normal", "low")
    assert label_set("Label: spam|ham. Text: win money now") == ("spam", "ham")
    assert label_set("Which one of these is bigger, 3 or 4?") == ()
    assert label_set("Write a poem about the sea.") == ()


def test_label_in_set_holds_a_prompt_style_classification_to_its_labels() -> None:
    ask = "Route this ticket. Answer with one of: billing, shipping, returns.\n\nTicket: my parcel is late"
    st = Step({"messages": [{"role": "user", "content": ask}]}, StepKind.CLASSIFICATION)
    for answer in ("shipping", "Shipping.", "  'shipping'\n", "Category: shipping", "The answer is: SHIPPING"):
        assert verdict("label_in_set", st, result(answer)).passed, answer
    for answer in ("delivery", "shipping and billing", "I think it is about a late parcel", ""):
        v = verdict("label_in_set", st, result(answer))
        assert not v.passed and "billing, shipping, returns" in v.reason, answer
    # the labels may be in the system prompt; a schema step or a prompt with no label set: no verdict
    sys_st = Step({"messages": [{"role": "system", "content": "Reply with one of: yes, no"},
                                {"role": "user", "content": "Is water wet?"}]}, StepKind.CLASSIFICATION)
    assert verdict("label_in_set", sys_st, result("yes")).passed
    assert not verdict("label_in_set", sys_st, result("maybe")).passed
    assert verdict("label_in_set", step(), result("anything")) is None
    assert verdict("label_in_set", step(response_format=SCHEMA, messages=[{"role": "user", "content": ask}]),
                   result('{"n": 1}')) is None
