"""The program-of-thought sandbox: model-written code that computes, and code that tries not to."""

from __future__ import annotations

import pytest

from smallfleet.verify.program import check_program, extract_code, run_program

GOOD = '''
from fractions import Fraction
import math

def solve():
    eggs_per_day = 16
    eaten = 3 + 4
    price = Fraction(2)
    total = sum(x for x in range(1))  # comprehensions are fine
    return (eggs_per_day - eaten) * price + total + math.floor(0.5)
'''


def test_a_plain_computation_runs() -> None:
    r = run_program(GOOD)
    assert r.ok and r.value == 18.0 and r.seconds < 3


def test_code_is_taken_from_a_fenced_answer() -> None:
    assert extract_code("Here:\n```python\ndef solve():\n    return 2\n```\nDone.").strip() == "def solve():\n    return 2"
    assert run_program(extract_code("```\ndef solution():\n    return 7 / 2\n```")).value == 3.5


@pytest.mark.parametrize("src,why", [
    ("import os\ndef solve():\n    return 1", "import of os"),
    ("from subprocess import run\ndef solve():\n    return 1", "import from subprocess"),
    ("def solve():\n    return open('/etc/passwd').read()", "name 'open'"),
    ("def solve():\n    return ().__class__.__bases__[0].__subclasses__()", "attribute '__"),
    ("def solve():\n    return __import__('os').getpid()", "name '__import__'"),
    ("def solve():\n    return eval('1+1')", "name 'eval'"),
    ("def solve():\n    f = lambda: 1\n    return f()", "Lambda"),
    ("def solve():\n    try:\n        return 1\n    except Exception:\n        return 2", "Try"),
    ("class A:\n    pass\ndef solve():\n    return 1", "ClassDef"),
    ("def solve():\n    global x\n    return 1", "Global"),
    ("def solve():\n    return getattr(1, 'real')", "name 'getattr'"),
    ("import fractions\ndef solve():\n    return fractions.sys.modules['os'].getpid()", "fractions.sys"),
    ("import datetime as d\ndef solve():\n    return d.sys.version_info[0]", "d.sys"),
    ("x = 1", "no solve()"),
    ("def solve(:\n", "not valid Python"),
    ("def solve():\n    return 1\n" + "#" * 9000, "longer than"),
])
def test_escapes_are_rejected_before_running(src: str, why: str) -> None:
    r = run_program(src)
    assert r.status == "rejected" and why in r.error and r.value is None


@pytest.mark.parametrize("src,why", [
    ("def solve():\n    while True:\n        pass", "killed"),
    ("def solve():\n    return 10 ** 10 ** 9", "killed"),
    ("def solve():\n    return len([0] * 10 ** 10)", "memory"),
    ("def solve():\n    return 1 / 0", "zerodivisionerror"),
    ("def solve():\n    return 'forty'", "not a number"),
    ("def solve():\n    return float('nan')", "nan"),
    ("def solve():\n    return solve()", "recursion"),
])
def test_runaway_or_wrong_programs_fail_within_limits(src: str, why: str) -> None:
    r = run_program(src, timeout_s=5, cpu_s=1)
    assert r.status == "failed" and why in r.error.lower() and r.seconds < 5, r


def test_modules_in_the_child_show_their_public_names_only() -> None:
    # past the syntax check (a name bound to the module by assignment), the child's module has no `sys`
    r = run_program("import fractions\ndef solve():\n    m = [fractions][0]\n    return len(str(m.sys))")
    assert r.status == "failed" and "AttributeError" in r.error


def test_the_child_sees_no_environment_or_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMALLFLEET_SECRET", "hunter2")
    # even a permitted module cannot reach the process: datetime/math expose nothing that does
    r = run_program("import datetime\ndef solve():\n    return (datetime.date(2026, 12, 1) - datetime.date(2026, 1, 1)).days")
    assert r.ok and r.value == 334


def test_check_program_names_the_entry() -> None:
    assert check_program("def helper(x):\n    return x\ndef solution():\n    return helper(2)") == "solution"


def test_final_number_and_agreement() -> None:
    from smallfleet.verify.program import ProgramResult, agreement, final_number

    assert final_number("She pays 3 * 4 = 12, so 20 - 12 = 8.\n#### 8") == 8.0
    assert final_number("The answer is 1,250 dollars.") == 1250.0
    assert final_number("no numbers here") is None
    assert agreement(8.0, ProgramResult(value=8.0)) == "agree"
    assert agreement(8.0, ProgramResult(value=7.5)) == "disagree"
    assert agreement(None, ProgramResult(value=7.5)) == "no answer"
    assert agreement(8.0, ProgramResult(status="failed", error="x")) == "program failed"


