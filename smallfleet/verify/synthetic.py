"""Synthetic flawed traces from GSM8K *train* reference solutions: the perturbation is the label.

Each reference solution becomes one sound trace (label -1) and one flawed trace whose first wrong
step is the perturbed one:

- ``arith``: a step states a wrong result; later steps go on with the right value, so the final
  answer can still be right (right answer, wrong step);
- ``operation``: an operator swapped, the result recomputed and carried forward (a logic error);
- ``altered``: an operand replaced by a number that is not in the problem, carried forward;
- ``invented``: an extra operand from nowhere added to a computation, carried forward;
- ``skipped``: a step deleted; the next one uses a value never derived (label: that next step).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .arith import safe_eval

_ANNOT = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
_FMT = re.compile(r"^-?\d+(?:\.\d+)?$")


def reference_steps(answer: str) -> tuple[list[str], list[tuple[str, str]]]:
    """GSM8K answer text → visible steps (annotations removed) and each step's (expr, result) annotation."""
    lines = [ln for ln in answer.split("\n") if ln.strip() and not ln.startswith("####")]
    steps, annots = [], []
    for ln in lines:
        m = _ANNOT.search(ln)
        annots.append((m.group(1), m.group(2)) if m else ("", ""))
        steps.append(_ANNOT.sub("", ln).strip())
    return steps, annots


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.2f}".rstrip("0").rstrip(".")


def _replace_num(text: str, old: str, new: str) -> str:
    return re.sub(rf"(?<![\d.]){re.escape(old)}(?![\d])", new, text)


def _carry(steps: list[str], k: int, old: str, new: str) -> list[str]:
    return steps[: k + 1] + [_replace_num(s, old, new) for s in steps[k + 1:]]


def perturb(problem: str, steps: list[str], annots: list[tuple[str, str]], rng: random.Random) -> tuple[list[str], int, str] | None:
    cands = [i for i, (e, r) in enumerate(annots) if e and _FMT.match(r.strip()) and r.strip() in steps[i]]
    if not cands:
        return None
    kind = rng.choice(["arith", "arith", "operation", "altered", "invented", "skipped"])
    k = rng.choice(cands)
    expr, res = annots[k][0], annots[k][1].strip()
    step = steps[k]
    if kind == "skipped":
        if k >= len(steps) - 1 or not re.search(rf"(?<![\d.]){re.escape(res)}(?!\d)", steps[k + 1]):
            kind = "arith"
        else:
            return steps[:k] + steps[k + 1:], k, kind
    if kind == "arith":
        v = float(res)
        wrong = rng.choice([v + rng.randint(1, 9), v - rng.randint(1, 9), v * 10, v / 10 if v >= 10 else v + 10, v * 2])
        if _fmt(wrong) == res:
            return None
        new = list(steps)
        new[k] = _replace_num(step, res, _fmt(wrong))  # later steps keep the right value
        return (new, k, kind) if new[k] != step else None
    nums = re.findall(r"\d+(?:\.\d+)?", expr)
    if kind == "operation":
        ops = [(m.start(), m.group()) for m in re.finditer(r"[-+*/]", expr)]
        if not ops:
            return None
        pos, op = rng.choice(ops)
        swap = {"+": "-", "-": "+", "*": "/", "/": "*"}[op]
        new_expr = expr[:pos] + swap + expr[pos + 1:]
    elif kind == "altered":
        if not nums:
            return None
        old = rng.choice(nums)
        repl = _fmt(float(old) + rng.choice([-3, -2, -1, 1, 2, 3, 5, 7]) if float(old) > 3 else float(old) + rng.randint(2, 9))
        if repl in problem:
            return None
        new_expr = re.sub(rf"(?<![\d.]){re.escape(old)}(?![\d])", repl, expr, count=1)
    else:  # invented
        extra = rng.choice([7, 11, 13, 17, 23, 4.5, 35, 120])
        if _fmt(extra) in problem:
            return None
        new_expr = f"{expr}+{_fmt(extra)}"
    val = safe_eval(new_expr)
    if val is None or _fmt(val) == res or val < 0:
        return None
    # Rewrite the visible computation "lhs = r" as "new lhs = r'".
    m = re.search(rf"([\d.\s+\-*/x×()$]*\d[\d.\s+\-*/x×()$]*)=\s*(\$?){re.escape(res)}(?![\d])", step)
    if not m:
        return None
    pretty = re.sub(r"\s*([-+*/])\s*", r" \1 ", new_expr).strip()
    lead = " " if m.start() > 0 and step[m.start() - 1] not in " (" else ""
    lead += " " if m.group(1)[:1] == " " else ""
    vis = step[:m.start()] + lead.rstrip() + (" " if lead else "") + pretty + " = " + m.group(2) + _fmt(val) + step[m.end():]
    vis = re.sub(r"(\w)(?=" + re.escape(pretty) + ")", r"\1 ", vis, count=1)
    new = list(steps)
    new[k] = vis
    return _carry(new, k, res, _fmt(val)), k, kind


def synthetic_traces(train_jsonl: Path, n: int, seed: int = 1234) -> Iterator[dict[str, Any]]:
    """Up to ``n`` GSM8K-train problems → sound + flawed traces in ProcessBench's shape."""
    rng = random.Random(seed)
    rows = [json.loads(x) for x in train_jsonl.read_text(encoding="utf-8").splitlines() if x.strip()]
    rng.shuffle(rows)
    for r in rows[:n]:
        steps, annots = reference_steps(r["answer"])
        if len(steps) < 2:
            continue
        yield {"problem": r["question"], "steps": steps, "label": -1, "kind": "sound"}
        p = perturb(r["question"], steps, annots, rng)
        if p is not None:
            new, k, kind = p
            yield {"problem": r["question"], "steps": new, "label": k, "kind": kind}
