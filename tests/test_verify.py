"""Verification: arithmetic and provenance checks, the distilled verifier, grounding checks."""

from pathlib import Path

import numpy as np
import pytest

from smallfleet.config import KindPolicy
from smallfleet.errors import InvalidRequestError
from smallfleet.models._toolcalls import make_call
from smallfleet.models.base import ChatResult
from smallfleet.step import Step, StepKind
from smallfleet.verify import Context, ProcessVerifier, train_verifier, ungrounded
from smallfleet.verify.arith import equations, invented, known_values, safe_eval
from smallfleet.verify.checks import check_args_grounded, check_extraction_grounded, check_process, split_steps
from smallfleet.verify.process import MAX_STEPS
from smallfleet.verify.synthetic import perturb, reference_steps

POL = KindPolicy("small", (), True, 0.0)


@pytest.mark.parametrize("text, expr_ok", [
    ("So they have \\(18 - 6 = 12\\) left", [True]),
    ("16 - 3 - 4 = <<16-3-4=9>>9 eggs", [True]),
    ("\\(1/3 \\times 18 = 6\\)", [True]),
    ("She pays $12.40 + $89.00 = $101.40", [True]),
    ("15% of 89 = 13.35", [True]),
    ("2 x 3 = 7", [False]),
    ("\\frac{3}{4} \\cdot 20 = 15", [True]),
    ("10/3 = 3.33 but 10/3 = 3.2", [True, False]),
    ("1,000 + 250 = 1,250", [True]),
    ("(3 + 4) * 2 = 14, then 14 − 4 = 11", [True, False]),
    ("7 × 6 ÷ 2 = 21", [True]),
    ("x = 5 and y = 2", []),
    # GSM8K writes 0.5 as .5
    ("she spends .5*2=<<.5*2=1>>1 hour", [True]),
    (".5*2 = 3 hours", [False]),
    # algebra, units and prose around the numbers: not arithmetic claims, so not judged (these were
    # false "miscalculations" on correct steps)
    ("\\[ x^4 - 7x^2 + 10 = 0. \\]", []),
    ("\\[ 10r_3 - r_3^2 = 25 \\]", []),
    ("Then multiply 200 MB by 2/5: 200 MB * 2/5 = 80 MB", []),
    ("There are 60 students x 2/3 = 40 students", []),
    ("\\[ 98 - 92 = 92n - 91n \\] \\[ 49 - 6 = 3ab \\]", []),
    ("\\sqrt{4 \\cdot 2} = 2\\sqrt{2}", []),
    ("\\gcd(41^2, 41 \\cdot 43) = 41", []),
    ("3/16 = 1/8 + 1/16 = 0.0011_2", []),
    ("194 ÷ 11 = 17 with a remainder of 9", []),
    ("- \\(3^1 = 3\\) (units digit is 3)", [True]),
    # still judged: a negative first number after a word, truncated decimals, whole numbers rounded
    ("The sum is -3 + 11 - 3 - 11 = -8", [False]),
    ("1547 ÷ 3 = 515.66, and 11/4 = 2", [True, False]),
])
def test_equations(text, expr_ok) -> None:
    assert [e.ok for e in equations(text)] == expr_ok


def test_safe_eval_is_arithmetic_only() -> None:
    assert safe_eval("2 ** 10") == 1024
    assert safe_eval("__import__('os')") is None and safe_eval("1/0") is None and safe_eval("9 ** 99999") is None


def test_provenance_flags_invented_numbers() -> None:
    problem = "Janet's ducks lay 16 eggs per day. She eats three for breakfast."
    assert invented("She has 16 - 3 = 13 eggs left", known_values([problem])) == []
    later = known_values([problem, "She has 16 - 3 = 13 eggs left"])  # 13 was derived in an earlier step
    assert invented("She sells 13 * 2.5 = 32.5 and 45 more", later) == [2.5, 45.0]


