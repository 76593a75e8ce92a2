"""Fuzzing every endpoint, field and header (hypothesis): no 5xx, no hang, bounded memory.

The wide fuzz runs against the real gateway on scripted models (thousands of requests in seconds);
a narrower one sends in-range values of every field llama.cpp receives to the real models, where
the 502s of the hostile-input probe came from. Examples are derandomised so CI is repeatable.
"""

from __future__ import annotations

import json
import string
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROLES = ["system", "developer", "user", "assistant", "tool"]
FIELDS = ["messages", "tools", "tool_choice", "response_format", "stream", "stream_options", "temperature", "top_p",
          "max_tokens", "max_completion_tokens", "stop", "seed", "logprobs", "top_logprobs", "presence_penalty",
          "frequency_penalty", "metadata", "model", "n", "user", "cache_prompt", "parallel_tool_calls"]
HEADERS = ["x-smallfleet-run", "x-smallfleet-budget", "x-smallfleet-session", "x-smallfleet-step-kind",
           "x-smallfleet-guard", "x-smallfleet-approve", "x-smallfleet-datamark", "x-smallfleet-kb",
           "x-smallfleet-kb-where", "x-smallfleet-stream", "authorization", "origin", "sec-fetch-site"]
FUZZ = settings(max_examples=250, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=30))
json_values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                           st.dictionaries(st.text(max_size=10), kids, max_size=4)),
                           max_leaves=20)
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(texts, json_values)}),
    st.fixed_dictionaries({"type": st.sampled_from(["image_url", "input_audio", "file", "refusal", "text", "x"])},
                          optional={"text": json_values, "image_url": json_values}),
    json_values)
tool_calls = st.lists(st.one_of(
    st.fixed_dictionaries({"id": st.one_of(st.text(max_size=8), json_values), "type": st.just("function"),
                           "function": st.fixed_dictionaries({"name": st.one_of(st.sampled_from(["f", "g"]), json_values),
                                                              "arguments": st.one_of(st.just("{}"), st.just('{"a": 1}'),
                                                                                     texts, json_values)})}),
    json_values), max_size=3)
messages = st.lists(st.one_of(
    st.fixed_dictionaries({"role": st.one_of(st.sampled_from(ROLES), json_values)},
                          optional={"content": st.one_of(texts, st.lists(parts, max_size=3), json_values),
                                    "tool_calls": tool_calls, "tool_call_id": st.one_of(st.text(max_size=8), json_values),
                                    "name": st.one_of(st.text(max_size=8), json_values)}),
    json_values), min_size=0, max_size=4)
schemas = st.one_of(
    json_values,
    st.fixed_dictionaries({"type": st.sampled_from(["object", "string", "array", "integer", "banana"])},
                          optional={"properties": st.dictionaries(st.text(max_size=6), json_values, max_size=4),
                                    "minLength": json_values, "maxLength": st.integers(-5, 5000), "enum": json_values,
                                    "required": json_values, "pattern": texts, "items": json_values,
                                    "$ref": st.sampled_from(["#", "#/$defs/x", "http://e/x"]), "minItems": json_values}))
tools = st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.just("function"),
                           "function": st.fixed_dictionaries({"name": st.one_of(st.sampled_from(["f", "g", "bad name"]), json_values)},
                                                             optional={"parameters": schemas, "description": json_values})}),
    json_values), max_size=3)
field_values = {
    "messages": messages, "tools": tools,
    "tool_choice": st.one_of(st.sampled_from(["auto", "none", "required"]), json_values,
                             st.fixed_dictionaries({"type": st.just("function"), "function": json_values})),
    "response_format": st.one_of(json_values, st.fixed_dictionaries({
        "type": st.sampled_from(["json_schema", "json_object", "text"]),
        "json_schema": st.fixed_dictionaries({"name": st.just("x"), "schema": schemas})})),
    "stream_options": st.one_of(json_values, st.fixed_dictionaries({"include_usage": json_values})),
}
bodies = st.fixed_dictionaries({}, optional={f: field_values.get(f, json_values) for f in FIELDS})
header_values = st.text(alphabet=string.printable.replace("\r", "").replace("\n", "").replace("\x0b", "").replace("\x0c", ""),
                        max_size=40).map(str.strip)  # the client library refuses padded values itself
