"""Do MiniLM sentence embeddings help the distilled process verifier? A probe, kept because its answer
(no) decided the design.

For every step of ProcessBench GSM8K and MATH: the 24 symbolic features the shipped verifier uses
(``sym``); plus five cosines from all-MiniLM-L6-v2 (int8 ONNX, the knowledge base's embedder): step vs
problem, vs the previous step, the best and the mean-vector match with earlier steps, and novelty
(``cos``); plus the step's 384-d vector and its element-wise product with the problem's (``emb``).
Protocol as bench/verifier.py: train on one ProcessBench subset (steps up to the first error, that
step labelled 1), pick the threshold on the training subset's ProcessBench F1, test on the other.
Models: logistic regression (class-balanced) and gradient boosting.

Reproduce:  python -m bench.probes.verifier_minilm_probe   (~15 min on 2 cores: embedding ~17k texts)
Writes bench/results/verifier_minilm_probe.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, SHARED_DATA, now, parser, write_json

from smallfleet.retrieval.embed import Embedder
from smallfleet.verify.features import trace_features
from smallfleet.verify.process import MAX_STEP_CHARS, MAX_STEPS, first_error, processbench_f1

THRESHOLDS = np.linspace(0.05, 0.95, 91)


def load(embedder: Embedder, data: Path) -> dict[str, list[dict]]:
    out = {}
    for name in ("gsm8k", "math"):
        traces = []
        t0 = time.perf_counter()
        for t in json.loads((data / "processbench" / f"{name}.json").read_text()):
            steps = [s[:MAX_STEP_CHARS] for s in t["steps"][:MAX_STEPS]]
            traces.append({"label": t["label"], "sym": np.array(trace_features(t["problem"], steps)),
                           "emb": embedder.embed([t["problem"]] + steps)})
        print(f"{name}: {len(traces)} traces embedded in {time.perf_counter() - t0:.0f} s", flush=True)
        out[name] = traces
    return out


def step_rows(t: dict, kind: str) -> np.ndarray:
    p, s = t["emb"][0], t["emb"][1:]
    rows = []
    for i in range(len(s)):
        earlier = s[:i] @ s[i] if i else np.zeros(1)
        cos = [float(s[i] @ p), float(s[i - 1] @ s[i]) if i else 0.0, float(earlier.max()),
               float(s[:i].mean(0) @ s[i]) if i else 0.0, 1.0 - max(float(s[i] @ p), float(earlier.max()))]
        r = list(t["sym"][i])
        if kind in ("cos", "emb"):
            r += cos
        if kind == "emb":
            r += list(s[i]) + list(s[i] * p)
        rows.append(r)
    return np.array(rows)


def training_rows(traces: list[dict], kind: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for t in traces:
        for i, r in enumerate(step_rows(t, kind)):
            if t["label"] != -1 and i > t["label"]:
                break
            xs.append(r)
            ys.append(1 if i == t["label"] else 0)
    return np.array(xs), np.array(ys)


def predict(m: Any, kind: str, mu: np.ndarray, sd: np.ndarray, traces: list[dict]) -> list[list[float]]:
    """Step scores of a fitted model for every trace."""
    return [m.predict_proba((step_rows(t, kind) - mu) / sd)[:, 1].tolist() for t in traces]


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--data", type=Path, default=SHARED_DATA, help="folder holding processbench/{gsm8k,math}.json (default ../shared/data)")
    ap.add_argument("--out", type=Path, default=RESULTS / "verifier_minilm_probe.json",
                    help="default bench/results/verifier_minilm_probe.json")
    args = ap.parse_args()
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    data = load(Embedder(), args.data)
    results = []
    for kind in ("sym", "cos", "emb"):
        for train, test in (("math", "gsm8k"), ("gsm8k", "math")):
            x, y = training_rows(data[train], kind)
            mu, sd = x.mean(0), x.std(0) + 1e-9
            models = {"logistic": LogisticRegression(C=0.1 if kind == "emb" else 1.0, class_weight="balanced", max_iter=3000),
                      "boosting": HistGradientBoostingClassifier(max_iter=150, learning_rate=0.05, max_leaf_nodes=15,
                                                                 class_weight="balanced", random_state=0)}
            for name, m in models.items():
                m.fit((x - mu) / sd, y)
                s_train, s_test = predict(m, kind, mu, sd, data[train]), predict(m, kind, mu, sd, data[test])
                g_train, g_test = [t["label"] for t in data[train]], [t["label"] for t in data[test]]
                th = max(THRESHOLDS, key=lambda h: processbench_f1([first_error(s, h) for s in s_train], g_train)[2])
                acc_err, acc_ok, f1 = processbench_f1([first_error(s, th) for s in s_test], g_test)
                results.append({"features": kind, "model": name, "train": train, "test": test, "threshold": round(float(th), 3),
                                "acc_erroneous": round(acc_err * 100, 1), "acc_correct": round(acc_ok * 100, 1),
                                "f1": round(f1 * 100, 1)})
                print(f"{kind:4} {name:9} {train:>5} -> {test:5}  F1 {f1 * 100:5.1f}  (erroneous {acc_err * 100:5.1f}, "
                      f"sound {acc_ok * 100:5.1f}, t={th:.2f})", flush=True)
    out = {"date": now(), "wall_s": round(time.perf_counter() - t0, 1),
           "features": {"sym": "the shipped verifier's 24 symbolic step features",
                        "cos": "sym + 5 MiniLM cosines (problem, previous step, best/mean earlier step, novelty)",
                        "emb": "cos + the step's 384-d MiniLM vector and its product with the problem's"},
           "protocol": "train on one ProcessBench subset, threshold = best ProcessBench F1 on it, test on the other",
           "results": results}
    write_json(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
