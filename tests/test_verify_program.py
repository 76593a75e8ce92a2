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