@pytest.mark.model
def test_the_small_model_writes_a_program_that_runs(shared_fleet) -> None:
    """The local 0.5B writes solve() for a word problem; the sandbox runs it."""
    import asyncio

    from smallfleet.verify.program import program_request

    spec = shared_fleet.config.tier_model("large")  # the tiny fleet's 0.5B coder
    res = asyncio.run(shared_fleet.get(spec.name).chat(program_request(
        "Tom has 12 marbles. He gives 5 to his sister and then buys 9 more. How many marbles does he have now?")))
    r = run_program(extract_code(res.content or ""))
    assert r.ok and r.value == 16.0, (res.content, r)


# -- the cross-check in the cascade (scripted models) --------------------------------------------------
def hand_score(samples: int = 3):  # type: ignore[no-untyped-def]
    """A score with known weights: a program that agrees makes p 0.95; one that does not, 0.05, which is inside
    the sampling band, where samples that all agree lift it to 0.99."""
    import numpy as np

    from smallfleet.verify.score import BASE, FULL, Logistic, ReasoningScore

    wb = np.zeros(len(BASE))
    wb[BASE.index("program_agree")] = 6.0
    wb[BASE.index("no_answer")] = wb[BASE.index("arith_wrong")] = -6.0
    wf = np.concatenate([wb, [8.0, 0.0]])
    return ReasoningScore(Logistic(wb, -3.0, np.zeros(len(BASE)), np.ones(len(BASE))),
                          Logistic(wf, -3.0, np.zeros(len(FULL)), np.ones(len(FULL))), 0.9, (0.02, 0.9), samples)


def _engine(tmp_path, programs, answers, monkeypatch, score=None, extra: str = ""):  # type: ignore[no-untyped-def]
    """Scripted models: ``programs`` and ``answers`` by model name (a str for all; a callable gets the request)."""
    from smallfleet.config import load_config
    from smallfleet.engine import Engine
    from smallfleet.errors import NotAvailableError
    from smallfleet.fleet import Fleet
    from smallfleet.models import FunctionBackend
    from smallfleet.verify.program import PROGRAM_PROMPT
    from smallfleet.verify.score import ReasoningScore
    from tests.conftest import write_config

    def load(cls, path=None):  # type: ignore[no-untyped-def]
        if score is None:
            raise NotAvailableError("no score in this test")
        return score

    monkeypatch.setattr(ReasoningScore, "load", classmethod(load))
    cfg = load_config(write_config(tmp_path, '\n[verify]\nprogram = true\n' + extra +
                                   '[routing.reasoning]\nstart = "small"\nchecks = ["nonempty"]\n'), env={})

    def pick(table, name, req):  # type: ignore[no-untyped-def]
        v = table if isinstance(table, str) else table[name]
        return v(req) if callable(v) else v

    def answer_for(name: str):  # type: ignore[no-untyped-def]
        def fn(req):  # type: ignore[no-untyped-def]
            if req["messages"][0].get("content") == PROGRAM_PROMPT:
                return pick(programs, name, req)
            return pick(answers, name, req)
        return fn

    backends = {n: FunctionBackend(s, answer_for(n)) for n, s in cfg.models.items() if not s.stands_in_for}
    return Engine(cfg, fleet=Fleet(cfg, backends=backends), ledger=False)


PROBLEM = {"model": "auto", "messages": [{"role": "user", "content": "Ana buys 4 pens at $3 and pays with $20. Step by step: "
                                                                     "how much change does she get?"}]}
CODE = "```python\ndef solve():\n    return 20 - 4 * 3\n```"


def _run(eng, step_kind: str = "reasoning"):  # type: ignore[no-untyped-def]
    import asyncio

    async def go():  # type: ignore[no-untyped-def]
        try:
            return await eng.complete(PROBLEM, step_kind=step_kind)
        finally:
            await eng.aclose()

    return asyncio.run(go())


def _verdict(att, name):  # type: ignore[no-untyped-def]
    return next(v for v in att.verdicts if v.check == name)


