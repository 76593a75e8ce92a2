"""How the process verifier's size-like features were chosen: absolute, or relative to the trace.

For each held-out benchmark model (holdout gsm8k: trained on ProcessBench MATH + synthetic; holdout
math: trained on ProcessBench GSM8K + synthetic) this scores three ways of feeding the step features to
the logistic model by 3-fold cross-validation over the *training* ProcessBench traces (the synthetic
traces always train, the threshold is chosen on the training folds' real traces as in
``train_verifier``). No held-out ProcessBench trace is read. Variants:

- absolute: the 24 features of ``trace_features`` as they are (the model before this change);
- whole trace: log_len, n_numbers, op_density, n_eq, share_invented minus their mean over the trace;
- earlier steps: the same minus their mean over the earlier steps (0 for the first) = ``model_features``.

    python -m bench.probes.verifier_relative_probe [--out bench/results/verifier_relative_probe.json]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, SHARED_DATA, parser, write_json

from smallfleet.verify.features import NAMES, RELATIVE, model_features, trace_features
from smallfleet.verify.process import first_error, processbench_f1, training_traces

REL = [NAMES.index(n) for n in RELATIVE]
KEEP = [i for i in range(len(NAMES)) if i not in REL]


def whole_trace(x: np.ndarray) -> np.ndarray:
    return np.hstack([x[:, KEEP], x[:, REL] - x[:, REL].mean(0)])


VARIANTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "absolute": lambda x: x, "whole trace": whole_trace, "earlier steps (shipped)": model_features}


def rows(feats: list[np.ndarray], labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for f, lab in zip(feats, labels):
        for i in range(len(f)):
            if lab != -1 and i > lab:
                break
            xs.append(f[i])
            ys.append(1.0 if i == lab else 0.0)
    return np.array(xs), np.array(ys)


def pairs(feats: list[np.ndarray], traces: list[dict[str, Any]], idx: list[int]) -> list[tuple[np.ndarray, int]]:
    return [(feats[i], traces[i]["label"]) for i in idx]


def fold_f1(train: list[tuple[np.ndarray, int]], real_train: list[tuple[np.ndarray, int]], test: list[tuple[np.ndarray, int]]) -> float:
    from sklearn.linear_model import LogisticRegression

    x, y = rows([f for f, _ in train], [lab for _, lab in train])
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    m = LogisticRegression(C=1.0, class_weight="balanced", max_iter=3000).fit((x - mean) / scale, y)

    def scores(f: np.ndarray) -> list[float]:
        return m.predict_proba((f - mean) / scale)[:, 1].tolist()

    scored = [(scores(f), lab) for f, lab in real_train]
    best = max((processbench_f1([first_error(s, t) for s, _ in scored], [g for _, g in scored])[2], t)
               for t in np.linspace(0.3, 0.95, 27))[1]
    return processbench_f1([first_error(scores(f), best) for f, _ in test], [lab for _, lab in test])[2]


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--data", type=Path, default=SHARED_DATA, help="folder with processbench/ and gsm8k/ (default ../shared/data)")
    ap.add_argument("--out", type=Path, default=RESULTS / "verifier_relative_probe.json",
                    help="default bench/results/verifier_relative_probe.json")
    args = ap.parse_args()
    t0 = time.time()
    out: dict[str, object] = {"date": time.strftime("%Y-%m-%d"), "protocol": "3-fold CV over the training ProcessBench traces"}
    for holdout in ("gsm8k", "math"):
        traces = training_traces(args.data, holdout, 3000, 1234)
        raw = [np.array(trace_features(t["problem"], t["steps"]), dtype=float) for t in traces]
        real = [i for i, t in enumerate(traces) if not t.get("synthetic")]
        synth = [i for i, t in enumerate(traces) if t.get("synthetic")]
        res = {}
        for name, fn in VARIANTS.items():
            feats = [fn(x) for x in raw]
            f1s = []
            for f in range(3):
                held = [i for n, i in enumerate(real) if n % 3 == f]
                kept = [i for n, i in enumerate(real) if n % 3 != f]
                f1s.append(fold_f1(pairs(feats, traces, kept + synth), pairs(feats, traces, kept), pairs(feats, traces, held)))
            res[name] = round(100 * float(np.mean(f1s)), 1)
            print(f"holdout {holdout} (trained on the other ProcessBench set + synthetic): {name:<24} CV F1 {res[name]}")
        out[f"holdout_{holdout}"] = res
    out["seconds"] = round(time.time() - t0, 1)
    write_json(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
