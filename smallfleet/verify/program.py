"""Program of thought: run a model-written Python function in a sandbox and return its number.

A reasoning step's answer can be cross-checked by having the small model write the computation as a
short program (``def solve(): ... return answer``) and running it: agreement between the written-out
reasoning and the program is a strong sign the answer is right; disagreement or a failed program is a
signal to escalate (#18). The code comes from a model that may have read injected text, so it is
treated as hostile:

1. **Allow-list of syntax** (:func:`check_program`): functions, assignments, arithmetic, comparisons,
   ``if``/``for``/``while``, comprehensions, calls of a fixed set of builtins and of ``math``,
   ``fractions``, ``decimal`` and ``datetime``. No attribute whose name starts with ``_`` (the way out
   of every Python sandbox is a dunder), no ``import`` of anything else, no ``with``, ``try``,
   ``class``, ``lambda``, ``global`` or ``yield``, and no name that is neither defined in the program
   nor allowed.
2. **A separate process** (``python -I -S``: no site packages, no environment, no user paths) with a
   CPU-time and an address-space limit, a wall-clock timeout, no stdin, and builtins cut down to the
   allowed ones. It prints one JSON line; anything else is a failure.

Failures are results, never exceptions: :class:`ProgramResult` says "rejected" (before running),
"failed" (raised, killed, no number) or gives the value.
"""

from __future__ import annotations

import ast
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

MAX_SOURCE = 8_000  # characters: a GSM8K solution is a few hundred
MAX_NODES = 2_000
MODULES = ("math", "fractions", "decimal", "datetime")
BUILTINS = ("abs", "min", "max", "round", "sum", "len", "range", "int", "float", "str", "bool", "divmod", "pow",
            "sorted", "reversed", "list", "tuple", "dict", "set", "enumerate", "zip", "any", "all", "isinstance")
FROM_IMPORTS = {"fractions": {"Fraction"}, "decimal": {"Decimal"}, "datetime": {"date", "datetime", "timedelta"},
                "math": {n for n in dir(math) if not n.startswith("_")}}
_NODES = (
    ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.Assign, ast.AugAssign, ast.AnnAssign,
    ast.Expr, ast.If, ast.For, ast.While, ast.Break, ast.Continue, ast.Pass, ast.Import, ast.ImportFrom, ast.alias,
    ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call, ast.keyword, ast.Attribute, ast.Name,
    ast.Constant, ast.List, ast.Tuple, ast.Dict, ast.Set, ast.Subscript, ast.Slice, ast.ListComp, ast.SetComp,
    ast.DictComp, ast.GeneratorExp, ast.comprehension, ast.Starred, ast.JoinedStr, ast.FormattedValue,
    ast.Load, ast.Store, ast.Del,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd, ast.Not, ast.And, ast.Or,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot,
)
ENTRY = ("solve", "solution", "main")

# The child: limits first, then the program with cut-down builtins; one JSON line out.
_CHILD = r"""
import json, resource, sys
cpu, mem = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))
import builtins, math, fractions, decimal, datetime, types
source, entry, allowed = sys.stdin.read(), sys.argv[3], sys.argv[4].split(",")
# a module's public names only: fractions and datetime carry `sys` as an attribute
shown = json.loads(sys.argv[5])
mods = {m: types.SimpleNamespace(**{n: getattr(mod, n) for n in shown[m]})
        for m, mod in (("math", math), ("fractions", fractions), ("decimal", decimal), ("datetime", datetime))}
def _import(name, globals=None, locals=None, fromlist=(), level=0):
    if name not in mods or level:
        raise ImportError(name)
    return mods[name]
safe = {n: getattr(builtins, n) for n in allowed}
safe["__import__"] = _import
env = {"__builtins__": safe, "__name__": "program"}
try:
    exec(compile(source, "<program>", "exec"), env)
    value = env[entry]()
    if isinstance(value, (fractions.Fraction, decimal.Decimal)):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        out = {"error": "returned " + type(value).__name__ + ", not a number"}
    elif value != value or value in (float("inf"), float("-inf")):
        out = {"error": "returned " + repr(value)}
    else:
        out = {"value": value}
except MemoryError:
    out = {"error": "memory limit"}
except RecursionError:
    out = {"error": "recursion too deep"}
except BaseException as e:
    out = {"error": type(e).__name__ + ": " + str(e)[:200]}
sys.stdout.write(json.dumps(out))
"""


@dataclass(frozen=True)
class ProgramResult:
    value: float | None = None
    status: str = "ok"  # ok | rejected (not run) | failed (ran: raised, killed, no number)
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.value is not None


class ProgramRejected(ValueError):
    """The source is outside what the sandbox runs."""


def extract_code(text: str) -> str:
    """The code of a model's answer: the first fenced block if there is one, else the text."""
    if "```" in text:
        parts = text.split("```")
        if len(parts) >= 3:
            block = parts[1]
            first, _, rest = block.partition("\n")
            return rest if first.strip().lower() in ("python", "py", "") else block
    return text


