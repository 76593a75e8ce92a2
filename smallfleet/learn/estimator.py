"""A learned estimator of P(the cheap tier's answer is accepted | step), from replayed outcomes.

Features a router can compute without a model call: the step's words and word pairs (hashed), its
kind and place in the loop, how many tools it offers, whether it wants JSON, the prompt's length, and
its cluster's agreement rate seen in training (smoothed). A logistic regression over them, whose
probabilities are checked for calibration (Brier score, and the observed rate per decile) on the
held-back part by :mod:`.report`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..capture.trace import Trace, task_text
from ..step import StepKind
from .match import term_vector

HASH_DIM = 1 << 12
_KINDS = [k.value for k in StepKind]


def features(t: Trace, cluster_rate: float) -> np.ndarray:
    x = np.zeros(HASH_DIM + len(_KINDS) + 6, dtype=np.float32)
    for i, w in term_vector(task_text(t.request)).items():
        x[i % HASH_DIM] += w
    base = HASH_DIM
    if t.kind in _KINDS:
        x[base + _KINDS.index(t.kind)] = 1.0
    base += len(_KINDS)
    msgs = t.request.get("messages") or []
    x[base] = 1.0 if msgs and msgs[-1].get("role") == "tool" else 0.0
    x[base + 1] = min(len(t.request.get("tools") or []), 32) / 32
    x[base + 2] = 1.0 if isinstance(t.request.get("response_format"), dict) else 0.0
    chars = sum(len(str(m.get("content") or "")) for m in msgs)
    x[base + 3] = math.log1p(chars) / 12
    x[base + 4] = cluster_rate
    x[base + 5] = 1.0
    return x


@dataclass
class Estimator:
    rates: dict[str, float]  # cluster -> smoothed agreement seen in training
    prior: float
    model: object  # a fitted sklearn LogisticRegression, or None when training had one class only

    def p(self, t: Trace, cluster: str | None) -> float:
        rate = self.rates.get(cluster or "", self.prior)
        if self.model is None:
            return rate
        proba = self.model.predict_proba(features(t, rate)[None, :])  # type: ignore[attr-defined]
        return float(proba[0, 1])


def train(traces: Sequence[Trace], agree: Mapping[str, bool], cluster_of: Mapping[str, str]) -> Estimator:
    """Fit on the traces that have a replay verdict (``agree[trace id]``)."""
    from sklearn.linear_model import LogisticRegression

    seen = [t for t in traces if t.id in agree]
    votes: dict[str, list[bool]] = {}
    for t in seen:
        votes.setdefault(cluster_of.get(t.id, ""), []).append(agree[t.id])
    total = [agree[t.id] for t in seen]
    prior = (sum(total) + 1) / (len(total) + 2)
    rates = {c: (sum(v) + 1) / (len(v) + 2) for c, v in votes.items()}
    y = np.array([agree[t.id] for t in seen], dtype=int)
    if len(set(y.tolist())) < 2:
        return Estimator(rates, prior, None)
    # a step's own vote is in its cluster's rate: leave it out so the model does not learn to copy it
    x = np.stack([features(t, _without(rates, votes, cluster_of.get(t.id, ""), agree[t.id])) for t in seen])
    model = LogisticRegression(C=1.0, max_iter=2000).fit(x, y)
    return Estimator(rates, prior, model)


def _without(rates: dict[str, float], votes: dict[str, list[bool]], cluster: str, vote: bool) -> float:
    v = votes.get(cluster, [])
    n = len(v) - 1
    return (sum(v) - int(vote) + 1) / (n + 2) if n >= 0 else rates.get(cluster, 0.5)
