"""Full checks on a reasoning step: recompute its arithmetic, trace where its numbers come from.

- ``equations(step)`` finds every ``expression = number`` claim (plain text, LaTeX, GSM8K's
  ``<<a*b=c>>`` annotations, ``15% of 80``), evaluates the left side with a safe parser and says
  whether the right side is right (within rounding to the digits shown).
- ``numbers(text)`` lists the numbers a text uses (digits, "1,000", "$12.40", "15%", and number
  words such as "three", "half", "dozen"); provenance compares a step's numbers against the problem
  and the earlier steps: a number from nowhere is an invented premise.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

_LATEX = [
    (re.compile(r"\\(?:times|cdot)"), "*"), (re.compile(r"\\div"), "/"), (re.compile(r"\\left|\\right|\\,|\\!|\\;"), ""),
    (re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}"), r"((\1)/(\2))"), (re.compile(r"\\sqrt\{([^{}]*)\}"), r"((\1)**0.5)"),
    (re.compile(r"\\text\{[^{}]*\}|\\mathrm\{[^{}]*\}"), " "), (re.compile(r"\\[()\[\]]|\\%|\\\$|\\boxed|[{}]"), " "),
]
_UNIFY = str.maketrans({"×": "*", "·": "*", "÷": "/", "−": "-", "–": "-", "—": "-", "^": "^", "$": " ", "€": " ", "£": " "})
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_X_MUL = re.compile(r"(?<=[\d)])\s*[xX]\s*(?=[\d(])")
_PCT_OF = re.compile(r"(\d+(?:\.\d+)?)\s*%\s*of\s*(\d+(?:\.\d+)?)", re.I)
_PCT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_ANNOT = re.compile(r"<<([^<>=]+)=([^<>]+)>>")

_OPS: dict[type[ast.AST], Callable[..., float]] = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}


def normalise(text: str) -> str:
    t = text
    for pat, rep in _LATEX:
        t = pat.sub(rep, t)
    t = t.translate(_UNIFY)
    t = _THOUSANDS.sub("", t)
    t = _X_MUL.sub(" * ", t)
    t = _PCT_OF.sub(r"(\1/100*\2)", t)
    return t


def safe_eval(expr: str) -> float | None:
    """Evaluate + - * / ** on numbers only; None when it is not such an expression or blows up."""
    try:
        tree = ast.parse(expr.replace("^", "**"), mode="eval")
    except (SyntaxError, ValueError):
        return None

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > 12 or abs(left) > 1e6):
                raise OverflowError
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        raise ValueError("not arithmetic")

    try:
        v = ev(tree)
    except (ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None
    return v if math.isfinite(v) else None


def close(claimed: float, actual: float) -> bool:
    """Equal up to the precision the claim is written with: decimals rounded or cut off (10/3 = 3.33 and
    1547/3 = 515.66 are right, 10/3 = 3.2 is not), whole numbers rounded."""
    if math.isclose(claimed, actual, rel_tol=1e-6, abs_tol=1e-9):
        return True
    text = repr(claimed)
    decimals = len(text.split(".")[1]) if "." in text and not text.endswith(".0") else 0
    if not decimals:  # a whole number must be the rounded value: 11/4 = 2 is wrong
        return abs(claimed - actual) <= 0.5 + 1e-9
    return abs(claimed - actual) < 10.0 ** (-decimals) - 1e-9


@dataclass(frozen=True)
class Equation:
    expr: str
    claimed: float
    actual: float | None

    @property
    def ok(self) -> bool | None:
        return None if self.actual is None else close(self.claimed, self.actual)

    @property
    def rel_error(self) -> float:
        if self.actual is None:
            return 0.0
        return abs(self.claimed - self.actual) / max(abs(self.actual), 1e-9)


def _num(s: str) -> float | None:
    try:
        return float(s.rstrip("."))
    except ValueError:
        return None


# a number (also ".5", GSM8K's way of writing 0.5), an operator, a parenthesis, "=", space, anything else
_TOKEN = re.compile(r"(\d+(?:\.\d+)?|(?<![\w.])\.\d+)|(\*\*|[-+*/^])|([()])|(=)|(\s+)|(.)", re.S)
_WORD_CHAR = re.compile(r"[A-Za-z_\\]")
_INT_DIVISION = re.compile(r"\s*(?:remainder|quotient|r\b|R\b|with\b)", re.I)


def _claims(text: str) -> list[tuple[str, float]]:
    """Every "arithmetic = number" in normalised text, found in one linear scan (no backtracking).

    A claim is skipped, not judged, when either side is part of algebra or prose rather than
    arithmetic: the left side cut off at a variable or a unit ("x^2 + 10 = 0", "200 MB * 2/5 = 80",
    "gcd(41^2, 41*43) = 41"), or a right side that goes on as a term ("= 14k", "= 2(49 + 7)", "= 0.0011_2")
    or is a quotient with a remainder. Judging those would flag correct steps as miscalculated.
    """
    matches = list(_TOKEN.finditer(text))
    toks = [(m.lastindex, m.group()) for m in matches]  # 1 num, 2 op, 3 paren, 4 eq, 5 space, 6 other
    offsets = [m.start() for m in matches]
    out = []
    for j, (kind, _) in enumerate(toks):
        if kind != 4:
            continue
        i = j - 1
        while i >= 0 and toks[i][0] in (1, 2, 3, 5):
            i -= 1
        left = toks[i + 1:j]
        stopper = toks[i][1] if i >= 0 else ""
        if _WORD_CHAR.fullmatch(stopper):
            f = next((n for n, t in enumerate(left) if t[0] != 5), None)
            if left and left[0][0] != 5:
                continue  # glued to a name: "r_3^2 = 25", "a(5) - 115 = 0"
            negative = f is not None and left[f][1] == "-" and f + 1 < len(left) and left[f + 1][0] == 1  # "is -3 + 11"
            if f is not None and not negative and (left[f][0] == 2 or left[f][1] == ")"):
                continue  # "x + 3 = 7", "200 MB * 2/5 = 80": the expression goes on past the word
            if stopper in "xX" and i > 0 and toks[i - 1][0] == 5:
                continue  # "60 students x 2/3 = 40": a product with a unit in it
        while left and left[0][0] == 5:
            left = left[1:]
        if len(left) > 1 and left[0][1] == "-" and left[1][0] == 5:
            left = left[2:]  # "- 3^1 = 3": a list bullet, not a minus sign
        while left and (left[0][0] == 5 or (left[0][0] == 2 and left[0][1] != "-") or left[0][1] == ")"):
            left = left[1:]
        kinds = [k for k, _ in left if k != 5]
        if kinds.count(1) < 2 or 2 not in kinds:
            continue  # needs at least two numbers and an operator
        k = j + 1
        while k < len(toks) and toks[k][0] == 5:
            k += 1
        neg = k < len(toks) and toks[k][1] == "-"
        if neg:
            k += 1
        if k >= len(toks) or toks[k][0] != 1:
            continue
        if k + 1 < len(toks) and (toks[k + 1][1] == "(" or _WORD_CHAR.fullmatch(toks[k + 1][1])):
            continue  # "= 14k", "= 2(49 + 7)", "= 0.0011_2": the right side is a term, not a number
        if _INT_DIVISION.match(text, offsets[k + 1] if k + 1 < len(offsets) else len(text)):
            continue  # "1344 / 175 = 7 remainder 119"
        nxt = k + 1
        while nxt < len(toks) and toks[nxt][0] == 5:
            nxt += 1
        if nxt < len(toks) and toks[nxt][0] == 2 and nxt + 1 < len(toks):
            continue  # "= 3 * 4 ...": the right side is itself an expression
        expr = "".join(t for _, t in left).strip()
        while expr.count("(") > expr.count(")") and expr.startswith("("):
            expr = expr[1:].strip()
        if expr.count(")") > expr.count("("):
            continue  # "gcd(41^2, 41 * 43) = 41": an argument list, not the whole left side
        out.append((expr, -float(toks[k][1]) if neg else float(toks[k][1])))
    return out


def equations(step: str) -> list[Equation]:
    out: list[Equation] = []
    seen: set[tuple[str, float]] = set()
    for m in _ANNOT.finditer(step):  # GSM8K calculator annotations
        claimed = _num(m.group(2).strip())
        if claimed is not None:
            key = (m.group(1).replace(" ", ""), claimed)
            seen.add(key)
            out.append(Equation(m.group(1), claimed, safe_eval(normalise(m.group(1)))))
    text = _PCT.sub(r"(\1/100)", normalise(_ANNOT.sub(" ", step)))
    for expr, claimed in _claims(text):
        key = (expr.replace(" ", "").strip("()"), claimed)
        if key in seen or (key[0], claimed) in {(k.strip("()"), c) for k, c in seen}:
            continue
        seen.add(key)
        out.append(Equation(expr, claimed, safe_eval(expr)))
    return out


_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
          "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
          "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
          "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000, "million": 1e6,
          "half": 0.5, "twice": 2, "double": 2, "triple": 3, "thrice": 3, "dozen": 12, "quarter": 0.25, "third": 1 / 3,
          "fourth": 0.25, "fifth": 0.2, "tenth": 0.1, "percent": 100, "once": 1, "pair": 2, "couple": 2, "week": 7,
          "weeks": 7, "hour": 60, "hours": 60, "minute": 60, "minutes": 60, "day": 24, "days": 7, "month": 30,
          "months": 12, "year": 12, "years": 12}
_NUM = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")
_WORD_RE = re.compile(r"\b(" + "|".join(_WORDS) + r")\b", re.I)
#: Numbers any solution may use without citing them: small counts, unit conversions, percent.
COMMON = frozenset({0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 12.0, 24.0, 60.0, 100.0, 1000.0, 7.0, 30.0, 52.0, 365.0, 0.5,
                    0.25, 0.1, 0.01})


def numbers(text: str) -> list[float]:
    t = _THOUSANDS.sub("", normalise(text))
    vals = [float(x) for x in _NUM.findall(t)]
    vals += [float(_WORDS[w.lower()]) for w in _WORD_RE.findall(text)]
    return vals


def _key(v: float) -> float:
    return round(v, 4)


def known_values(texts: list[str]) -> set[float]:
    """Numbers stated in texts, plus percent forms (15 ↔ 0.15) and results of their equations."""
    known: set[float] = set()
    for t in texts:
        for v in numbers(t):
            known.update({_key(v), _key(v / 100), _key(v * 100)})
        for eq in equations(t):
            known.add(_key(eq.claimed))
            if eq.actual is not None:
                known.add(_key(eq.actual))
    return known


def invented(step: str, known: set[float]) -> list[float]:
    """Numbers a step uses as *inputs* that appear nowhere before it (results of its own equations excluded)."""
    results = {_key(eq.claimed) for eq in equations(step)}  # values this step computes may be reused in it
    return [v for v in numbers(step)
            if not (_key(v) in results or _key(v) in known or v in COMMON or (v.is_integer() and 0 <= v <= 10))]