def test_model_features_are_relative_to_earlier_steps_only() -> None:
    from smallfleet.verify.features import MODEL_NAMES, NAMES, RELATIVE, model_features, trace_features
    from smallfleet.verify.process import ProcessVerifier

    problem = "A shop sells 12 apples at $0.50 each and 3 pies at $4 each."
    steps = ["Apples: 12 * 0.50 = 6 dollars.", "Pies cost 3 * 4 = 12 dollars, which is a longer step with more words in it.",
             "Total 6 + 12 = 18.", "So the answer is 18."]
    x = np.array(trace_features(problem, steps))
    m = model_features(x)
    assert m.shape == (4, len(MODEL_NAMES)) == (4, len(NAMES)) and MODEL_NAMES[0] == "bias"
    rel = [MODEL_NAMES.index(f"{n}_vs_earlier") for n in RELATIVE]
    assert np.all(m[0, rel] == 0)  # the first step has nothing earlier to compare with
    i = NAMES.index("log_len")
    assert m[2, MODEL_NAMES.index("log_len_vs_earlier")] == pytest.approx(x[2, i] - x[:2, i].mean())
    # the relative features of a step do not depend on the steps after it
    prefix = model_features(np.array(trace_features(problem, steps[:2])))
    assert prefix[:, rel] == pytest.approx(m[:2, rel])
    assert len(ProcessVerifier.load().step_scores(problem, steps)) == 4
    assert model_features(np.zeros((0, len(NAMES)))).shape == (0, len(MODEL_NAMES))


def test_synthetic_perturbation_labels_the_changed_step() -> None:
    import random

    steps, annots = reference_steps("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18")
    assert steps == ["Janet sells 16 - 3 - 4 = 9 eggs.", "She makes 9 * 2 = $18."]
    seen = set()
    for seed in range(60):
        out = perturb("Janet's ducks lay 16 eggs. She eats 3 and bakes with 4. $2 each.", steps, annots, random.Random(seed))
        if out:
            new, k, kind = out
            seen.add(kind)
            assert 0 <= k < len(steps) and (new[k] != steps[k] or kind == "skipped")
    assert {"arith", "operation", "altered"} <= seen


def test_shipped_verifier_scores_and_flags() -> None:
    v = ProcessVerifier.load()
    assert v.meta["training_data_sha256"] and v.meta["training_traces"] > 1000 and 0 < v.threshold < 1
    good = v.verify("Tom has 3 apples and buys 5 more. How many?", ["He has 3 + 5 = 8 apples.", "The answer is 8."])
    bad = v.verify("Tom has 3 apples and buys 5 more. How many?", ["He has 3 + 5 = 9 apples.", "The answer is 9."])
    assert len(good.step_scores) == 2 and good.first_error_step == -1
    assert bad.first_error_step == 0 and bad.p_flawed > good.p_flawed
    huge = v.verify("p", ["1 + 1 = 2"] * (MAX_STEPS + 10))
    assert huge.truncated and len(huge.step_scores) == MAX_STEPS
    assert "truncated" in huge.as_dict() and not huge.cut_steps
    long_step = v.verify("p", ["1 + 1 = 2", "3 + 4 = 7 " * 1000])
    assert long_step.cut_steps == [1] and not long_step.truncated
    assert "step(s) 1 were checked on their first" in long_step.as_dict()["truncated"]
    for bad_input in (("p", []), ("p", "not a list"), (None, ["x"]), ("p", [1, 2])):
        with pytest.raises(InvalidRequestError):
            v.verify(*bad_input)
    assert v.verify("∑ π", ["√4 = 2 so 2 × 3 = 6", "naïve text with no numbers"]).first_error_step in (-1, 0, 1)


def test_training_is_reproducible_on_small_data(tmp_path: Path) -> None:
    data = Path(__file__).resolve().parent / "data"  # small fixtures: tests never read ../shared
    a = train_verifier("math", tmp_path / "a.json", data, n_synthetic=60)
    b = train_verifier("math", tmp_path / "b.json", data, n_synthetic=60)
    assert a["training_data_sha256"] == b["training_data_sha256"] and a["weights"] == b["weights"]
    assert a["holdout"] == "math" and a["training_traces"] > 40
    assert ProcessVerifier.load(tmp_path / "a.json").verify("p", ["1 + 1 = 3"]).first_error_step == 0
    with pytest.raises(InvalidRequestError):
        train_verifier("physics", tmp_path / "c.json", data)


