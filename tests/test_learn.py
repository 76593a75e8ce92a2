"""The learning loop's clustering (real MiniLM), matching, comparison and replay (scripted models)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from smallfleet import Engine, Fleet, FunctionBackend, load_config
from smallfleet.capture import Trace, TraceStore
from smallfleet.cli import cli
from smallfleet.learn import Matcher, cluster_traces, load_clusters, save_clusters
from smallfleet.learn.compare import compare
from smallfleet.learn.match import Entry
from smallfleet.learn.replay import pick_steps, replay, wilson
from smallfleet.privacy import new_key

KEY = new_key()
SYSTEM = {"role": "system", "content": "You are the assistant of a travel desk. Use the tools."}
TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}, "amount": {"type": "number"}, "to": {"type": "string"}}}}} for n in ("get_weather", "convert")]
CITIES = ["Lyon", "Paris", "Madrid", "Oslo", "Rome", "Vienna", "Lisbon", "Dublin", "Prague", "Berlin", "Athens", "Zurich"]


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": name, "arguments": orjson.dumps(args).decode()}}]}


def workload() -> list[Trace]:
    out = []
    for i, city in enumerate(CITIES):
        out.append(Trace(id=f"w{i}", kind="tool_choice", trace=f"conv-w{i}", ts=float(i), cost_usd=0.002,
                         request={"messages": [SYSTEM, {"role": "user", "content": f"What is the weather like in {city} this weekend?"}],
                                  "tools": TOOLS, "max_tokens": 48}, final=call("get_weather", city=city)))
        amount = 10 * (i + 1)
        out.append(Trace(id=f"m{i}", kind="tool_choice", trace=f"conv-m{i}", ts=100.0 + i, cost_usd=0.001,
                         request={"messages": [SYSTEM, {"role": "user", "content": f"How much is {amount} US dollars in euros today?"}],
                                  "tools": TOOLS, "max_tokens": 48}, final=call("convert", amount=amount, to="EUR")))
    out.append(Trace(id="x0", kind="generation", ts=500.0, request={"messages": [{"role": "user", "content": "Write a haiku about rain."}]},
                     final={"role": "assistant", "content": "Rain on the window."}))
    return out


def test_clusters_split_a_structure_by_what_its_steps_ask() -> None:
    clusters = cluster_traces(workload())
    by_members = {frozenset(c.members): c for c in clusters}
    weather = by_members[frozenset(f"w{i}" for i in range(12))]
    money = by_members[frozenset(f"m{i}" for i in range(12))]
    assert len(clusters) == 3 and weather.signature == money.signature  # one structure, two tasks
    assert weather.name == "tool_choice: convert, get_weather | like weather weekend" and "dollars" in money.name
    assert "get_weather" in weather.name and weather.spend_share > money.spend_share
    assert [c.id for c in clusters] == ["c1", "c2", "c3"] and clusters[0] is weather  # largest spend first
    # the router's matcher puts new requests in the same clusters without MiniLM (its time: bench/learn.py)
    m = Matcher(Entry(c.id, c.signature, c.centroid) for c in clusters)
    assert m.match(weather.signature, "What's the weather in Nice tomorrow?") == weather.id
    assert m.match(money.signature, "Convert 75 dollars to euros") == money.id
    assert m.match("no-such-signature", "x") is None


def test_clusters_survive_the_store(tmp_path: Path) -> None:
    st = TraceStore(tmp_path / "t.db", key=KEY)
    clusters = cluster_traces(workload())
    save_clusters(st, clusters)
    back = load_clusters(st)
    assert [(c.id, c.members, c.centroid) for c in back] == [(c.id, c.members, c.centroid) for c in clusters]


@pytest.mark.parametrize(("original", "replayed", "kind", "agree", "why"), [
    (call("get_weather", city="Lyon"), call("get_weather", city=" lyon "), "tool_choice", True, "same calls"),
    (call("convert", amount=10, to="EUR"), call("convert", amount="10.0", to="eur"), "tool_choice", True, "same calls"),
    (call("get_weather", city="Lyon"), call("get_weather", city="Paris"), "tool_choice", False, "city: 'lyon' vs 'paris'"),
    (call("get_weather", city="Lyon"), call("convert", amount=1), "tool_choice", False, "called convert instead of get_weather"),
    (call("get_weather", city="Lyon"), {"role": "assistant", "content": "It is sunny."}, "tool_choice", False, "answered in words"),
    ({"role": "assistant", "content": '{"name": "Ann", "age": 31}'}, {"role": "assistant", "content": '{"age": 31, "name": "ann"}'},
     "extraction", True, "same fields"),
    ({"role": "assistant", "content": '{"name": "Ann", "age": 31}'}, {"role": "assistant", "content": '{"name": "Ann"}'},
     "extraction", False, "age missing"),
    ({"role": "assistant", "content": "refund"}, {"role": "assistant", "content": "Refund."}, "classification", True, "same label"),
    ({"role": "assistant", "content": "refund"}, {"role": "assistant", "content": "billing"}, "classification", False, "instead of"),
    ({"role": "assistant", "content": '{\n  "category": "refund",\n  "urgency": "high"\n}'},
     {"role": "assistant", "content": '{"category":"refund","urgency":"high"}'}, "classification", True, "same"),
    ({"role": "assistant", "content": '{"category": "refund", "urgency": "low"}'},
     {"role": "assistant", "content": '{"category": "refund", "urgency": "high"}'}, "classification", False, "urgency"),
    ({"role": "assistant", "content": "It is 31 °C in Lyon."}, {"role": "assistant", "content": "Lyon: 31 degrees."}, "generation", True, "31"),
    ({"role": "assistant", "content": "It is 31 °C in Lyon."}, {"role": "assistant", "content": "It is warm."}, "generation", False, "drops values"),
    ({"role": "assistant", "content": "ok"}, None, "generation", False, "no answer"),
])
def test_compare(original: dict[str, Any], replayed: dict[str, Any] | None, kind: str, agree: bool, why: str) -> None:
    ok, reason = compare(original, replayed, kind)
    assert ok is agree and why in reason


def test_wilson_and_conversation_sampling() -> None:
    lo, hi = wilson(95, 100)
    assert 0.88 < lo < 0.89 and 0.97 < hi < 0.99 and wilson(0, 0) == (0.0, 1.0)
    steps = [Trace(id=f"s{c}{i}", kind="generation", trace=f"c{c}", ts=float(10 * c + i), request={"messages": []}, final={})
             for c in range(5) for i in range(3)]
    picked = pick_steps(steps, 7)
    assert len(picked) == 7
    for conv in {t.trace for t in picked}:  # whole conversations, in the order they ran
        ts = [t.ts for t in picked if t.trace == conv]
        assert ts == sorted(ts)
    assert pick_steps(steps, 7) == picked  # seeded


def scripted(tmp_path: Path, fn: Any) -> Engine:
    cfg = load_config(None, env={"SMALLFLEET_LEDGER": str(tmp_path / "l.db"), "SMALLFLEET_MEMORY": "off"})
    return Engine(cfg, fleet=Fleet(cfg, backends={n: FunctionBackend(s, fn) for n, s in cfg.models.items()}), ledger=False)


def test_replay_judges_each_cluster_with_an_interval(tmp_path: Path) -> None:
    traces = workload()
    clusters = cluster_traces(traces)

    def small(req: dict[str, Any]) -> Any:  # right on weather, wrong on money
        q = req["messages"][-1]["content"]
        if "weather" in q:
            return {"tool_calls": call("get_weather", city=q.split(" in ")[1].split(" this")[0])["tool_calls"]}
        return {"tool_calls": call("convert", amount=1, to="EUR")["tool_calls"]}

    eng = scripted(tmp_path, small)
    small_name = eng.config.tier_model("small").name
    rep = asyncio.run(replay(eng, traces, clusters, small_name, target=0.7, min_steps=10))
    weather = next(c for c in rep.clusters if "weather" in c.name)
    money = next(c for c in rep.clusters if "dollars" in c.name)
    assert weather.agreement == 1.0 and weather.move and weather.ci_low > 0.7 and "move to small" in weather.recommendation
    assert money.agreement == 0.0 and not money.move and money.recommendation.startswith("keep")
    haiku = next(c for c in rep.clusters if c.steps == 1)
    assert "too few steps" in haiku.recommendation and not haiku.move
    assert rep.overall["replayed"] == 25 and len(rep.clusters) == 3
    bad = next(s for s in rep.steps if s.cluster == money.id)
    assert bad.why.startswith("arguments differ: convert amount:") and "vs 1.0" in bad.why

    def taught(req: dict[str, Any]) -> Any:  # gets the amount right once it has seen worked examples
        if "Worked examples" in str(req["messages"]) and "dollars" in req["messages"][-1]["content"]:
            amount = int(req["messages"][-1]["content"].split("much is ")[1].split(" ")[0])
            return {"tool_calls": call("convert", amount=amount, to="EUR")["tool_calls"]}
        return small(req)

    shot = asyncio.run(replay(scripted(tmp_path / "b", taught), traces, clusters, small_name, target=0.7, min_steps=5,
                              few_shot=2))
    m2 = next(c for c in shot.clusters if c.id == money.id)
    assert m2.agreement == 1.0 and m2.replayed == 10 and len(shot.examples[money.id]) == 2  # 2 examples, not replayed
    assert "Answer: {\"name\":\"convert\"" in shot.examples[money.id][0] and shot.to_json()["variant"] == "fewshot2"
    # examples only from the steps a decision learns from: the rest never lends its answers
    late = {t.id for t in sorted(traces, key=lambda t: t.ts)[-8:]}
    early = [t.id for t in traces if t.id not in late]
    only = asyncio.run(replay(scripted(tmp_path / "c", taught), traces, clusters, small_name, only=[money.id], few_shot=2,
                              examples_from=early))
    shown = [t for t in traces if any(str(t.request["messages"][-1]["content"]) in e for e in only.examples[money.id])]
    assert len(shown) == 2 and all(t.id in early for t in shown)


def test_surrogates_stand_in_for_placeholders_and_go_back() -> None:
    from smallfleet.learn.surrogate import Surrogates

    req = {"messages": [{"role": "user", "content": "Ask <PERSON_1> and <PERSON_2> about Lyon on <DATE_TIME_1>, "
                                                    "then mail <EMAIL_ADDRESS_1>; ref <IBAN_CODE_1>."}],
           "tools": TOOLS}
    final = call("get_weather", city="<LOCATION_1>")
    sur = Surrogates(req, final)
    filled = sur.fill(req)
    text = filled["messages"][0]["content"]
    assert "<PERSON_1>" not in text and "<PERSON_2>" not in text and "<DATE_TIME_1>" not in text
    assert sur.forward["<PERSON_1>"] != sur.forward["<PERSON_2>"]  # one value per placeholder
    assert sur.forward["<LOCATION_1>"] != "Lyon"  # never a value the step already holds
    assert "<IBAN_CODE_1>" in text  # no stand-ins for this type: left as it is
    assert filled["tools"] == TOOLS and req["messages"][0]["content"].startswith("Ask <PERSON_1>")  # a copy
    city = sur.forward["<LOCATION_1>"]
    said = call("get_weather", city=city.upper())
    assert sur.restore(said) == call("get_weather", city="<LOCATION_1>")  # back, in any letter case
    assert Surrogates({"messages": []}).fill(req) == req


def test_a_replay_reads_stand_ins_where_the_trace_holds_placeholders(tmp_path: Path) -> None:
    """A live local model reads real values; shown <LOCATION_1> it would make one up."""
    traces = [Trace(id=f"p{i}", kind="tool_choice", trace=f"conv-p{i}", ts=float(i), request={"messages": [
        SYSTEM, {"role": "user", "content": "What is the weather like in <LOCATION_1> this weekend?"}], "tools": TOOLS},
        final=call("get_weather", city="<LOCATION_1>")) for i in range(3)]
    clusters = cluster_traces(traces)

    def model(req: dict[str, Any]) -> Any:  # copies a real city name; invents one for a placeholder
        q = req["messages"][-1]["content"]
        city = q.split(" in ")[1].split(" this")[0]
        return {"tool_calls": call("get_weather", city="London" if city.startswith("<") else city)["tool_calls"]}

    eng = scripted(tmp_path, model)
    name = eng.config.tier_model("small").name
    rep = asyncio.run(replay(eng, traces, clusters, name, min_steps=1))
    assert rep.overall["agreement"] == 1.0
    assert all("<LOCATION_1>" in s.replayed["tool_calls"][0]["function"]["arguments"] for s in rep.steps)
    raw = asyncio.run(replay(scripted(tmp_path / "b", model), traces, clusters, name, min_steps=1, surrogates=False))
    assert raw.overall["agreement"] == 0.0 and "london" in raw.steps[0].why


def test_learn_cli_clusters_and_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMALLFLEET_CAPTURE_KEY", KEY)
    monkeypatch.delenv("SMALLFLEET_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    st = str(tmp_path / "t.db")
    run = CliRunner().invoke
    log = tmp_path / "log.jsonl"
    log.write_text("".join(orjson.dumps({"request": t.request, "trace": t.trace, "id": t.id, "response": {
        "created": 1764547200 + int(t.ts), "model": "gpt-4o", "choices": [{"message": t.final}]}}).decode() + "\n" for t in workload()))
    assert run(cli, ["traces", "import", str(log), "--store", st]).exit_code == 0
    r = run(cli, ["learn", "replay", "--store", st, "--tier", "small"])
    assert r.exit_code != 0 and "learn clusters" in r.output  # no clusters yet: says what to run
    r = run(cli, ["learn", "clusters", "--store", st, "--json"])
    assert r.exit_code == 0, r.output
    got = orjson.loads(r.stdout)
    # stored pseudonymised, the twelve weather steps are one step (question "… in <LOCATION_1> …", call
    # get_weather(city="<LOCATION_1>")): replaying it twelve times is no more evidence than once
    assert got["curated"] == 14 and got["dropped"] == {"duplicate": 11} and len(got["clusters"]) == 3
    assert run(cli, ["learn", "replay", "--store", st]).exit_code == 2  # neither --tier nor --model
    r = run(cli, ["learn", "replay", "--store", st, "--model", "no-such-model"])
    assert r.exit_code != 0 and "not in the fleet" in r.output
    r = run(cli, ["learn", "replay", "--store", st, "--tier", "small", "--cluster", "c99"])
    assert r.exit_code != 0 and "no cluster 'c99'" in r.output
    ghost = tmp_path / "ghost.toml"  # a fleet model whose file is not there: one clear error, no replay written
    ghost.write_text(f'[models.ghost]\npath = "{tmp_path / "ghost.gguf"}"\ntier = "small"\n')
    r = run(cli, ["--config", str(ghost), "learn", "replay", "--store", st, "--model", "ghost"])
    assert r.exit_code != 0 and "does not exist" in " ".join(r.output.split())
    back = TraceStore(st, key=KEY)
    assert back.learned_names("replay:") == []
    back.close()


def test_decide_moves_down_only_with_evidence() -> None:
    from smallfleet.learn.table import UNDECIDED, Decision, decide

    tiers = ("small", "large", "frontier")
    good = {"replayed": 60, "agreement": 1.0, "ci_low": 0.94, "ci_high": 1.0}
    poor = {"replayed": 60, "agreement": 0.5, "ci_low": 0.37, "ci_high": 0.63}
    assert decide({"small": [good]}, tiers, 0.9, 20).start == "small"
    # 60 of 60: not shown to reach 95 %, nor shown to miss it: no route either way
    assert decide({"small": [good]}, tiers, 0.95, 20) == Decision(None, UNDECIDED)
    assert decide({"small": [poor]}, tiers, 0.9, 20) == Decision("large", "small agreed on only 50% of 60 replayed "
                                                                              "steps (95% upper bound 63% < 90%)")
    assert decide({"small": [poor], "large": [good]}, tiers, 0.9, 20).start == "large"
    assert decide({"small": [{**good, "replayed": 19}]}, tiers, 0.9, 20) == Decision(None, UNDECIDED)
    # worked examples that lift the small tier over the target keep the step there, and go with the route
    shots = {**good, "few_shot": 2, "examples": ["Request: a\nAnswer: b", "Request: c\nAnswer: d"]}
    d = decide({"small": [poor, shots]}, tiers, 0.9, 20)
    assert d.start == "small" and "with 2 worked examples" in d.why and d.examples == tuple(shots["examples"])
    assert decide({"small": [good, shots]}, tiers, 0.9, 20).examples == ()  # the plain prompt wins a tie



def test_a_cluster_too_small_alone_is_judged_with_its_structure() -> None:
    from smallfleet.learn.replay import wilson
    from smallfleet.learn.table import UNDECIDED, decide_pooled

    def row(k: int, n: int, **kw: Any) -> dict[str, Any]:
        lo, hi = wilson(k, n)
        return {"replayed": n, "agreement": k / n, "ci_low": lo, "ci_high": hi, **kw}

    tiers = ("small", "large")
    a, b = {"small": [row(8, 8)]}, {"small": [row(8, 8)]}
    assert decide_pooled(a, [a], tiers, 0.8, 10).why == UNDECIDED  # alone: 8 steps are too few
    d = decide_pooled(a, [a, b], tiers, 0.8, 10)  # pooled: 16 of 16, lower bound 0.81
    assert d.start == "small" and d.why.startswith("judged with its structure's 2 clusters (16 steps): small agreed on 100%")
    bad = {"small": [row(2, 8)]}
    assert decide_pooled(a, [a, bad], tiers, 0.8, 10).start is None  # 10 of 16: the pool does not carry it
    many = [{"small": [row(8, 8)]} for _ in range(10)]
    assert decide_pooled(bad, [*many, bad], tiers, 0.8, 10).start is None  # 82 of 88, but its own 2 of 8 say no
    assert decide_pooled(a, [*many, bad], tiers, 0.8, 10).start == "small"
    big = {"small": [row(15, 20)]}
    assert decide_pooled(big, [big, a, b], tiers, 0.8, 10).why == UNDECIDED  # its own evidence is enough to decide on
    shots = {"small": [row(8, 8, few_shot=2, examples=["Request: a\nAnswer: b"])]}
    d = decide_pooled(shots, [shots, {"small": [row(8, 8, few_shot=2, examples=["x"])]}], tiers, 0.8, 10)
    assert d.start == "small" and d.few_shot == 2 and d.examples == ("Request: a\nAnswer: b",)  # its own examples
    assert decide_pooled(a, [a, shots], tiers, 0.8, 10).why == UNDECIDED  # only variants it was replayed with


def test_the_gateway_follows_the_learned_table(scripted_gateway, tmp_path: Path) -> None:
    from smallfleet.learn.table import build_table

    clusters = cluster_traces(workload())
    weather = next(c for c in clusters if "weather" in c.name)
    money = next(c for c in clusters if "dollars" in c.name)
    replays = [{"tier": "small", "clusters": [
        {"id": weather.id, "replayed": 40, "agreement": 1.0, "ci_low": 0.91, "ci_high": 1.0},
        {"id": money.id, "replayed": 40, "agreement": 0.3, "ci_low": 0.18, "ci_high": 0.45}]}]
    table = build_table(clusters, replays, ("small", "large", "frontier"), target=0.9)
    assert [(r["cluster"], r["start"]) for r in table["routes"]] == [(weather.id, "small"), (money.id, "large")]
    shots = ["Request: How much is 5 US dollars in euros today?\nAnswer: {\"name\": \"convert\"}"]
    with_shots = build_table(clusters, [*replays, {"tier": "small", "few_shot": 1, "examples": {money.id: shots}, "clusters": [
        {"id": money.id, "replayed": 40, "agreement": 1.0, "ci_low": 0.91, "ci_high": 1.0}]}], ("small", "large", "frontier"),
        target=0.9)
    assert [(r["cluster"], r["start"], r["examples"]) for r in with_shots["routes"]] == [(weather.id, "small", []),
                                                                                        (money.id, "small", shots)]
    routes = tmp_path / "routes.json"
    gw = scripted_gateway(extra=f'\n[learn]\nroutes = "{routes}"\n[routing.tool_choice]\nstart = "frontier"\n',
                          answer=lambda req: {"tool_calls": (call("convert", amount=40, to="EUR") if "dollars" in str(req["messages"])
                                                             else call("get_weather", city="Nice"))["tool_calls"]})
    url = gw.base + "/v1/chat/completions"

    def ask(q: str) -> httpx.Response:
        return httpx.post(url, json={"model": "auto", "messages": [SYSTEM, {"role": "user", "content": q}], "tools": TOOLS},
                          timeout=30)

    before = ask("What's the weather like in Nice this weekend?")
    assert before.headers["x-smallfleet-tier"] == "frontier" and "learned route" not in before.headers["x-smallfleet-reason"]
    routes.write_bytes(orjson.dumps(table, option=orjson.OPT_NON_STR_KEYS))
    gw.engine.router.routes._next_check = 0.0  # the gateway looks every few seconds; the test does not wait
    moved = ask("What's the weather like in Nice this weekend?")
    assert moved.headers["x-smallfleet-tier"] == "small"
    assert f"learned route {weather.id}" in moved.headers["x-smallfleet-reason"] and "91%" in moved.headers["x-smallfleet-reason"]
    up = ask("How much is 40 US dollars in euros today?")
    assert up.headers["x-smallfleet-tier"] == "large" and "agreed on only 30%" in up.headers["x-smallfleet-reason"]
    other = httpx.post(url, json={"model": "auto", "messages": [{"role": "user", "content": "What's the weather in Nice?"}],
                                  "tools": TOOLS}, timeout=30)  # another structure (no system prompt): the policy
    assert other.headers["x-smallfleet-tier"] == "frontier"
    routes.write_bytes(orjson.dumps(with_shots, option=orjson.OPT_NON_STR_KEYS))
    gw.engine.router.routes._next_check = 0.0
    small = gw.backends[gw.cfg.tier_model("small").name]
    shown = ask("How much is 40 US dollars in euros today?")
    assert shown.headers["x-smallfleet-tier"] == "small" and "with 1 worked examples" in shown.headers["x-smallfleet-reason"]
    sent = small.calls[-1]["messages"]
    assert sent[0] == SYSTEM and sent[1]["role"] == "system" and shots[0] in sent[1]["content"] and sent[2]["role"] == "user"
    ask("What's the weather like in Nice this weekend?")
    assert all(shots[0] not in str(m.get("content")) for m in small.calls[-1]["messages"])  # only its own cluster's
    routes.write_text("{broken")
    gw.engine.router.routes._next_check = 0.0
    assert ask("What's the weather like in Nice this weekend?").headers["x-smallfleet-tier"] == "small"  # last good table kept


@pytest.mark.model
def test_import_clusters_replay_apply_on_a_real_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop end to end from the command line, replayed on the real 135M model."""
    from tests.conftest import write_config

    monkeypatch.setenv("SMALLFLEET_CAPTURE_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    cfg = str(write_config(tmp_path / "cfg"))
    st, routes = str(tmp_path / "t.db"), tmp_path / "routes.json"
    log = tmp_path / "log.jsonl"
    log.write_text("".join(orjson.dumps({"request": t.request, "trace": t.trace, "id": t.id, "response": {
        "created": 1764547200 + int(t.ts), "choices": [{"message": t.final}]}}).decode() + "\n" for t in workload()))
    run = CliRunner().invoke
    assert run(cli, ["--config", cfg, "traces", "import", str(log), "--store", st]).exit_code == 0
    assert run(cli, ["--config", cfg, "learn", "clusters", "--store", st]).exit_code == 0
    r = run(cli, ["--config", cfg, "learn", "apply", "--store", st, "--out", str(routes)])
    assert r.exit_code != 0 and "learn replay" in r.output  # nothing replayed yet
    out = tmp_path / "replay.json"
    r = run(cli, ["--config", cfg, "learn", "replay", "--store", st, "--tier", "small", "--json", str(out)])
    assert r.exit_code == 0, r.output
    rep = orjson.loads(out.read_bytes())
    assert rep["overall"]["replayed"] == 14 and rep["model"] == "smollm2"
    assert {s["id"] for s in rep["steps"]} <= {t.id for t in workload()} and all(s["why"] for s in rep["steps"])
    assert sum(c["replayed"] for c in rep["clusters"]) == 14
    r = run(cli, ["--config", cfg, "learn", "apply", "--store", st, "--out", str(routes), "--min-steps", "5", "--target", "0.5"])
    assert r.exit_code == 0, r.output
    table = orjson.loads(routes.read_bytes())
    judged = [c for c in rep["clusters"] if c["replayed"] >= 5]
    assert judged and len(table["routes"]) + len(table["undecided"]) == len(rep["clusters"])
    for c in judged:  # each judged cluster's route follows its interval of right-or-caught answers
        route = next((x for x in table["routes"] if x["cluster"] == c["id"]), None)
        assert c["safe"] >= c["agreement"] and c["safe_ci_low"] >= c["ci_low"]
        if c["safe_ci_low"] >= 0.5:
            assert route is not None and route["start"] == "small"
        elif c["safe_ci_high"] < 0.5:
            assert route is not None and route["start"] == "large"
        else:
            assert route is None
    png, rj = tmp_path / "r.png", tmp_path / "r.json"
    r = run(cli, ["--config", cfg, "learn", "report", "--store", st, "--min-steps", "3", "--png", str(png), "--json", str(rj)])
    assert r.exit_code == 0, r.output
    assert "hand-set" in r.output and png.read_bytes()[:4] == b"\x89PNG"
    rep = orjson.loads(rj.read_bytes())
    assert rep["learn_steps"] + rep["eval_steps"] == 14 and {p["policy"] for p in rep["points"]} >= {"all-top", "hand-set", "table@0.95"}


def test_export_formats_hold_no_raw_personal_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from smallfleet.capture import TraceAttempt

    monkeypatch.setenv("SMALLFLEET_CAPTURE_KEY", KEY)
    monkeypatch.delenv("SMALLFLEET_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    st_path = tmp_path / "t.db"
    pii = "Please e-mail Jane Doe at jane.doe@example.com about order 4471, phone +1 415 555 0199."
    traces = []
    for i in range(3):
        failed = call("send_email", to="jane@example.org")
        good = call("send_email", to="jane.doe@example.com", body="About order 4471")
        traces.append(Trace(id=f"p{i}", kind="tool_choice", trace=f"c{i}", ts=float(i),
                            request={"messages": [{"role": "user", "content": pii + f" (ticket {i})"}], "tools": TOOLS},
                            final=good, verified=True,
                            attempts=[TraceAttempt("small", "small", failed, [{"check": "args_grounded", "passed": False,
                                                                                 "reason": "jane@example.org is not in the request"}]),
                                      TraceAttempt("large", "large", good, [{"check": "args_grounded", "passed": True, "reason": ""}])]))
    from smallfleet.privacy.detector import Detector
    from smallfleet.privacy.pseudonymize import Pseudonymizer

    st = TraceStore(st_path, key=KEY)
    det = Detector()
    st.add([t.scrubbed(Pseudonymizer(det)) for t in traces])
    save_clusters(st, cluster_traces(list(st.iter())))
    st.close()
    run = CliRunner().invoke
    texts = []
    for fmt in ("openai", "chat-jsonl", "dpo"):
        out = tmp_path / f"{fmt}.jsonl"
        r = run(cli, ["learn", "export", str(out), "--store", str(st_path), "--format", fmt])
        assert r.exit_code == 0, r.output
        rows = [orjson.loads(x) for x in out.read_text().splitlines()]
        assert len(rows) == 3
        texts.append(out.read_text())
    openai_row, chat_row, dpo_row = (orjson.loads(t.splitlines()[0]) for t in texts)
    assert openai_row["messages"][-1]["tool_calls"][0]["function"]["name"] == "send_email" and openai_row["tools"]
    assert orjson.loads(chat_row["messages"][-1]["content"])["name"] == "send_email"
    assert dpo_row["preferred_output"][0]["tool_calls"] and dpo_row["non_preferred_output"][0]["tool_calls"]
    raw = "".join(texts) + b"".join(p.read_bytes() for p in tmp_path.glob("t.db*")).decode("latin-1")
    for secret in ("Jane Doe", "jane.doe@example.com", "415 555 0199", "jane@example.org"):
        assert secret not in raw
    assert run(cli, ["learn", "export", str(tmp_path / "x.jsonl"), "--store", str(st_path), "--cluster", "c9"]).exit_code != 0


def test_shadow_replays_run_when_idle_scrubbed_and_count_in_apply(scripted_gateway, tmp_path: Path) -> None:
    from smallfleet.learn.table import shadow_replays

    extra = (f'\n[capture]\nenabled = true\nstore = "{tmp_path / "t.db"}"\nshadow = 1.0\n'
             '[routing.generation]\nstart = "large"\n')
    gw = scripted_gateway(extra=extra, env={"SMALLFLEET_CAPTURE_KEY": KEY},
                          answer=lambda req: "Dear Jane Doe, your order 4471 ships today.")
    shadow = gw.engine.shadow
    assert shadow is not None and shadow.tier == "small"
    busy = [True]
    shadow.idle = lambda: not busy[0]
    r = httpx.post(gw.base + "/v1/chat/completions", json={"model": "auto", "messages": [
        {"role": "user", "content": "Write to Jane Doe (jane.doe@example.com) that order 4471 ships today."}]}, timeout=30)
    assert r.status_code == 200 and r.headers["x-smallfleet-tier"] == "large"
    time.sleep(0.6)
    assert shadow.run == 0  # waits while the gateway is busy
    busy[0] = False
    deadline = time.time() + 10
    while shadow.run == 0 and time.time() < deadline:
        time.sleep(0.1)
    gw.engine.capturer.drain()
    st = TraceStore(tmp_path / "t.db", key=KEY)
    (sh,) = st.shadows()
    assert sh["id"] == r.headers["x-smallfleet-step-id"] and sh["tier"] == "small" and sh["agree"] is True
    assert "Jane Doe" not in orjson.dumps(sh).decode() and "<PERSON_1>" in sh["replayed"]["content"]
    clusters = cluster_traces(list(st.iter()))
    (rep,) = shadow_replays(clusters, st.shadows())
    assert rep["tier"] == "small" and rep["clusters"][0]["replayed"] == 1 and rep["clusters"][0]["agreement"] == 1.0


def test_report_compares_policies_on_a_held_back_split(tmp_path: Path) -> None:
    from smallfleet.learn.report import compare_policies, plot

    traces, replays, cluster_of = [], {}, {}
    for i in range(300):  # cluster A: the small model agrees; B: it is wrong, its checks catch half of it
        c = "A" if i % 3 else "B"
        t = Trace(id=f"s{i}", kind="tool_choice", ts=float(i), request={"messages": [
            {"role": "user", "content": ("weather in town %d" if c == "A" else "convert %d dollars to euros") % i}]},
            final={"role": "assistant", "content": "x"}, frontier_cost_usd=0.01)
        traces.append(t)
        cluster_of[t.id] = c
        replays[t.id] = {"agree": c == "A", "passed": c == "A" or i % 2 == 0, "cost_usd": 0.0005}
    rep = compare_policies(traces, replays, cluster_of, lambda t: True, split=0.7)
    pts = {p.policy: p for p in rep.points}
    assert rep.learn_steps == 210 and rep.eval_steps == 90
    assert pts["all-top"].agreement == 1.0 and pts["all-top"].small_share == 0.0 and pts["all-top"].cost_share == 1.0
    assert pts["all-small"].small_share == 1.0 and 0.8 < pts["all-small"].agreement < 0.9  # B's caught half escalates
    assert pts["hand-set"] == replace_policy(pts["all-small"], "hand-set")
    table = pts["table@0.95"]
    assert table.agreement == 1.0 and abs(table.small_share - 2 / 3) < 0.02 and table.cost_share < 0.5
    assert rep.top_needed_for_95["table"] is not None and rep.top_needed_for_95["table"] < 0.4
    est = pts["estimator@0.9"]
    assert est.agreement == 1.0 and abs(est.small_share - 2 / 3) < 0.02  # it learns the clusters' rates
    assert rep.calibration["brier"] < 0.05
    plot(rep, str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_the_table_may_start_a_cluster_small_with_examples_or_an_adapter() -> None:
    from smallfleet.learn.report import Variant, split_by_time, table_variants

    traces, cluster_of = [], {}
    plain, shots, tuned = {}, {}, {}
    for i in range(300):  # A: plain agrees; B: only with worked examples; C: only with the adapter; D: never
        c = "ABCD"[i % 4]
        t = Trace(id=f"s{i}", kind="tool_choice", ts=float(i), request={"messages": [{"role": "user", "content": str(i)}]},
                  final={"role": "assistant", "content": "x"}, frontier_cost_usd=0.01)
        traces.append(t)
        cluster_of[t.id] = c
        plain[t.id] = {"agree": c == "A", "passed": True, "cost_usd": 0.001}
        if i % 50:  # the steps an example came from are not replayed with examples
            shots[t.id] = {"agree": c in "AB", "passed": True, "cost_usd": 0.002}
        if c == "C":
            tuned[t.id] = {"agree": True, "passed": True, "cost_usd": 0.001}
    learn, held = split_by_time(traces, 0.7)
    variants = [Variant("plain", plain), Variant("fewshot3", shots, few_shot=3)]
    pt, chosen, fallback = table_variants(learn, held, variants, cluster_of, 0.9, 20, "t")
    share = {c: sum(1 for t in held if cluster_of[t.id] == c) / len(held) for c in "ABCD"}
    assert chosen == {"A": "plain", "B": "fewshot3"} and pt.small_share == share["A"] + share["B"] and pt.agreement == 1.0
    assert fallback == sum(1 for t in held if cluster_of[t.id] == "B" and t.id not in shots)
    assert all(plain[t.id]["agree"] is False for t in held if cluster_of[t.id] == "B" and t.id not in shots)
    pt, chosen, _ = table_variants(learn, held, [*variants, Variant("m", tuned, model="m")], cluster_of, 0.9, 20, "t")
    assert chosen == {"A": "plain", "B": "fewshot3", "C": "m"} and pt.small_share == 1 - share["D"] and pt.agreement == 1.0


def replace_policy(p: Any, name: str) -> Any:
    from dataclasses import replace

    return replace(p, policy=name)


def test_a_route_may_start_a_cluster_on_a_fine_tuned_model(scripted_gateway, tmp_path: Path) -> None:
    from smallfleet.learn.table import build_table

    clusters = cluster_traces(workload())
    money = next(c for c in clusters if "dollars" in c.name)
    plain = {"tier": "small", "clusters": [{"id": money.id, "replayed": 40, "agreement": 0.6, "ci_low": 0.45, "ci_high": 0.74}]}
    tuned = {"tier": "small", "model_variant": "small-tuned", "clusters": [
        {"id": money.id, "replayed": 40, "agreement": 1.0, "ci_low": 0.91, "ci_high": 1.0}]}
    tiers = ("small", "large", "frontier")
    (up,) = build_table(clusters, [plain, tuned], tiers, target=0.9)["routes"]  # the tuned model is not in the fleet
    assert up["start"] == "large" and up["model"] is None  # so only the plain replay counts: the small tier falls short
    table = build_table(clusters, [plain, tuned], tiers, target=0.9, models={"small-tuned"})
    (route,) = table["routes"]
    assert route["model"] == "small-tuned" and route["start"] == "small" and "small (small-tuned) agreed" in route["evidence"]
    routes = tmp_path / "routes.json"
    routes.write_bytes(orjson.dumps(table, option=orjson.OPT_NON_STR_KEYS))
    extra = (f'\n[learn]\nroutes = "{routes}"\n[routing.tool_choice]\nstart = "large"\n'
             '[models.small-tuned]\npath = "package:smollm2-135m"\ntier = "small"\n')
    gw = scripted_gateway(extra=extra, answer=lambda req: {"tool_calls": call("convert", amount=40, to="EUR")["tool_calls"]})
    r = httpx.post(gw.base + "/v1/chat/completions", timeout=30, json={"model": "auto", "messages": [
        SYSTEM, {"role": "user", "content": "How much is 40 US dollars in euros today?"}], "tools": TOOLS})
    assert r.headers["x-smallfleet-model"] == "small-tuned" and r.headers["x-smallfleet-tier"] == "small"
    assert len(gw.backends["small-tuned"].calls) == 1 and not gw.backends[gw.cfg.tier_model("small").name].calls
    bad = tmp_path / "bad.json"  # a table naming a model this fleet lacks is refused, saying which
    bad.write_bytes(orjson.dumps(table, option=orjson.OPT_NON_STR_KEYS))
    from smallfleet.errors import ConfigError
    from smallfleet.learn.table import RouteTable

    with pytest.raises(ConfigError, match="'small-tuned', which is not in the fleet"):
        RouteTable(bad, tiers, {"other"})


def test_a_cluster_whose_wrong_answers_its_checks_catch_may_start_small() -> None:
    """Starting on the small tier risks only the wrong answers its checks let through: the caught ones escalate."""
    from smallfleet.learn.report import Variant, split_by_time, table_variants

    traces, cluster_of, plain = [], {}, {}
    for i in range(120):
        c = "caught" if i % 2 else "missed"
        t = Trace(id=f"s{i}", kind="extraction", ts=float(i), request={"messages": [{"role": "user", "content": str(i)}]},
                  final={"role": "assistant", "content": "{}"}, frontier_cost_usd=0.01)
        traces.append(t)
        cluster_of[t.id] = c
        right = i % 4 in (0, 1)  # half of each cluster right
        plain[t.id] = {"agree": right, "passed": right or c == "missed", "cost_usd": 0.001}
    learn, held = split_by_time(traces, 0.7)
    pt, chosen, _ = table_variants(learn, held, [Variant("plain", plain)], cluster_of, 0.9, 20, "t")
    assert chosen == {"caught": "plain"} and pt.agreement == 1.0 and 0.4 < pt.small_share < 0.6
