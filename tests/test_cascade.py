"""The cascade on real models: escalation on a failed check, bounded, recorded, budgeted."""

import asyncio
from dataclasses import replace

import pytest

from smallfleet.checks import Verdict, register_check
from smallfleet.config import KindPolicy
from smallfleet.engine import Engine
from smallfleet.errors import BudgetExceededError
from smallfleet.ledger import Ledger
from smallfleet.server import render
from smallfleet.step import StepKind

pytestmark = pytest.mark.model


def _engine(cfg, fleet, tmp_path, **routing):
    cfg = replace(cfg, routing={**cfg.routing, **routing}, ledger_path=tmp_path / "l.db")
    return Engine(cfg, fleet=fleet, ledger=Ledger(cfg.ledger_path))


# A check registered through the public plug-in interface: rejects answers of the small tier.
register_check("reject_small_tier", lambda step, res, pol: Verdict("reject_small_tier", res.model != "smollm2", "test rule"))


def test_failed_check_escalates_once_and_both_attempts_are_recorded(tiny_config, shared_fleet, tmp_path) -> None:
    pol = KindPolicy("small", ("nonempty", "reject_small_tier"), True, 0.0)
    eng = _engine(tiny_config, shared_fleet, tmp_path, generation=pol)
    req = {"model": "auto", "messages": [{"role": "user", "content": "Write one word"}], "max_tokens": 5}
    out = asyncio.run(eng.complete(req, run_id="run-a"))
    assert [a.spec.name for a in out.attempts] == ["smollm2", "qwen05"]  # stand-in of qwen05 is not retried
    assert out.escalated and out.final.tier == "large" and out.final.passed
    h = render.headers(out)
    assert h["x-smallfleet-escalated"] == "true" and h["x-smallfleet-model"] == "qwen05"
    rows = eng.ledger.attempts(step_id=out.step.step_id)
    assert [(r["tier"], r["passed"], r["escalated"], r["final"]) for r in rows] == [("small", 0, 1, 0), ("large", 1, 0, 1)]
    assert rows[0]["cost_usd"] > 0 and rows[1]["frontier_cost_usd"] > rows[1]["cost_usd"]


def test_no_escalation_when_policy_says_so(tiny_config, shared_fleet, tmp_path) -> None:
    pol = KindPolicy("small", ("reject_small_tier",), False, 0.0)
    eng = _engine(tiny_config, shared_fleet, tmp_path, generation=pol)
    out = asyncio.run(eng.complete({"messages": [{"role": "user", "content": "Write one word"}], "max_tokens": 4}))
    assert len(out.attempts) == 1 and not out.final.passed and "reject_small_tier" in out.reason


def test_passthrough_model_is_not_escalated(tiny_config, shared_fleet, tmp_path) -> None:
    pol = KindPolicy("small", ("reject_small_tier",), True, 0.0)
    eng = _engine(tiny_config, shared_fleet, tmp_path, generation=pol)
    out = asyncio.run(eng.complete({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}))
    assert len(out.attempts) == 1 and out.final.spec.name == "smollm2"


def test_budget_exceeded_stops_the_run_and_writes_nothing(tiny_config, shared_fleet, tmp_path) -> None:
    eng = _engine(tiny_config, shared_fleet, tmp_path)
    req = {"messages": [{"role": "user", "content": "Write one word"}], "max_tokens": 4}
    with pytest.raises(BudgetExceededError):
        asyncio.run(eng.complete(req, run_id="tight", budget_usd=1e-12))
    assert eng.ledger.attempts(run_id="tight") == []


def test_extraction_step_end_to_end(tiny_config, shared_fleet, tmp_path) -> None:
    eng = _engine(tiny_config, shared_fleet, tmp_path)
    schema = {"type": "object", "properties": {"order_id": {"type": "string", "maxLength": 12}}, "required": ["order_id"]}
    out = asyncio.run(eng.complete({"messages": [{"role": "user", "content": "Order ORD-12345 is late. Extract the order id."}],
                                    "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": schema}},
                                    "max_tokens": 30}))
    assert out.step.kind == StepKind.EXTRACTION
    assert any(v.check == "schema_valid" and v.passed for a in out.attempts for v in a.verdicts)


def _reasoning_attempt(cfg, model: str, answer: str, verdict):
    from smallfleet.models import ChatResult
    from smallfleet.outcome import Attempt
    from smallfleet.step import Step

    step = Step({"messages": [{"role": "user", "content": "Tom has 3 apples and buys 5 more. How many now?"}]}, StepKind.REASONING)
    res = ChatResult(model, {"role": "assistant", "content": answer}, "stop", 20, 20, 1.0)
    spec = cfg.models[model]
    return step, Attempt(spec, spec.tier, res, verdicts=[verdict], cost_usd=1e-6)


def test_judge_decides_only_where_the_verifier_is_unsure(tiny_config, shared_fleet, tmp_path) -> None:
    from smallfleet.config import VerifySettings

    cfg = replace(tiny_config, verify=VerifySettings(judge="qwen05", band=(0.3, 0.6)))
    eng = _engine(cfg, shared_fleet, tmp_path)
    answer = "He starts with 3 apples.\nHe buys 5 more, so 3 + 5 = 8.\nThe answer is 8."
    # unsure: the judge (a real model call) replaces the verdict, and its cost joins the attempt's
    step, att = _reasoning_attempt(cfg, "smollm2", answer, Verdict("process", True, "", 0.45))
    asyncio.run(eng.cascade.judge.review(att, step))
    v = att.verdicts[0]
    assert v.check == "process" and "unsure (0.45); judge qwen05" in v.reason and att.cost_usd > 1e-6
    assert v.passed == ("every step is correct" in v.reason)  # "gave no step number" keeps the verifier's pass
    # sure either way, or a recomputed arithmetic error: not judged
    for score in (0.1, 0.9, 1.0):
        step, att = _reasoning_attempt(cfg, "smollm2", answer, Verdict("process", score < 0.5, "", score))
        asyncio.run(eng.cascade.judge.review(att, step))
        assert att.verdicts[0].reason == "" and att.cost_usd == 1e-6
    # never the model that wrote the answer
    step, att = _reasoning_attempt(cfg, "qwen05", answer, Verdict("process", False, "step 2 looks wrong", 0.5))
    asyncio.run(eng.cascade.judge.review(att, step))
    assert not att.verdicts[0].passed and "not judged: the judge qwen05 wrote it" in att.verdicts[0].reason
    assert att.cost_usd == 1e-6


def test_prompt_style_classification_escalates_an_answer_outside_its_labels(scripted_gateway) -> None:
    """'answer with one of …' with no schema: a small model's off-list answer is caught and escalated."""
    import httpx

    def answer(req):
        return "a late parcel" if answer.calls == 0 else "shipping"  # type: ignore[attr-defined]

    def counted(req):
        out = answer(req)
        answer.calls += 1  # type: ignore[attr-defined]
        return out

    answer.calls = 0  # type: ignore[attr-defined]
    gw = scripted_gateway(answer=counted)
    r = httpx.post(gw.base + "/v1/chat/completions", json={"model": "auto", "messages": [
        {"role": "user", "content": "Route this ticket. Answer with one of: billing, shipping, returns.\n\nTicket: my parcel is late"}]},
        timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["x-smallfleet-step-kind"] == "classification"
    assert r.headers["x-smallfleet-escalated"] == "true" and r.json()["choices"][0]["message"]["content"] == "shipping"
    first = r.json()["smallfleet"]["attempts"][0]
    assert any(c["check"] == "label_in_set" and not c["passed"] for c in first["checks"])
