"""Per-step features for the distilled process verifier: symbolic checks plus light text cues.

Every feature is computed from the problem, the steps up to and including the one scored, and the
number of steps (position, is_last, log_n_steps): what the later steps say never changes a step's score.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .arith import equations, invented, known_values, numbers

_ANSWER = re.compile(r"\b(?:answer|therefore|thus|so the|in total|total of|final)\b|\\boxed|####|^A:", re.I | re.M)
_HEDGE = re.compile(r"\b(?:assum\w*|approximately|roughly|about|let'?s say|wait|however|but|actually|mistake|"
                    r"re-?evaluate|correct(?:ion)?|instead|not|cannot|can't)\b", re.I)
_OPS = re.compile(r"[-+*/×÷=]|\\times|\\frac|\\cdot")

NAMES: tuple[str, ...] = (
    "bias", "n_eq", "n_wrong", "any_wrong", "log_max_rel_err", "n_unevaluated", "n_invented", "any_invented",
    "share_invented", "n_numbers", "log_len", "position", "is_first", "is_last", "log_n_steps", "earlier_wrong",
    "earlier_invented", "answer_cue", "hedge_cues", "op_density", "no_numbers", "eq_and_invented",
    "wrong_and_last", "steps_since_problem_number",
)


def trace_features(problem: str, steps: list[str]) -> list[list[float]]:
    """One feature row per step (order of :data:`NAMES`)."""
    rows: list[list[float]] = []
    n = len(steps)
    earlier_wrong = earlier_invented = 0.0
    problem_nums = known_values([problem])
    known = set(problem_nums)  # grows step by step: what the problem and the earlier steps stated
    for i, step in enumerate(steps):
        eqs = equations(step)
        wrong = [e for e in eqs if e.ok is False]
        unevaluated = sum(1 for e in eqs if e.ok is None)
        inv = invented(step, known)
        nums = numbers(step)
        max_err = max((e.rel_error for e in wrong), default=0.0)
        uses_problem = any(round(v, 4) in problem_nums for v in nums)
        row = [
            1.0, float(len(eqs)), float(len(wrong)), float(bool(wrong)), math.log1p(min(max_err, 1e6)), float(unevaluated),
            float(len(inv)), float(bool(inv)), len(inv) / max(len(nums), 1), float(len(nums)), math.log1p(len(step)),
            i / max(n - 1, 1), float(i == 0), float(i == n - 1), math.log1p(n), earlier_wrong, earlier_invented,
            float(bool(_ANSWER.search(step))), float(len(_HEDGE.findall(step))), len(_OPS.findall(step)) / max(len(step), 1) * 100,
            float(not nums), float(bool(eqs) and bool(inv)), float(bool(wrong) and i == n - 1), float(uses_problem),
        ]
        rows.append(row)
        known |= known_values([step])
        earlier_wrong = max(earlier_wrong, float(bool(wrong)))
        earlier_invented = max(earlier_invented, float(bool(inv)))
    return rows


#: Size-like features the model sees relative to the mean of the *earlier* steps of the same trace (0
#: for the first step): a long, number-heavy step is not suspicious in a trace whose steps are all like
#: that. Chosen by cross-validation on the training data of each held-out benchmark model (ProcessBench
#: F1 27.2 -> 29.8 trained on MATH, 38.7 -> 39.4 trained on GSM8K); earlier steps only, so what the
#: later steps say still never changes a step's score (the mean over the whole trace did about as well).
RELATIVE: tuple[str, ...] = ("log_len", "n_numbers", "op_density", "n_eq", "share_invented")
_REL_COLS = [NAMES.index(n) for n in RELATIVE]
_KEEP_COLS = [i for i, n in enumerate(NAMES) if n not in RELATIVE]
#: The verifier model's inputs (bias first), as built by :func:`model_features`.
MODEL_NAMES: tuple[str, ...] = tuple(NAMES[i] for i in _KEEP_COLS) + tuple(f"{n}_vs_earlier" for n in RELATIVE)


def model_features(x: np.ndarray) -> np.ndarray:
    """The verifier's input rows from :func:`trace_features` rows of one trace."""
    x = np.asarray(x, dtype=float)
    if not len(x):
        return np.zeros((0, len(MODEL_NAMES)))
    size = x[:, _REL_COLS]
    earlier = np.empty_like(size)
    earlier[0] = size[0]
    if len(size) > 1:
        earlier[1:] = np.cumsum(size, axis=0)[:-1] / np.arange(1, len(size))[:, None]
    return np.hstack([x[:, _KEEP_COLS], size - earlier])
