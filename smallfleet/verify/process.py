"""The distilled process verifier: per-step error probabilities from a small logistic model.

The artifact is a JSON file (weights, feature names, scaling, threshold, training-data hash and
metrics) shipped inside the package; loading it needs numpy only. Training
(:func:`train_verifier`, ``smallfleet verifier train``) needs scikit-learn and the data in
``../shared/data``; it never runs at import time.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidRequestError, NotAvailableError
from .artifacts import default_data_dir, read_artifact
from .features import MODEL_NAMES, model_features, trace_features
from .outcome import OutcomeModel

ARTIFACT = "verifier-v1.json"
OUTCOME_ARTIFACT = "outcome-v1.json"
MAX_STEPS = 64  # longer traces are cut here, and the result says so
MAX_STEP_CHARS = 4000  # likewise for longer steps: past this a "step" is a pasted document, not reasoning


@dataclass
class TraceResult:
    step_scores: list[float]
    first_error_step: int
    p_flawed: float
    truncated: bool = False  # more than MAX_STEPS steps: only the first ones were checked
    p_wrong: float | None = None  # the outcome verifier's odds that the final answer is wrong
    cut_steps: list[int] = field(default_factory=list)  # steps longer than MAX_STEP_CHARS, checked in part

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"first_error_step": self.first_error_step, "p_flawed": round(self.p_flawed, 4),
                             "step_scores": [round(s, 4) for s in self.step_scores]}
        if self.p_wrong is not None:
            d["p_wrong"] = round(self.p_wrong, 4)
        cut = []
        if self.truncated:
            cut.append(f"only the first {MAX_STEPS} steps were checked")
        if self.cut_steps:
            cut.append(f"step(s) {', '.join(map(str, self.cut_steps))} were checked on their first {MAX_STEP_CHARS} characters only")
        if cut:
            d["truncated"] = "; ".join(cut)
        return d


def first_error(scores: list[float], threshold: float) -> int:
    return next((i for i, s in enumerate(scores) if s > threshold), -1)


class ProcessVerifier:
    def __init__(self, weights: np.ndarray, mean: np.ndarray, scale: np.ndarray, threshold: float,
                 meta: dict[str, Any] | None = None, outcome: Any = None) -> None:
        self.weights, self.mean, self.scale, self.threshold = weights, mean, scale, threshold
        self.meta = meta or {}
        self.outcome = outcome  # an OutcomeModel, or None: no p_wrong

    @classmethod
    def load(cls, path: str | Path | None = None, with_outcome: bool = True) -> ProcessVerifier:
        """The shipped verifier (with the shipped outcome model unless with_outcome is false), or the
        artifact at path (without one: the outcome model was trained on the shipped verifier's step scores)."""
        a = read_artifact(ARTIFACT, path, MODEL_NAMES, "smallfleet verifier train")
        outcome = None
        if with_outcome and path is None and resources.files("smallfleet.verify").joinpath(f"data/{OUTCOME_ARTIFACT}").is_file():
            outcome = OutcomeModel.load()
        return cls(np.array(a["weights"]), np.array(a["mean"]), np.array(a["scale"]), float(a["threshold"]), a, outcome)

    def step_scores(self, problem: str, steps: list[str]) -> list[float]:
        return self._scores(np.array(trace_features(problem, steps), dtype=float))

    def _scores(self, x: np.ndarray) -> list[float]:
        """Step error probabilities from the trace_features rows of one trace."""
        z = ((model_features(x) - self.mean) / self.scale) @ self.weights
        scores: list[float] = (1.0 / (1.0 + np.exp(-z))).tolist()
        return scores

    def verify(self, problem: object, steps: object) -> TraceResult:
        """Score a trace; ``problem`` and ``steps`` may be unchecked JSON (a str and a list of str, or an error)."""
        if not isinstance(problem, str) or not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
            raise InvalidRequestError('a trace is {"problem": str, "steps": [str, ...]}')
        if not steps:
            raise InvalidRequestError("the trace has no steps.")
        truncated = len(steps) > MAX_STEPS
        steps = steps[:MAX_STEPS]
        cut = [i for i, s in enumerate(steps) if len(s) > MAX_STEP_CHARS]
        steps = [s[:MAX_STEP_CHARS] for s in steps]
        x = np.array(trace_features(problem, steps), dtype=float)
        scores = self._scores(x)
        p_wrong = self.outcome.p_wrong(problem, steps, scores, x) if self.outcome is not None else None
        return TraceResult(scores, first_error(scores, self.threshold), max(scores), truncated, p_wrong, cut)


# -- training ---------------------------------------------------------------------------------------
def _rows(traces: list[dict[str, Any]], raw: list[np.ndarray],
          label_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step rows with labels and weights (``raw``: each trace's trace_features): steps before the first
    error are 0, the first error is 1, later steps are left out (ProcessBench labels nothing after the
    first error). Rows of a ``labelled`` trace weigh ``label_weight``, the others 1."""
    xs, ys, ws = [], [], []
    for t, r in zip(traces, raw):
        w = label_weight if t.get("labelled") else 1.0
        feats = model_features(r)
        label = t["label"]
        for i, f in enumerate(feats):
            if label != -1 and i > label:
                break
            xs.append(f)
            ys.append(1.0 if i == label else 0.0)
            ws.append(w)
    return np.array(xs, dtype=float), np.array(ys), np.array(ws)


def processbench_f1(pred: list[int], gold: list[int]) -> tuple[float, float, float]:
    err = [(p, g) for p, g in zip(pred, gold) if g != -1]
    ok = [(p, g) for p, g in zip(pred, gold) if g == -1]
    acc_err = sum(p == g for p, g in err) / len(err) if err else 0.0
    acc_ok = sum(p == -1 for p, _ in ok) / len(ok) if ok else 0.0
    f1 = 2 * acc_err * acc_ok / (acc_err + acc_ok) if acc_err + acc_ok else 0.0
    return acc_err, acc_ok, f1


def read_labels(path: Path) -> list[dict[str, Any]]:
    """Labelled traces from a JSONL file (smallfleet.verify.shepherd's output, or any in ProcessBench's shape);
    skipped traces (label null) are left out."""
    shape = 'a labelled trace is {"problem": str, "steps": [str, ...], "label": -1, a step index or null}'
    out: list[dict[str, Any]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            t = json.loads(line)
        except ValueError as e:
            raise InvalidRequestError(f"{path}:{n}: not JSON ({e}); {shape}") from e
        label = t.get("label") if isinstance(t, dict) else None
        if not (isinstance(t, dict) and isinstance(t.get("problem"), str) and isinstance(t.get("steps"), list)
                and t["steps"] and all(isinstance(s, str) for s in t["steps"])
                and (label is None or (type(label) is int and -1 <= label < len(t["steps"])))):
            raise InvalidRequestError(f"{path}:{n}: {shape}")
        if label is not None and label < MAX_STEPS:  # a first error past the cut cannot be trained on
            out.append({"problem": t["problem"], "steps": [s[:MAX_STEP_CHARS] for s in t["steps"][:MAX_STEPS]],
                        "label": label, "labelled": True})
    return out


def training_traces(data_dir: Path, holdout: str | None, n_synthetic: int, seed: int,
                    labels: Path | None = None) -> list[dict[str, Any]]:
    from .synthetic import synthetic_traces

    traces: list[dict[str, Any]] = []
    for name in ("gsm8k", "math"):
        if name == holdout:
            continue
        path = data_dir / "processbench" / f"{name}.json"
        if not path.is_file():
            raise NotAvailableError(f"training data {path} is missing.", hint="run from a checkout with ../shared/data")
        traces += [{"problem": t["problem"], "steps": t["steps"], "label": t["label"]} for t in json.loads(path.read_text())]
    traces += [{**t, "synthetic": True} for t in synthetic_traces(data_dir / "gsm8k" / "train.jsonl", n_synthetic, seed)]
    if labels is not None:
        traces += read_labels(labels)
    return traces


def train_verifier(holdout: str | None, out: str | Path, data_dir: str | Path | None = None,
                   n_synthetic: int = 3000, seed: int = 1234, labels: str | Path | None = None,
                   label_weight: float = 1.0) -> dict[str, Any]:
    """Train on ProcessBench (minus ``holdout``: "gsm8k" or "math") + synthetic GSM8K-train traces + the
    labelled traces in ``labels`` (JSONL, e.g. from smallfleet.verify.shepherd; each step row weighted
    ``label_weight``); write the artifact."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as e:
        raise NotAvailableError("training needs scikit-learn.", hint="pip install scikit-learn") from e
    if holdout not in (None, "gsm8k", "math"):
        raise InvalidRequestError(f"holdout {holdout!r}: use gsm8k, math or none.")
    t0 = time.time()
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    traces = training_traces(data_dir, holdout, n_synthetic, seed, Path(labels) if labels else None)
    digest = hashlib.sha256(json.dumps([[t["problem"], t["steps"], t["label"]] for t in traces]).encode()).hexdigest()
    raw = [np.array(trace_features(t["problem"], t["steps"]), dtype=float) for t in traces]  # once: fit and threshold
    x, y, weight = _rows(traces, raw, label_weight)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    mean[0], scale[0] = 0.0, 1.0  # the bias column stays 1
    scale[scale == 0] = 1.0
    clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, fit_intercept=False)
    clf.fit((x - mean) / scale, y, sample_weight=weight)
    w = clf.coef_[0]
    v = ProcessVerifier(w, mean, scale, 0.5)
    # The decision threshold: best ProcessBench-style F1 on the *real* (ProcessBench) training traces;
    # the synthetic ones are easier and would push it too high.
    real = [i for i, t in enumerate(traces) if not t.get("synthetic") and not t.get("labelled")] or list(range(len(traces)))
    scored = [(v._scores(raw[i]), traces[i]["label"]) for i in real]
    best = max(((processbench_f1([first_error(s, th) for s, _ in scored], [g for _, g in scored])[2], th)
                for th in np.linspace(0.3, 0.95, 27)), key=lambda r: r[0])
    acc_err, acc_ok, f1 = processbench_f1([first_error(s, best[1]) for s, _ in scored], [g for _, g in scored])
    meta = {
        "version": 1, "features": list(MODEL_NAMES), "weights": w.tolist(), "mean": mean.tolist(), "scale": scale.tolist(),
        "threshold": round(float(best[1]), 4), "holdout": holdout, "training_traces": len(traces), "training_steps": len(y),
        "positive_steps": int(y.sum()), "n_synthetic_problems": n_synthetic, "seed": seed,
        "labelled_traces": sum(1 for t in traces if t.get("labelled")), "label_weight": label_weight, "training_data_sha256": digest,
        "train_metrics": {"acc_erroneous": round(acc_err, 4), "acc_correct": round(acc_ok, 4), "f1": round(f1, 4),
                          "on": "the ProcessBench part of the training data"},
        "trained": time.strftime("%Y-%m-%d %H:%M"), "seconds": round(time.time() - t0, 1), "model": "logistic regression",
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(meta, indent=1))
    return meta
