"""One calibrated score for a reasoning answer: the odds it is right, from every signal there is (#18).

A reasoning step's answer (step by step, ending on a number) is judged by several weak signals, none
good enough alone:
- a program the local model writes for the same problem agrees, disagrees or fails (:mod:`.program`);
- recomputed arithmetic finds a wrong equation (:mod:`.arith`);
- the distilled process verifier's worst step and the outcome model's odds (:mod:`.process`);
- the model's own token confidence (mean probability, share of unsure tokens);
- k sampled answers to the same prompt agree with it, and with the program (only where it pays, below).

:class:`ReasoningScore` combines them with two logistic models fitted on answers the local models gave
to GSM8K *train* problems (``bench/reasoning.py fit``): ``base`` without the samples and ``full`` with
them. Sampling costs k answers (on 2 CPU cores, as much as k calls; on a GPU much less), so it runs
only in the band where the base score is undecided: below ``band[0]`` no answer on the train rows was
accepted with samples either, at or above ``band[1]`` the answer is accepted without them. The
threshold is chosen on the train rows for a target precision of "verified" (the share of accepted
answers that are right); the artifact records the precision it reached there, which may fall short.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .arith import equations
from .artifacts import read_artifact
from .program import ProgramResult, agreement, same_number

ARTIFACT = "reasoning-score-v1.json"
BASE = ("program_agree", "program_failed", "no_answer", "arith_wrong", "p_flawed", "p_wrong", "mean_prob",
        "unsure_share", "log_tokens")
FULL = (*BASE, "sample_share", "program_in_samples")
UNSURE = 0.5  # a token the model gave less than even odds


@dataclass
class Signals:
    """What is known about one reasoning answer; :meth:`vector` is the models' input."""

    answer: float | None
    program: str  # agree | disagree | program failed | no answer
    program_value: float | None = None
    arith_wrong: bool = False
    p_flawed: float = 0.0
    p_wrong: float = 0.0
    mean_prob: float = 1.0
    unsure_share: float = 0.0
    tokens: int = 0
    samples: list[float | None] | None = None  # the sampled answers' numbers, when samples were drawn

    def vector(self, full: bool) -> list[float]:
        v = [float(self.program == "agree"), float(self.program == "program failed"), float(self.answer is None),
             float(self.arith_wrong), self.p_flawed, self.p_wrong, self.mean_prob, self.unsure_share,
             math.log1p(self.tokens) / 6]
        if full:
            s = self.samples or []
            v.append(sum(same_number(x, self.answer) for x in s) / len(s) if s else 0.0)
            v.append(sum(same_number(x, self.program_value) for x in s) / len(s) if s else 0.0)
        return v

    def describe(self) -> str:
        parts = [f"program {self.program}" + (f" ({self.program_value:g})" if self.program_value is not None else "")]
        if self.arith_wrong:
            parts.append("an equation is wrong")
        parts.append(f"verifier p_flawed {self.p_flawed:.2f}, p_wrong {self.p_wrong:.2f}")
        parts.append(f"token confidence {self.mean_prob:.2f}")
        if self.samples is not None:
            parts.append(f"{sum(same_number(x, self.answer) for x in self.samples)}/{len(self.samples)} samples agree")
        return "; ".join(parts)


def signals(problem: str, steps: list[str], logprobs: list[float] | None, answer: float | None,
            program: ProgramResult, samples: list[float | None] | None = None) -> Signals:
    """The signals of one answer, given its steps (see checks.split_steps) and its tokens' log-probabilities."""
    from .checks import verifier  # the verifier loads on first use

    arith_wrong = any(eq.ok is False for s in steps for eq in equations(s))
    p_flawed = p_wrong = 0.0
    if steps:
        res = verifier().verify(problem, steps)
        p_flawed, p_wrong = res.p_flawed, res.p_wrong or 0.0
    probs = [math.exp(x) for x in logprobs or []]
    return Signals(answer, agreement(answer, program), program.value if program.ok else None, arith_wrong, p_flawed,
                   p_wrong, sum(probs) / len(probs) if probs else 1.0,
                   sum(p < UNSURE for p in probs) / len(probs) if probs else 0.0, len(probs), samples)


