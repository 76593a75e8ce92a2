"""The outcome verifier: how likely a worked solution's *final answer* is wrong, from the whole trace.

The process verifier looks for the first bad step; a cascade deciding "keep or escalate" needs the
answer's odds as well. Signals, all cheap and symbolic: quantities of the problem the solution never
uses (a misread problem), numbers from nowhere, wrong arithmetic, the process verifier's step scores,
how long the problem and the solution are, the answer's size and whether it copies a problem number
back. Not whether the answer is negative or fractional: GSM8K's answers are whole numbers, so there a
fraction nearly always means a wrong answer, but a refund of $101.40 is not wrong (a first version
learned exactly that and flagged every amount with cents).

Trained (``smallfleet verifier train-outcome``) by logistic regression on the GSM8K example model
solutions in ``../shared/data/gsm8k`` (6B and 175B, fine-tuned and verification-sampled, each with
its correctness); shipped as ``data/outcome-v1.json`` with its training-data hash and cross-validated
metrics. bench/verifier.py evaluates it by 5-fold cross-validation over questions, so no question
is scored by a model that saw any solution of it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NotAvailableError
from .arith import _ANNOT, _NUM, _THOUSANDS, normalise, numbers
from .artifacts import read_artifact
from .features import NAMES, trace_features

ARTIFACT = "outcome-v1.json"
SOURCES = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
FEATURES = (
    "n_steps", "log_problem_chars", "problem_numbers", "problem_quantities", "unused_quantities", "share_unused",
    "wrong_equations", "invented_numbers", "steps_with_invented", "unevaluated_equations", "equations",
    "max_step_score", "mean_step_score", "log_answer", "answer_is_problem_number",
    "log_solution_chars", "no_answer_number",
)
def _k(v: float) -> float:
    return round(v, 4)


def outcome_features(problem: str, steps: list[str], step_scores: list[float], sym: np.ndarray | None = None) -> list[float]:
    """One row (order of :data:`FEATURES`) for a trace whose process-verifier scores (and, to save
    recomputing them, step features) are known."""
    if sym is None:
        sym = np.asarray(trace_features(problem, steps), dtype=float)
    sym = sym.reshape(len(steps), -1)
    p_nums = numbers(problem)
    # quantities written as digits in the problem (number words such as "week" are too loose to miss)
    quantities = {_k(float(v)) for v in _NUM.findall(_THOUSANDS.sub("", normalise(problem)))}
    used: set[float] = set()
    for s in steps:
        used |= {_k(v) for v in numbers(s)}
    unused = [v for v in quantities if v not in used]
    answer_nums = numbers(steps[-1]) if steps else []
    a = answer_nums[-1] if answer_nums else None
    return [
        float(len(steps)), math.log1p(len(problem)), float(len(p_nums)), float(len(quantities)), float(len(unused)),
        len(unused) / max(len(quantities), 1),
        float(sym[:, NAMES.index("n_wrong")].sum()), float(sym[:, NAMES.index("n_invented")].sum()),
        float(sym[:, NAMES.index("any_invented")].sum()), float(sym[:, NAMES.index("n_unevaluated")].sum()),
        float(sym[:, NAMES.index("n_eq")].sum()),  # the step features already counted them
        max(step_scores) if step_scores else 0.0, float(np.mean(step_scores)) if step_scores else 0.0,
        math.log1p(min(abs(a), 1e12)) if a is not None else -1.0,
        float(a is not None and _k(a) in {_k(v) for v in p_nums}),
        math.log1p(sum(len(s) for s in steps)), float(a is None),
    ]


class OutcomeModel:
    def __init__(self, weights: np.ndarray, bias: float, mean: np.ndarray, scale: np.ndarray, threshold: float,
                 meta: dict[str, Any] | None = None) -> None:
        self.weights, self.bias, self.mean, self.scale, self.threshold = weights, bias, mean, scale, threshold
        self.meta = meta or {}

    @classmethod
    def load(cls, path: str | Path | None = None) -> OutcomeModel:
        a = read_artifact(ARTIFACT, path, FEATURES, "smallfleet verifier train-outcome")
        return cls(np.array(a["weights"]), float(a["bias"]), np.array(a["mean"]), np.array(a["scale"]),
                   float(a["threshold"]), a)

    def p_wrong_rows(self, x: np.ndarray) -> np.ndarray:
        z = ((np.asarray(x, dtype=float) - self.mean) / self.scale) @ self.weights + self.bias
        p: np.ndarray = 1.0 / (1.0 + np.exp(-z))
        return p

    def p_wrong(self, problem: str, steps: list[str], step_scores: list[float], sym: np.ndarray | None = None) -> float:
        return float(self.p_wrong_rows(np.array([outcome_features(problem, steps, step_scores, sym)]))[0])


# -- training ---------------------------------------------------------------------------------------
def solution_steps(solution: str) -> list[str]:
    """Non-empty lines with GSM8K calculator annotations removed (they restate the expression before them)."""
    return [_ANNOT.sub("", line).strip() for line in solution.splitlines() if line.strip()]


def outcome_dataset(data_dir: Path, step_scorer: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(features, wrong labels, question index, source) for every example model solution."""
    path = data_dir / "gsm8k" / "example_model_solutions.jsonl"
    if not path.is_file():
        raise NotAvailableError(f"training data {path} is missing.", hint="run from a checkout with ../shared/data")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    xs, ys, qs, src = [], [], [], []
    for qi, r in enumerate(rows):
        for key in SOURCES:
            steps = solution_steps(r[key]["solution"]) or [""]
            xs.append(outcome_features(r["question"], steps, step_scorer(r["question"], steps)))
            ys.append(0 if r[key]["is_correct"] else 1)
            qs.append(qi)
            src.append(key)
    return np.array(xs, dtype=float), np.array(ys), np.array(qs), src


def fit_outcome(x: np.ndarray, y: np.ndarray) -> OutcomeModel:
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    clf = LogisticRegression(C=1.0, max_iter=5000).fit((x - mean) / scale, y)
    # The training set's share of wrong answers is taken out of the intercept, so p_wrong starts from even
    # odds and moves only with the trace's evidence; 0.5 then means "more likely wrong than right" (no
    # cut-off tuned on a benchmark).
    rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    return OutcomeModel(clf.coef_[0], float(clf.intercept_[0]) - math.log(rate / (1 - rate)), mean, scale, 0.5)


def _auroc(p: np.ndarray, y: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]))) + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