def test_grounding_values() -> None:
    ctx = Context(["Order ORD-10422 for Jane Doe, 2 lamps at $12.50, phone +1 (415) 555-0199"])
    assert ungrounded({"order_id": "ORD-10422", "name": "jane doe", "total": 25.0, "qty": 2}, ctx, None) == []
    assert ungrounded({"phone": "415-555-0199"}, ctx, None) == []  # other separators, same digits
    assert ungrounded({"query": "lamps for Jane Doe order"}, ctx, None) == []  # a phrase made of the conversation's words
    assert ungrounded({"query": "warranty of the blue sofa"}, ctx, None) != []
    bad = ungrounded({"order_id": "ORD-99999", "email": "jane@x.com", "amount": 49.99}, ctx, None)
    assert len(bad) == 3 and bad[0].startswith("order_id")
    schema = {"properties": {"status": {"enum": ["open", "closed"]}, "note": {"type": "string"}}}
    assert ungrounded({"status": "closed", "note": "customer asked politely for a quick update today"}, ctx, schema) == []
    # number formats: currency, separators, scale words and suffixes, European decimals, on either side
    money = Context(["Total $1,234.56; deposit 1.5 million; fee €2.345,60; a 3k budget; call 415-555-0199"])
    same = {"a": "1234.56", "b": "USD 1,234.56", "c": "1.5M", "d": "1,500,000", "e": "2345.60", "f": "3000", "g": "$3k",
            "h": "415 555 0199", "i": 1500000}
    assert ungrounded(same, money, None) == []
    assert ungrounded({"a": "1234.65", "b": "2M", "c": "4k", "d": "999"}, money, None) == ["a = '1234.65'", "b = '2M'", "c = '4k'", "d = '999'"]


def _result(content=None, calls=None):
    msg = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = calls
    return ChatResult("m", msg, "stop", 1, 1, 1.0)


