"""Train the knowledge base's learned fusion (smallfleet/retrieval/data/fusion-v1.json).

Data: the corpus and questions of bench/retrieval.py (BFCL v4 tool documentation and requests, from the
PyPI package bfcl-eval). Training uses the **dev** questions only (sha256(id) % 3 == 0, 841); the test
questions are scored once at the end, for the report, and never used to choose anything.

For every dev question the store's two halves each return their best 30 chunks; every chunk in the
union is a row of generic features (smallfleet.retrieval.fusion.FEATURES), labelled 1 when it belongs to
a document the request needs. A HistGradientBoostingClassifier is chosen by 3-fold cross-validation over
questions (recall@5 of the re-ranked documents) from a small grid, refitted on all dev questions, and
exported as flat tree arrays; the export is checked against scikit-learn's own scores.

Reproduce:  pip install --no-deps bfcl-eval==2026.3.23
            python -m bench.tools.train_fusion [--index PATH] [--out smallfleet/retrieval/data/fusion-v1.json]
(--index: a store already holding the tool documents written by this script, to skip the ~2-3 min of
embedding; it is created there when missing.)
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from pathlib import Path

import numpy as np
from _common import now, parser, progress, write_json

from bench import _bfcl as R  # the corpus of bench/retrieval.py: loading, split, metrics
from smallfleet.retrieval import fusion
from smallfleet.retrieval.store import Store

GRID = {"max_iter": [100, 200, 400], "max_leaf_nodes": [7, 15, 31], "min_samples_leaf": [20, 60], "learning_rate": [0.05]}
SEED = 0


def features(store: Store, questions: list[R.Question], chunk_doc: dict[int, int]) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
    vecs = store.embedder.embed([q.text for q in questions])
    out = []
    with progress() as bar:
        task = bar.add_task("features", total=len(questions))
        for q, v in zip(questions, vecs):
            cand = store.fusion_features(q.text, v, store._bm25(q.text, fusion.POOL), store._dense(v, fusion.POOL))
            labels = np.array([1 if chunk_doc.get(c, -1) in q.relevant else 0 for c in cand.ids])
            out.append((cand.ids, cand.features, labels))
            bar.advance(task)
    return out


def recall5(model, rows, questions, chunk_doc) -> float:
    ranks = []
    for ids, x, _ in rows:
        order = np.argsort(-model.decision_function(x), kind="stable") if len(ids) else []
        ranks.append(R.doc_ranking([ids[i] for i in order], chunk_doc))
    return R.metrics(ranks, questions)["recall@5"]


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--index", type=Path, help="store file with the tool documents (created when missing)")
    ap.add_argument("--out", type=Path, default=fusion.FUSION_FILE, help="the artifact to write (default: the shipped one)")
    ap.add_argument("--bfcl", type=Path, help="bfcl_eval/data folder or wheel (default: the installed package)")
    args = ap.parse_args()
    from sklearn import __version__ as sk_version
    from sklearn.ensemble import HistGradientBoostingClassifier

    t0 = time.perf_counter()
    tools, questions, meta = R.load_bfcl(args.bfcl)
    store, chunk_doc = R.tool_store(args.index, tools, "sf-fusion-")
    dev = [q for q in questions if q.split == "dev"]
    test = [q for q in questions if q.split == "test"]
    rows_dev = features(store, dev, chunk_doc)

    folds = [list(range(i, len(dev), 3)) for i in range(3)]
    results = []
    for values in itertools.product(*GRID.values()):
        params = dict(zip(GRID, values))
        scores = []
        for f in range(3):
            held = set(folds[f])
            tr = [rows_dev[i] for i in range(len(dev)) if i not in held]
            m = HistGradientBoostingClassifier(random_state=SEED, early_stopping=False, **params)
            m.fit(np.vstack([r[1] for r in tr]), np.concatenate([r[2] for r in tr]))
            scores.append(recall5(m, [rows_dev[i] for i in folds[f]], [dev[i] for i in folds[f]], chunk_doc))
        results.append({"params": params, "cv_recall@5": float(np.mean(scores))})
        print(f"{params}  cv recall@5 {np.mean(scores):.4f}")
    best = max(results, key=lambda r: r["cv_recall@5"])
    x = np.vstack([r[1] for r in rows_dev])
    y = np.concatenate([r[2] for r in rows_dev])
    model = HistGradientBoostingClassifier(random_state=SEED, early_stopping=False, **best["params"]).fit(x, y)

    data_sha = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
    spec = fusion.export(model, {
        "version": 1, "model": "scikit-learn HistGradientBoostingClassifier", "sklearn": sk_version,
        "params": best["params"], "grid": results,
        "trained_on": "bench/retrieval.py corpus, dev questions (sha256(id) % 3 == 0)",
        "corpus_sha256": meta["sha256"], "bfcl_eval_version": meta["bfcl_eval_version"],
        "questions": len(dev), "rows": len(y), "positives": int(y.sum()), "training_data_sha256": data_sha,
        "trained": now(),
    })
    shipped = fusion.FusionModel(spec)
    diff = max(float(np.max(np.abs(shipped.score(r[1]) - model.decision_function(r[1])))) for r in rows_dev if len(r[0]))
    if diff > 1e-6:
        raise SystemExit(f"exported trees disagree with scikit-learn (max |diff| {diff})")

    # report only: the held-out test questions, learned fusion vs reciprocal rank fusion on the same candidates
    rows_test = features(store, test, chunk_doc)
    learned = [R.doc_ranking([ids[i] for i in np.argsort(-shipped.score(xx), kind="stable")], chunk_doc) if ids else []
               for ids, xx, _ in rows_test]
    rrf_rank = [R.doc_ranking([ids[i] for i in np.argsort(-xx[:, 0], kind="stable")], chunk_doc) if ids else []
                for ids, xx, _ in rows_test]
    spec["report"] = {"test_learned": R.metrics(learned, test), "test_rrf_same_candidates": R.metrics(rrf_rank, test),
                      "cv_best": best, "export_max_abs_diff": diff, "seconds": round(time.perf_counter() - t0, 1)}
    write_json(args.out, spec, indent=None, separators=(",", ":"), quiet=True)
    print(json.dumps({k: v for k, v in spec.items() if k not in ("trees", "grid")}, indent=1))
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
