"""Grounded steps: evidence with numbered citations, the evidence check, weak evidence, `smallfleet ask`."""

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from smallfleet.config import load_config
from smallfleet.engine import Engine
from smallfleet.errors import InvalidRequestError, NotAvailableError
from smallfleet.retrieval import Store
from smallfleet.retrieval.grounded import claims, unsupported
from smallfleet.server import render

from .conftest import write_config

EVIDENCE = ["The Eiffel Tower is a wrought-iron lattice tower in Paris. It is 330 metres tall and was completed in 1889. "
            "Its design is credited to the company of Gustave Eiffel."]


def test_claims_and_unsupported() -> None:
    q = "How tall is the Eiffel Tower?"
    assert unsupported("It is 330 metres tall [1] and stands in Paris, built by Gustave Eiffel in 1889.", EVIDENCE, q) == []
    bad = unsupported('It is 324 m tall, designed by Stephen Sauvestre, "a marvel of iron", and won by Germany.', EVIDENCE, q)
    assert sorted(bad) == sorted(["quote 'a marvel of iron'", "name 'Stephen Sauvestre'", "name 'Germany'", "number 324"])
    assert unsupported("Not in the sources.", EVIDENCE, q) == []  # abstaining claims nothing
    assert ("name", "math.factorial") in claims("Call math.factorial with 5 [2]")
    assert all(c[1] != "2" for c in claims("see [2]"))  # citation markers are not numbers


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("kb")
    (d / "tower.md").write_text("# The Eiffel Tower\n\n" + EVIDENCE[0] + "\n\n# Opening hours\n\nThe tower opens at 9:30 every day.\n")
    (d / "bread.md").write_text("# Sourdough\n\nSourdough needs a starter fed with flour and water. Bake at 230 degrees for 40 minutes.\n")
    s = Store(d / "index.db")
    for f in ("tower.md", "bread.md"):
        s.add(d / f)
    s.close()
    return d / "index.db"


@pytest.fixture
def engine(tmp_path: Path, shared_fleet):
    cfg = load_config(write_config(tmp_path), env={})
    return Engine(cfg, fleet=shared_fleet, ledger=False)


def test_grounded_step_gets_numbered_evidence_and_citations(engine: Engine, kb: Path) -> None:
    async def go():
        req = {"model": "auto", "max_tokens": 40, "messages": [{"role": "user", "content": "How tall is the Eiffel Tower?"}]}
        step = engine.make_step(req, kb_path=kb)
        return await engine.run_step(step)

    out = asyncio.run(go())
    ev = out.step.evidence
    assert ev is not None and not ev.weak and ev.best > 0.5
    assert ev.hits[0].source.endswith("tower.md")
    sys_msgs = [m for m in out.step.messages if m["role"] == "system"]
    assert sys_msgs and "[1]" in sys_msgs[0]["content"] and "330 metres" in sys_msgs[0]["content"]
    assert any(v.check == "evidence_grounded" for a in out.attempts for v in a.verdicts)
    cites = render.summary(out)["citations"]
    assert cites[0]["n"] == 1 and cites[0]["source"].endswith("tower.md") and "relevance" in cites[0]
    assert "x-smallfleet-citations" in render.headers(out)
    asyncio.run(engine.aclose())


def test_weak_evidence_starts_higher_and_says_so(engine: Engine, kb: Path) -> None:
    async def go():
        req = {"model": "auto", "max_tokens": 30, "messages": [{"role": "user", "content": "Who won the 1998 football world cup?"}]}
        return await engine.run_step(engine.make_step(req, kb_path=kb))

    out = asyncio.run(go())
    assert out.step.evidence.weak
    assert "weak evidence: started on large" in out.reason
    assert "weak matches" in out.step.messages[0]["content"]
    asyncio.run(engine.aclose())


def test_missing_knowledge_base_is_a_clear_error(engine: Engine, tmp_path: Path) -> None:
    req = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(NotAvailableError, match="has no index file"):
        asyncio.run(engine.run_step(engine.make_step(req, kb_path=tmp_path / "none.db")))
    with pytest.raises(InvalidRequestError, match="no knowledge base named"):  # a request names a base, never a file
        engine.make_step(req, kb=str(tmp_path / "none.db"))


def test_metadata_and_config_mark_steps_for_grounding(tmp_path: Path, shared_fleet, kb: Path) -> None:
    cfg = load_config(write_config(tmp_path, f'\n[grounding]\nindex = "{kb}"\nkinds = ["generation"]\n'), env={})
    eng = Engine(cfg, fleet=shared_fleet, ledger=False)
    step = eng.make_step({"model": "auto", "messages": [{"role": "user", "content": "Write a poem about towers"}]})
    assert step.kb == "default"
    step = eng.make_step({"model": "auto", "metadata": {"smallfleet_kb": "default"},
                          "messages": [{"role": "user", "content": "Classify: refund. Answer with one of: refund, other"}]})
    assert step.kb == "default" and step.kb_path == kb
    with pytest.raises(InvalidRequestError, match="no knowledge base named"):  # metadata cannot name a file either
        eng.make_step({"model": "auto", "metadata": {"smallfleet_kb": str(kb)}, "messages": [{"role": "user", "content": "x"}]})