def check_program(source: str) -> str:
    """The entry function's name, or ProgramRejected saying what is not allowed."""
    if len(source) > MAX_SOURCE:
        raise ProgramRejected(f"program longer than {MAX_SOURCE} characters")
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise ProgramRejected(f"not valid Python: {type(e).__name__}") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise ProgramRejected(f"program of more than {MAX_NODES} syntax nodes")
    defined = set(BUILTINS) | set(MODULES)
    for n in nodes:
        if isinstance(n, ast.FunctionDef):
            defined.add(n.name)
            defined.update(a.arg for a in [*n.args.posonlyargs, *n.args.args, *n.args.kwonlyargs])
        elif isinstance(n, ast.arg):
            defined.add(n.arg)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            defined.add(n.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            defined.update(a.asname or a.name for a in n.names)
    modules = {m: m for m in MODULES}  # names bound to a module (import x as y) -> the module
    for n in nodes:
        if isinstance(n, ast.Import):
            modules.update({a.asname or a.name: a.name for a in n.names if a.name in MODULES})
    for n in nodes:
        if not isinstance(n, _NODES):
            raise ProgramRejected(f"{type(n).__name__} is not allowed")
        if isinstance(n, ast.Attribute) and n.attr.startswith("_"):
            raise ProgramRejected(f"attribute {n.attr!r} is not allowed")
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in modules \
                and n.attr not in FROM_IMPORTS[modules[n.value.id]]:
            raise ProgramRejected(f"{n.value.id}.{n.attr} is not allowed")
        if isinstance(n, ast.Name) and (n.id.startswith("__") or (isinstance(n.ctx, ast.Load) and n.id not in defined)):
            raise ProgramRejected(f"name {n.id!r} is not allowed")
        if isinstance(n, ast.FunctionDef) and n.decorator_list:
            raise ProgramRejected("decorators are not allowed")
        if isinstance(n, ast.Import) and any(a.name not in MODULES for a in n.names):
            raise ProgramRejected(f"import of {', '.join(a.name for a in n.names)} is not allowed")
        if isinstance(n, ast.ImportFrom) and (n.level or n.module not in FROM_IMPORTS
                                              or any(a.name not in FROM_IMPORTS[n.module] for a in n.names)):
            raise ProgramRejected(f"import from {n.module} is not allowed")
    tops = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    entry = next((e for e in ENTRY if e in tops), None)
    if entry is None:
        raise ProgramRejected("no solve() function")
    return entry


def run_program(source: str, *, timeout_s: float = 3.0, cpu_s: int = 2, memory_mb: int = 256) -> ProgramResult:
    """Check and run ``source``'s ``solve()`` in a fresh, limited process (never raises)."""
    import time

    t0 = time.perf_counter()
    try:
        entry = check_program(source)
    except ProgramRejected as e:
        return ProgramResult(status="rejected", error=str(e), seconds=time.perf_counter() - t0)
    shown = json.dumps({m: sorted(names) for m, names in FROM_IMPORTS.items()})
    cmd = [sys.executable, "-I", "-S", "-c", _CHILD, str(cpu_s), str(memory_mb << 20), entry, ",".join(BUILTINS), shown]
    try:
        done = subprocess.run(cmd, input=source, capture_output=True, text=True, timeout=timeout_s, env={}, cwd="/",
                              close_fds=True)
    except subprocess.TimeoutExpired:
        return ProgramResult(status="failed", error=f"ran past {timeout_s:g} s", seconds=time.perf_counter() - t0)
    secs = time.perf_counter() - t0
    try:
        out = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    except (json.JSONDecodeError, IndexError):
        out = {}
    if "value" in out:
        return ProgramResult(value=float(out["value"]), seconds=secs)
    why = out.get("error") or ("killed (CPU limit)" if done.returncode in (-9, -24, 137, 152) else
                               f"exited with {done.returncode}")
    return ProgramResult(status="failed", error=str(why)[:300], seconds=secs)


# -- asking the model for the program, and comparing with its written-out answer -----------------------
PROGRAM_PROMPT = (
    "Write a Python function solve() that computes the answer to the problem below and returns it as a number. "
    "Use only plain Python (math, fractions, decimal and datetime may be imported). Reply with the code only.")
_EXAMPLE_Q = "A shop sells pens at $3 each. Ana buys 4 pens and pays with a $20 bill. How much change does she get?"
_EXAMPLE_A = "```python\ndef solve():\n    price = 3\n    pens = 4\n    paid = 20\n    return paid - price * pens\n```"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_FINAL = re.compile(r"(?:####|answer is|answer:|=)\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", re.I)


def program_request(problem: str, max_tokens: int = 320) -> dict[str, Any]:
    """The chat request that asks a model for ``solve()`` (one worked example, temperature 0)."""
    return {"messages": [{"role": "system", "content": PROGRAM_PROMPT},
                         {"role": "user", "content": _EXAMPLE_Q}, {"role": "assistant", "content": _EXAMPLE_A},
                         {"role": "user", "content": problem}],
            "max_tokens": max_tokens, "temperature": 0}


def final_number(text: str) -> float | None:
    """The number a written-out answer ends on: after '####', 'the answer is', a last '=', else its last number."""
    found = _FINAL.findall(text) or _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def same_number(a: float | None, b: float | None) -> bool:
    """Two answers are the same figure: equal up to float noise (a program's 0.1 + 0.2 is 0.3)."""
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def agreement(answer: float | None, program: ProgramResult) -> str:
    """What the program says about an answer: agree | disagree | program failed | no answer."""
    if not program.ok:
        return "program failed"
    if answer is None:
        return "no answer"
    return "agree" if same_number(answer, program.value) else "disagree"
