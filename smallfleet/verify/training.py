"""Training the outcome model on the shipped process verifier's step scores (``smallfleet verifier train-outcome``)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidRequestError, NotAvailableError
from .artifacts import default_data_dir
from .outcome import FEATURES, SOURCES, _auroc, fit_outcome, outcome_dataset
from .process import ProcessVerifier


def train_outcome(out: str | Path, data_dir: str | Path | None = None, folds: int = 5) -> dict[str, Any]:
    """Fit on every example model solution; report cross-validated AUROC (folds over questions); write the artifact."""
    try:
        import sklearn  # noqa: F401
    except ImportError as e:
        raise NotAvailableError("training needs scikit-learn.", hint="pip install scikit-learn") from e
    if folds < 2:
        raise InvalidRequestError("folds must be at least 2.")
    t0 = time.time()
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    pv = ProcessVerifier.load(with_outcome=False)
    x, y, q, src = outcome_dataset(data_dir, pv.step_scores)
    digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
    cv = np.zeros(len(y))
    for f in range(folds):
        test = q % folds == f
        cv[test] = fit_outcome(x[~test], y[~test]).p_wrong_rows(x[test])
    model = fit_outcome(x, y)
    per_source = {s: round(_auroc(cv[[i for i, k in enumerate(src) if k == s]], y[[i for i, k in enumerate(src) if k == s]]), 4)
                  for s in SOURCES}
    meta = {
        "version": 1, "features": list(FEATURES), "weights": model.weights.tolist(), "bias": model.bias,
        "mean": model.mean.tolist(), "scale": model.scale.tolist(), "threshold": model.threshold,
        "model": "logistic regression", "trained_on": "GSM8K example model solutions (" + ", ".join(SOURCES) + ")",
        "solutions": len(y), "wrong": int(y.sum()), "questions": int(q.max() + 1), "training_data_sha256": digest,
        "process_verifier_sha256": hashlib.sha256(json.dumps(pv.meta, sort_keys=True).encode()).hexdigest(),
        "cv": {"folds": folds, "by": "question", "auroc_all": round(_auroc(cv, y), 4), "auroc_by_source": per_source},
        "trained": time.strftime("%Y-%m-%d %H:%M"), "seconds": round(time.time() - t0, 1),
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(meta, indent=1))
    return meta