def test_ask_cli(kb: Path, tmp_path: Path) -> None:
    env_cfg = write_config(tmp_path)
    p = subprocess.run([sys.executable, "-m", "smallfleet", "--config", str(env_cfg), "ask", "When does the tower open?",
                        "--index", str(kb), "--json", "--max-tokens", "40"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    out = orjson.loads(p.stdout)
    assert out["citations"] and out["citations"][0]["source"].endswith("tower.md") and out["verdict"]
    p = subprocess.run([sys.executable, "-m", "smallfleet", "ask", "anything", "--index", str(tmp_path / "nope.db")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "smallfleet index add" in p.stderr


def test_check_regressions_found_by_the_benchmark() -> None:
    # the check sees the chunk as the model does (its label carries the function name)
    shown = ["[1] (00788.md — calculate_bmi)\nCompute the body mass index from weight_kg and height_m."]
    q = "I weigh 70kg and am 1.75m tall"
    assert unsupported("Call calculate_bmi with weight_kg=70, height_m=1.75 [1]", shown, q) == []  # units glued to numbers
    assert unsupported("calculate_bmi(weight_kg=70, height_m=1.75, verbose=True)", shown, q) == []  # True is a literal
    assert "name 'reserveHotelRoom'" in unsupported("Use reserveHotelRoom", shown, q)  # camelCase is a name
    assert unsupported("It was Mahayana, and not in the sources.", shown, q) == ["name 'Mahayana'"]  # abstention phrase ≠ pass


def test_an_answer_of_only_citations_fails_the_check() -> None:
    from smallfleet.config import KindPolicy
    from smallfleet.models.base import ChatResult
    from smallfleet.retrieval import Hit
    from smallfleet.retrieval.grounded import Evidence, check_evidence_grounded
    from smallfleet.step import Step, StepKind

    step = Step(request={"messages": [{"role": "user", "content": "Which function?"}]}, kind=StepKind.GENERATION)
    step.evidence = Evidence("kb", [Hit(1, "a.md", 0.1, "Compute things.", "calculate_bmi")], [0.8], weak=False)
    pol = KindPolicy("small", ())
    res = ChatResult(model="m", message={"role": "assistant", "content": "[1]"}, finish_reason="stop", tokens_in=1,
                     tokens_out=1, latency_ms=1.0)
    v = check_evidence_grounded(step, res, pol)
    assert v is not None and not v.passed and "only citation" in v.reason
    res.message = {"role": "assistant", "content": "Call calculate_bmi [1]."}
    assert check_evidence_grounded(step, res, pol).passed and step.evidence.cited == [1]


def test_gateway_grounds_on_the_kb_header(gateway, kb: Path) -> None:
    import httpx

    body = {"model": "auto", "max_tokens": 30, "messages": [{"role": "user", "content": "How tall is the Eiffel Tower?"}]}
    name = gateway.knowledge("tower", kb)
    r = httpx.post(gateway.base + "/v1/chat/completions", json=body, headers={"x-smallfleet-kb": name}, timeout=300)
    assert r.status_code == 200, r.text
    assert "x-smallfleet-citations" in r.headers
    cites = r.json()["smallfleet"]["citations"]
    assert cites and cites[0]["source"].endswith("tower.md")
    # a request names a configured base; a path is just an unknown name (nothing is opened, nothing revealed)
    for path in ("/nope/kb.db", "/etc/passwd", str(kb)):
        bad = httpx.post(gateway.base + "/v1/chat/completions", json=body, headers={"x-smallfleet-kb": path}, timeout=60)
        assert bad.status_code == 400 and "no knowledge base named" in bad.json()["error"]["message"]
        assert "[knowledge.NAME]" in bad.json()["error"]["message"]


def test_gateway_kb_metadata_filter(gateway, kb: Path) -> None:
    import httpx

    body = {"model": "auto", "max_tokens": 30, "messages": [{"role": "user", "content": "How tall is the Eiffel Tower?"}]}
    h = {"x-smallfleet-kb": gateway.knowledge("tower", kb), "x-smallfleet-kb-where": "type=md"}
    r = httpx.post(gateway.base + "/v1/chat/completions", json=body, headers=h, timeout=300)
    assert r.status_code == 200, r.text
    assert r.json()["smallfleet"]["citations"][0]["source"].endswith("tower.md")
    bad = httpx.post(gateway.base + "/v1/chat/completions", json=body, headers={**h, "x-smallfleet-kb-where": "type"}, timeout=60)
    assert bad.status_code == 400 and "KEY=VALUE" in bad.json()["error"]["message"]


def test_a_kb_filter_in_metadata_asks_for_grounding(tiny_config) -> None:
    from smallfleet.engine import Engine

    eng = Engine(tiny_config, ledger=False)
    msgs = [{"role": "user", "content": "What is the refund window?"}]
    step = eng.make_step({"messages": msgs, "metadata": {"smallfleet_kb_where": "region=eu,team=support"}})
    assert step.kb == "default" and step.kb_where == {"region": "eu", "team": "support"}
    assert eng.make_step({"messages": msgs}).kb_where is None
    with pytest.raises(InvalidRequestError, match="KEY=VALUE"):
        eng.make_step({"messages": msgs}, kb_where="=eu")