def test_grounding_checks() -> None:
    tools = [{"type": "function", "function": {"name": "track", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}}}}}]
    st = Step({"messages": [{"role": "user", "content": "Where is ORD-10422?"}], "tools": tools}, StepKind.TOOL_CHOICE)
    assert check_args_grounded(st, _result(calls=[make_call("track", {"order_id": "ORD-10422"})]), POL).passed
    v = check_args_grounded(st, _result(calls=[make_call("track", {"order_id": "12345"})]), POL)
    assert not v.passed and "track.order_id = '12345'" in v.reason
    cal = Step({"messages": [{"role": "user", "content": "Book the demo for March 5th, 2024 at 2pm."}], "tools": tools},
               StepKind.TOOL_CHOICE)  # ISO date-times match the way people write them (tests/test_verify_dates.py)
    assert check_args_grounded(cal, _result(calls=[make_call("book", {"start": "2024-03-05T14:00:00"})]), POL).passed
    v = check_args_grounded(cal, _result(calls=[make_call("book", {"start": "2024-03-06T14:00:00"})]), POL)
    assert not v.passed and "book.start" in v.reason
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    ex = Step({"messages": [{"role": "user", "content": "Hi, I'm Jane Doe"}],
               "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}, StepKind.EXTRACTION)
    assert check_extraction_grounded(ex, _result('{"name": "Jane Doe"}'), POL).passed
    assert not check_extraction_grounded(ex, _result('{"name": "John Smith"}'), POL).passed


def test_process_check_on_reasoning_answers() -> None:
    st = Step({"messages": [{"role": "user", "content": "Tom has 3 apples and buys 5 more. How many?"}]}, StepKind.REASONING)
    v = check_process(st, _result("He starts with 3.\nHe buys 5, so 3 + 5 = 9.\nThe answer is 9."), POL)
    assert not v.passed and "3 + 5 = 9 is wrong (8)" in v.reason
    assert check_process(st, _result("He starts with 3.\nHe buys 5, so 3 + 5 = 8.\nThe answer is 8."), POL).passed
    assert check_process(st, _result("Eight."), POL) is None  # one step: nothing to check
    assert split_steps("First 2 + 2 = 4. Then 4 * 3 = 12. So 12.") == ["First 2 + 2 = 4.", "Then 4 * 3 = 12.", "So 12."]


def test_label_margin_from_alternatives() -> None:
    import math

    from smallfleet.verify.checks import check_label_margin, label_margins

    schema = {"type": "object", "properties": {"category": {"enum": ["refund", "billing", "feedback"]}}}
    st = Step({"messages": [{"role": "user", "content": "x"}],
               "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}}, StepKind.CLASSIFICATION)
    toks = ['{"', "category", '":', ' "', "ref", "und", '"}']
    tops = [{} for _ in toks]

    def res(alts):
        tops[4] = {k: math.log(v) for k, v in alts.items()}
        return ChatResult("m", {"role": "assistant", "content": "".join(toks)}, "stop", 1, 1, 1.0,
                          token_texts=toks, token_logprobs=[0.0] * len(toks), top_logprobs=list(tops))

    clear = res({"ref": 0.6, "bill": 0.05, "```": 0.3})
    assert label_margins(st, clear)["category"] > 0.8 and check_label_margin(st, clear, POL).passed
    close_call = res({"ref": 0.3, "bill": 0.28, "feed": 0.02})
    v = check_label_margin(st, close_call, POL)
    assert not v.passed and "category: margin" in v.reason
    assert check_label_margin(st, ChatResult("m", {"role": "assistant", "content": "{}"}, "stop", 1, 1, 1.0), POL) is None


EGGS = "Janet has 16 eggs. She eats 3 and bakes with 4. She sells the rest for $2 each. How much does she make?"


def test_outcome_verifier_odds_of_a_wrong_answer() -> None:
    from smallfleet.verify.outcome import FEATURES, outcome_features

    v = ProcessVerifier.load()
    assert v.outcome is not None and v.outcome.meta["cv"]["auroc_all"] > 0.6
    missed = v.verify(EGGS, ["She has 16 - 3 = 13 eggs left.", "13 * 2 = 26", "A: 26"])  # never uses the 4
    sound = v.verify(EGGS, ["She has 16 - 3 - 4 = 9 eggs left.", "9 * 2 = 18", "A: 18"])
    row = dict(zip(FEATURES, outcome_features(EGGS, ["She has 16 - 3 = 13 eggs left.", "13 * 2 = 26", "A: 26"], missed.step_scores)))
    assert row["unused_quantities"] == 1 and row["share_unused"] == 0.25
    assert missed.p_wrong is not None and sound.p_wrong is not None and missed.p_wrong > sound.p_wrong
    assert "p_wrong" in sound.as_dict()
    # money has cents: a sound refund sum is not "likely wrong" for being fractional (GSM8K answers are whole)
    refund = v.verify("I ordered a lamp for $89.00 and a bulb for $12.40. Both arrived broken. Please refund both.",
                      ["The lamp cost $89.00.", "The bulb cost $12.40.", "Total: 89.00 + 12.40 = 101.40", "The amount owed is $101.40."])
    assert refund.p_wrong is not None and refund.p_wrong < 0.5
    # another artifact's step scores are not what the outcome model was trained on: no p_wrong then
    assert ProcessVerifier.load(Path(__file__).resolve().parents[1] / "smallfleet" / "verify" / "data" / "verifier-v1.json"
                                ).verify(EGGS, ["9 * 2 = 18", "A: 18"]).p_wrong is None


def test_process_check_escalates_a_likely_wrong_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    from smallfleet.verify import checks

    st = Step({"messages": [{"role": "user", "content": EGGS}]}, StepKind.REASONING)
    answer = "She has 16 - 3 = 13 eggs left.\nShe makes 13 * 2 = 26 dollars.\nThe answer is 26."
    v = checks.verifier()
    p = v.verify(EGGS, split_steps(answer)).p_wrong
    monkeypatch.setattr(v.outcome, "threshold", p - 0.01)
    verdict = check_process(st, _result(answer), POL)
    assert not verdict.passed and "more likely wrong than right" in verdict.reason and verdict.score == pytest.approx(p)
    monkeypatch.setattr(v.outcome, "threshold", p + 0.01)
    assert check_process(st, _result(answer), POL).passed


def test_outcome_training_on_small_data(tmp_path: Path) -> None:
    from smallfleet.errors import NotAvailableError
    from smallfleet.verify import OutcomeModel, train_outcome

    data = Path(__file__).resolve().parent / "data"  # small fixtures: tests never read ../shared
    a = train_outcome(tmp_path / "a.json", data, folds=3)
    b = train_outcome(tmp_path / "b.json", data, folds=3)
    assert a["solutions"] == 240 and a["training_data_sha256"] == b["training_data_sha256"] and a["weights"] == b["weights"]
    m = OutcomeModel.load(tmp_path / "a.json")
    assert 0.0 < m.p_wrong(EGGS, ["9 * 2 = 18", "A: 18"], [0.1, 0.1]) < 1.0
    with pytest.raises(InvalidRequestError):
        train_outcome(tmp_path / "c.json", data, folds=1)
    with pytest.raises(NotAvailableError, match="missing"):
        train_outcome(tmp_path / "c.json", tmp_path / "nowhere")


def test_judge_request_and_reply() -> None:
    from smallfleet.verify.judge import judge_request, read_judgement

    req = judge_request("p?", ["a = 1", "b = 2"])
    assert "1. a = 1\n2. b = 2" in req["messages"][0]["content"] and req["temperature"] == 0.0
    assert read_judgement("2", 2) == 1 and read_judgement("0", 2) == -1 and read_judgement(" Step 1.", 3) == 0
    assert read_judgement("7", 3) is None and read_judgement("no idea", 3) is None and read_judgement("", 3) is None