# without a fitted score the program's agreement decides alone
def test_an_answer_the_program_agrees_with_stays_on_the_small_tier(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    out = _run(_engine(tmp_path, CODE, {"smollm2": "4 * 3 = 12; 20 - 12 = 8\n#### 8", "qwen05": "#### 8"}, monkeypatch))
    v = _verdict(out.attempts[0], "program")
    assert v.passed and "agrees (8)" in v.reason and "20 - 4 * 3" in v.reason
    assert [a.tier for a in out.attempts] == ["small"]


def test_an_answer_the_program_contradicts_escalates(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    out = _run(_engine(tmp_path, CODE, {"smollm2": "4 * 3 = 12; 20 - 12 = 9\n#### 9", "qwen05": "#### 8"}, monkeypatch))
    first = _verdict(out.attempts[0], "program")
    assert not first.passed and not first.advisory and "computes 8" in first.reason and "says 9" in first.reason
    assert [a.tier for a in out.attempts][:2] == ["small", "large"] and out.final.result.content == "#### 8"


def test_a_program_that_fails_is_recorded_not_fatal(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    out = _run(_engine(tmp_path, "def solve():\n    while True:\n        pass", {"smollm2": "#### 8", "qwen05": "#### 8"}, monkeypatch))
    v = _verdict(out.attempts[0], "program")
    assert v.passed and "not cross-checked: the program failed" in v.reason and [a.tier for a in out.attempts] == ["small"]


def test_other_step_kinds_are_not_cross_checked(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    out = _run(_engine(tmp_path, CODE, {"smollm2": "#### 9", "qwen05": "#### 9"}, monkeypatch, hand_score()), step_kind="generation")
    assert all(v.check not in ("program", "reasoning") for a in out.attempts for v in a.verdicts)


# with the combined score: one `reasoning` verdict decides, the signals it weighed stay advisory
def test_the_score_accepts_an_answer_its_program_agrees_with(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    eng = _engine(tmp_path, CODE, {"smollm2": "4 * 3 = 12\n20 - 12 = 8\n#### 8", "qwen05": "#### 8"}, monkeypatch, hand_score())
    small = eng.fleet.get("smollm2")
    out = _run(eng)
    a = out.attempts[0]
    r = _verdict(a, "reasoning")
    assert r.passed and r.score is not None and r.score > 0.9 and "program agree (8)" in r.reason
    assert _verdict(a, "program").advisory and [x.tier for x in out.attempts] == ["small"]
    assert not any(c.get("seed") is not None for c in small.calls), "a decided score draws no samples"


def test_samples_in_the_band_decide_when_the_program_disagrees(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # the program says 8, the answer 9; three samples all say 9: the full score accepts
    eng = _engine(tmp_path, CODE, {"smollm2": "She gets 9 back.\n#### 9", "qwen05": "#### 8"}, monkeypatch, hand_score())
    small = eng.fleet.get("smollm2")
    out = _run(eng)
    r = _verdict(out.attempts[0], "reasoning")
    assert r.passed and "3/3 samples agree" in r.reason and [a.tier for a in out.attempts] == ["small"]
    assert sorted(c["seed"] for c in small.calls if c.get("seed") is not None) == [0, 1, 2]


def test_samples_that_disagree_escalate(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def unsure(req):  # type: ignore[no-untyped-def]
        return f"#### {9 + (req.get('seed') or 0)}"  # greedy 9, samples 9, 10, 11

    out = _run(_engine(tmp_path, CODE, {"smollm2": unsure, "qwen05": "#### 8"}, monkeypatch, hand_score()))
    r = _verdict(out.attempts[0], "reasoning")
    assert not r.passed and "1/3 samples agree" in r.reason
    assert [a.tier for a in out.attempts][:2] == ["small", "large"] and out.final.passed


def test_no_samples_when_configured_off(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    eng = _engine(tmp_path, CODE, {"smollm2": "#### 9", "qwen05": "#### 8"}, monkeypatch, hand_score(), extra="samples = 0\n")
    small = eng.fleet.get("smollm2")
    out = _run(eng)
    assert not _verdict(out.attempts[0], "reasoning").passed and "samples" not in _verdict(out.attempts[0], "reasoning").reason
    assert not any(c.get("seed") is not None for c in small.calls)


def test_an_unverified_top_tier_offers_the_cross_checked_figure(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # the small model says 9 and its program 8; the large one says 7 and its program 9: no tier verifies, and
    # the large model's program agrees with the small model's answer
    progs = {"smollm2": "def solve():\n    return 8", "qwen05": "def solve():\n    return 9"}
    out = _run(_engine(tmp_path, progs, {"smollm2": "#### 9", "qwen05": "#### 7"}, monkeypatch, hand_score(),
                       extra="samples = 0\n"))
    assert not out.final.passed and out.verdict.startswith("fail:reasoning")
    assert out.crosschecked == "9 (a program by qwen05 agrees with the answer of smollm2)"
    assert "cross-checked figure 9" in out.reason and "return 9" in out.reason
    from smallfleet.server.render import headers

    assert headers(out)["x-smallfleet-crosschecked"] == out.crosschecked


def test_a_verified_answer_offers_no_figure(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    out = _run(_engine(tmp_path, CODE, {"smollm2": "#### 8", "qwen05": "#### 8"}, monkeypatch, hand_score()))
    assert out.final.passed and out.crosschecked is None