@dataclass
class Logistic:
    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray

    def p(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.scale) @ self.weights + self.bias
        return np.asarray(1 / (1 + np.exp(-np.clip(z, -30, 30))))

    def as_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.tolist(), "bias": self.bias, "mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Logistic:
        return cls(np.array(d["weights"], dtype=float), float(d["bias"]), np.array(d["mean"], dtype=float),
                   np.array(d["scale"], dtype=float))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> Logistic:
    """L2-regularised logistic regression by Newton's method on standardised features (small data: exact and fast)."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2)
    reg[-1] = 0.0  # the bias is not shrunk
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(z @ w, -30, 30)))
        grad = z.T @ (p - y) + reg * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return Logistic(w[:-1], float(w[-1]), mean, scale)


def threshold_for(p: np.ndarray, y: np.ndarray, target: float, min_accepted: int = 5) -> tuple[float, float, float]:
    """The lowest threshold whose accepted answers (p >= t) are right at least ``target`` of the time, with at
    least ``min_accepted`` of them; if none is, the most precise one. Returns (threshold, precision, share accepted)."""
    order = np.argsort(-p)
    best: tuple[float, float, float] | None = None
    right = 0
    for i, j in enumerate(order, start=1):
        right += int(y[j])
        if i < min_accepted or (i < len(order) and p[order[i]] == p[j]):  # ties accept together
            continue
        prec = right / i
        if prec >= target:
            best = (float(p[j]), prec, i / len(p))
    if best is not None:
        return best
    cands = [(right_i / i, float(p[order[i - 1]]), i) for i, right_i in
             ((i, int(y[order[:i]].sum())) for i in range(min_accepted, len(order) + 1))]
    prec, t, i = max(cands, key=lambda c: (c[0], c[2])) if cands else (0.0, 1.0, 0)
    return t, prec, i / max(1, len(p))


@dataclass
class ReasoningScore:
    base: Logistic
    full: Logistic
    threshold: float  # for the full model; the base model's own is band[1]
    band: tuple[float, float]
    samples: int
    meta: dict[str, Any] = field(default_factory=dict)

    def p_right(self, s: Signals) -> float:
        """The odds that the answer is right: the full model when samples were drawn, else the base one."""
        full = s.samples is not None
        model = self.full if full else self.base
        return float(model.p(np.array([s.vector(full)], dtype=float))[0])

    def needs_samples(self, p_base: float) -> bool:
        return self.samples > 0 and self.band[0] <= p_base < self.band[1]

    def accepts(self, s: Signals, p: float) -> bool:
        return p >= (self.threshold if s.samples is not None else self.band[1])

    def as_dict(self) -> dict[str, Any]:
        return {"version": 1, "features": list(FULL), "base": self.base.as_dict(), "full": self.full.as_dict(),
                "threshold": self.threshold, "band": list(self.band), "samples": self.samples,
                "meta": self.meta}

    @classmethod
    def load(cls, path: str | Path | None = None) -> ReasoningScore:
        d = read_artifact(ARTIFACT, path, FULL, "python bench/reasoning.py fit")
        return cls(Logistic.from_dict(d["base"]), Logistic.from_dict(d["full"]), float(d["threshold"]),
                   (float(d["band"][0]), float(d["band"][1])), int(d["samples"]), d.get("meta", {}))

    def save(self, path: str | Path) -> Path:
        Path(path).write_text(json.dumps(self.as_dict(), indent=1) + "\n", encoding="utf-8")
        return Path(path)


def fit_score(rows: list[Signals], right: list[bool], *, target: float = 0.95, samples: int = 3,
              meta: dict[str, Any] | None = None) -> ReasoningScore:
    """Fit both models and choose the threshold and the sampling band on the same (train) rows; every row
    must have its samples drawn, so the full model sees them."""
    if any(r.samples is None for r in rows):
        raise ValueError("every training row needs its samples (collect with --samples)")
    y = np.array(right, dtype=float)
    xb = np.array([r.vector(False) for r in rows], dtype=float)
    xf = np.array([r.vector(True) for r in rows], dtype=float)
    base, full = fit_logistic(xb, y), fit_logistic(xf, y)
    pb, pf = base.p(xb), full.p(xf)
    t_full, prec_full, share_full = threshold_for(pf, y, target)
    t_base, prec_base, share_base = threshold_for(pb, y, target)
    accepted = pf >= t_full
    # below the lowest base score of an answer the full model accepts, sampling never changed an outcome here
    lo = float(pb[accepted].min()) if accepted.any() else t_base
    info = {"rows": len(rows), "right": int(y.sum()), "target_precision": target,
            "base": {"auroc": auroc(pb, y), "threshold": t_base, "precision": prec_base, "accepted": share_base},
            "full": {"auroc": auroc(pf, y), "threshold": t_full, "precision": prec_full, "accepted": share_full},
            "sampled_share": float(((pb >= lo) & (pb < t_base)).mean())}
    return ReasoningScore(base, full, t_full, (min(lo, t_base), t_base), samples, {**(meta or {}), "train": info})


def auroc(p: np.ndarray, y: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    return float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg)))