headers = st.dictionaries(st.sampled_from(HEADERS), header_values, max_size=4)


def _check(r: httpx.Response) -> None:
    assert r.status_code < 500 or r.status_code == 503, (r.status_code, r.text[:500])
    if r.status_code >= 400 and r.content and r.headers.get("content-type", "").startswith("application/json"):
        err = r.json()["error"]
        assert isinstance(err["message"], str) and err["type"] and "Traceback" not in err["message"]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmRSS")) / 1024


class RoundRobin:
    """One client over several gateways: each request goes to the next, as a load balancer would."""

    def __init__(self, bases: list[str]) -> None:
        self.clients = [httpx.Client(base_url=b, timeout=10) for b in bases]
        self.n = 0

    def request(self, method: str, path: str, **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
        self.n += 1
        return self.clients[self.n % len(self.clients)].request(method, path, **kw)

    def post(self, path: str, **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
        return self.request("POST", path, **kw)

    def close(self) -> None:
        for c in self.clients:
            c.close()


@pytest.fixture(scope="module", params=["one-process", "two-replicas-on-postgresql"])
def fuzz_gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The same fuzz against one gateway, and against two on one PostgreSQL (ledger, keys, session
    memory, vaults and Responses history shared) with requests alternating between them."""
    from tests.conftest import ThreadGateway

    made: list[ThreadGateway] = []
    if request.param == "one-process":
        gw = request.getfixturevalue("scripted_gateway_shared")
        bases = [gw.base]
    else:
        from smallfleet.privacy import new_key

        url = request.getfixturevalue("pg_server").database("fuzz_replicas")
        key = new_key()
        env = {"SMALLFLEET_DATABASE_URL": url, "SMALLFLEET_SESSION_KEY": key, "SMALLFLEET_MEMORY_KEY": key}
        made = [ThreadGateway(tmp_path_factory.mktemp(f"replica{i}"), env=env) for i in range(2)]
        gw, bases = made[0], [g.base for g in made]
    gw.client = RoundRobin(bases)
    gw.rss0 = rss_mb()
    yield gw
    gw.client.close()
    # after everything: alive, quick, and no memory kept
    for base in bases:
        t0 = time.perf_counter()
        assert httpx.get(base + "/health", timeout=1).status_code == 200 and time.perf_counter() - t0 < 1
    assert rss_mb() - gw.rss0 < 300
    for g in made:
        g.stop()


@FUZZ
@given(body=bodies, hdrs=headers)
def test_chat_completions_fuzz(fuzz_gw, body, hdrs) -> None:
    _check(fuzz_gw.client.post("/v1/chat/completions", content=json.dumps(body).encode(), headers=hdrs))


@FUZZ
@given(body=st.one_of(json_values, st.fixed_dictionaries({}, optional={"text": st.one_of(texts, json_values),
                                                                        "schema": st.one_of(schemas, st.fixed_dictionaries(
                                                                            {"type": st.just("object"),
                                                                             "properties": st.dictionaries(st.text(max_size=5), schemas, max_size=4)},
                                                                            optional={"required": json_values})),
                                                                        "instruction": st.one_of(texts, json_values)})))
def test_extract_fuzz(fuzz_gw, body) -> None:
    _check(fuzz_gw.client.post("/v1/smallfleet/extract", content=json.dumps(body).encode()))


@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)),
       path=st.sampled_from(["/v1/chat/completions", "/v1/smallfleet/extract", "/login"]))
def test_raw_bodies_fuzz(fuzz_gw, raw, path) -> None:
    _check(fuzz_gw.client.post(path, content=raw, headers={"content-type": "application/json"}))


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
       path=st.one_of(st.sampled_from(["/", "/health", "/v1/models", "/v1/smallfleet/report", "/dashboard", "/logout",
                                       "/v1/chat/completions", "/v1/responses", "/../../etc/passwd"]),
                      st.text(alphabet=string.ascii_letters + string.digits + "/-_.%", max_size=30).map(lambda p: "/" + p)),
       query=st.text(alphabet=string.ascii_letters + "=&%", max_size=20), hdrs=headers)
def test_routes_fuzz(fuzz_gw, method, path, query, hdrs) -> None:
    _check(fuzz_gw.client.request(method, path + ("?" + query if query else ""), headers=hdrs))


# -- the fields llama.cpp receives, in their valid ranges, on the real models ----------------------
llama_fields = st.fixed_dictionaries({}, optional={
    "temperature": st.floats(0, 2), "top_p": st.floats(0, 1), "max_tokens": st.integers(1, 8),
    "stop": st.one_of(st.text(min_size=1, max_size=5), st.lists(st.text(min_size=1, max_size=5), max_size=4)),
    "seed": st.integers(-2**63, 2**64 - 1), "logprobs": st.booleans(), "top_logprobs": st.integers(0, 20),
    "presence_penalty": st.floats(-2, 2), "frequency_penalty": st.floats(-2, 2), "cache_prompt": st.booleans(),
    "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}, {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "string", "maxLength": 5}}, "required": ["a"]}}}]),
})


@pytest.mark.model
@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(extra=llama_fields, content=st.text(min_size=1, max_size=40))
def test_llama_fields_fuzz_on_real_models(gateway, extra, content) -> None:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}
    r = httpx.post(gateway.base + "/v1/chat/completions", json=body, timeout=120)
    _check(r)
    assert r.status_code != 502, r.text


resp_items = st.lists(st.one_of(
    st.fixed_dictionaries({"role": st.one_of(st.sampled_from(["user", "assistant", "system", "developer"]), json_values)},
                          optional={"content": st.one_of(texts, st.lists(parts, max_size=3), json_values), "type": st.just("message")}),
    st.fixed_dictionaries({"type": st.sampled_from(["function_call", "function_call_output", "reasoning", "item_reference", "x"])},
                          optional={"call_id": st.one_of(st.text(max_size=6), json_values), "name": st.one_of(st.just("f"), json_values),
                                    "arguments": st.one_of(st.just("{}"), texts, json_values), "output": st.one_of(texts, json_values)}),
    json_values), max_size=4)
resp_bodies = st.fixed_dictionaries({}, optional={
    "model": st.one_of(st.just("auto"), json_values), "input": st.one_of(texts, resp_items, json_values),
    "instructions": st.one_of(texts, json_values), "previous_response_id": st.one_of(st.just("resp_x"), json_values),
    "tools": st.one_of(json_values, st.lists(st.fixed_dictionaries({"type": st.sampled_from(["function", "web_search"]),
                                                                    "name": st.one_of(st.sampled_from(["f", "bad name"]), json_values)},
                                                                   optional={"parameters": schemas}), max_size=2)),
    "tool_choice": st.one_of(st.sampled_from(["auto", "none", "required"]), json_values),
    "text": st.one_of(json_values, st.fixed_dictionaries({"format": st.one_of(json_values, st.fixed_dictionaries(
        {"type": st.sampled_from(["json_schema", "text", "json_object"])}, optional={"schema": schemas, "name": json_values}))})),
    "stream": json_values, "max_output_tokens": json_values, "temperature": json_values, "conversation": json_values})


@FUZZ
@given(body=resp_bodies, hdrs=headers)
def test_responses_fuzz(fuzz_gw, body, hdrs) -> None:
    _check(fuzz_gw.client.post("/v1/responses", content=json.dumps(body).encode(), headers=hdrs))
