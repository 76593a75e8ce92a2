"""Ideas for the learned fusion that were tried on the dev questions and not shipped, re-measured.

Everything here uses the **dev** questions of bench/retrieval.py only (3-fold CV over questions, the
shipped model's parameters); no test question is read. Each probe adds candidate features to the
shipped 16 and reports CV recall@5 beside the baseline, so its noise (about ±1 point) is visible:

- pool: 20 / 30 (shipped) / 40 / 50 candidates from each half;
- relative: each candidate's text/heading idf-coverage minus the best among the candidates, and
  its cosine, coverage and BM25 score relative to the other candidates with the same heading;
- prf: cosine to the best keyword hit, to the centroid of the top 3 keyword hits, and to the query
  moved towards the top 3 dense hits (Rocchio, alpha 0.5);
- parts: for questions of several sentences or steps ("... then ..."), the best cosine to any part;
- adapter: a linear map on the query embedding (identity + A, ridge on A), trained on 2/3 of dev by
  softmax over all chunks; dense recall@5 on the other third, also on only the held-out questions
  whose documents no training question needed (what it would do on a new corpus).
- misses: where the baseline's misses go (same-named sibling in the top 5, another function, not
  in either half's top 30).

    python -m bench.probes.retrieval_probes [--index PATH] [--out bench/results/retrieval_probes.json]
(--index: a store holding the tool documents, as written by bench/tools/train_fusion.py; built when missing.)
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, parser, write_json

from bench import _bfcl as R  # the corpus of bench/retrieval.py: loading, split, metrics
from smallfleet.retrieval import fusion
from smallfleet.retrieval.store import Store

PARAMS = {"max_iter": 200, "max_leaf_nodes": 15, "min_samples_leaf": 60, "learning_rate": 0.05}
FI = {f: i for i, f in enumerate(fusion.FEATURES)}
_SPLIT = re.compile(r"(?<=[.?!])\s+|\s*;\s*|\b(?:then|and then|also|additionally|after that|finally|next)\b", re.I)


class Q:
    def __init__(self, relevant: set[int]) -> None:
        self.relevant = relevant


def recall5(rows: list[dict[str, Any]], scores: list[np.ndarray], chunk_doc: dict[int, int]) -> float:
    ranks = [R.doc_ranking([r["ids"][i] for i in np.argsort(-s, kind="stable")], chunk_doc) if len(r["ids"]) else []
             for r, s in zip(rows, scores)]
    return R.metrics(ranks, [Q(r["relevant"]) for r in rows])["recall@5"]


def cv(rows: list[dict[str, Any]], feat: Callable[[dict[str, Any]], np.ndarray], chunk_doc: dict[int, int],
       k: int = 3) -> tuple[float, list[np.ndarray]]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    xs = [feat(r) for r in rows]
    scores: list[np.ndarray] = [np.zeros(0)] * len(rows)
    folds = []
    for f in range(k):
        tr = [i for i in range(len(rows)) if i % k != f]
        te = [i for i in range(len(rows)) if i % k == f]
        m = HistGradientBoostingClassifier(random_state=0, early_stopping=False, **PARAMS)
        m.fit(np.vstack([xs[i] for i in tr]), np.concatenate([rows[i]["y"] for i in tr]))
        for i in te:
            scores[i] = m.decision_function(xs[i]) if len(xs[i]) else np.zeros(0)
        folds.append(recall5([rows[i] for i in te], [scores[i] for i in te], chunk_doc))
    return float(np.mean(folds)), scores


def candidate_rows(store: Store, questions: list[R.Question], vecs: np.ndarray, chunk_doc: dict[int, int],
                   pool: int) -> list[dict[str, Any]]:
    saved = fusion.POOL
    fusion.POOL = pool
    try:
        rows = []
        for q, v in zip(questions, vecs):
            lex, den = store._bm25(q.text, 100), store._dense(v, 100)
            cand = store.fusion_features(q.text, v, lex[:pool], den[:pool])
            rows.append({"q": q.text, "v": v, "relevant": q.relevant, "ids": cand.ids, "x": cand.features,
                         "y": np.array([1 if chunk_doc.get(c, -1) in q.relevant else 0 for c in cand.ids]),
                         "lex": lex, "den": den})
        return rows
    finally:
        fusion.POOL = saved


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--index", type=Path, help="store file with the tool documents (created when missing)")
    ap.add_argument("--out", type=Path, default=RESULTS / "retrieval_probes.json", help="default bench/results/retrieval_probes.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    tools, questions, meta = R.load_bfcl(None)
    store, chunk_doc = R.tool_store(args.index, tools, "sf-probes-")
    names = [t.name for t in tools]
    dev = [q for q in questions if q.split == "dev"]
    vecs = store.embedder.embed([q.text for q in dev])
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "questions": len(dev), "split": "dev only, 3-fold CV",
                           "params": PARAMS, "corpus_sha256": meta["sha256"]}

    rows = candidate_rows(store, dev, vecs, chunk_doc, fusion.POOL)
    base, base_scores = cv(rows, lambda r: r["x"], chunk_doc)
    out["baseline_cv_recall@5"] = base
    print(f"baseline (shipped features, pool {fusion.POOL}): CV recall@5 {base:.4f}")

    out["pool"] = {}
    for pool in (20, 40, 50):
        out["pool"][pool] = cv(candidate_rows(store, dev, vecs, chunk_doc, pool), lambda r: r["x"], chunk_doc)[0]
        print(f"pool {pool}: {out['pool'][pool]:.4f}")

    texts = store.chunk_texts(sorted(chunk_doc))
    ids_all, mat, _ = store._vectors()
    pos = {int(c): i for i, c in enumerate(ids_all)}

    def relative(r: dict[str, Any]) -> np.ndarray:
        x = r["x"]
        if not len(x):
            return x
        cos, body, head, lex = (x[:, FI[f]] for f in ("cosine", "body_idf_cover", "head_idf_cover", "lex_score"))
        groups: dict[str, list[int]] = {}
        for i, c in enumerate(r["ids"]):
            groups.setdefault(texts[c][0].strip().lower(), []).append(i)
        g = np.zeros((len(x), 5))
        for idx in map(np.array, groups.values()):
            order = np.argsort(-cos[idx], kind="stable")
            g[idx, 0] = len(idx)
            g[idx, 1], g[idx, 2], g[idx, 3] = cos[idx] - cos[idx].max(), body[idx] - body[idx].max(), lex[idx] - lex[idx].max()
            g[idx[order], 4] = np.arange(len(idx))
        return np.column_stack([x, body - body.max(), head - head.max(), g])

    def prf(r: dict[str, Any]) -> np.ndarray:
        x = r["x"]
        if not len(x):
            return x
        c = mat[[pos[i] for i in r["ids"]]].astype(np.float64)
        lex3 = [pos[i] for i, _ in r["lex"][:3]]
        top_lex = c @ mat[lex3[0]] if lex3 else np.zeros(len(c))
        lex_centroid = c @ mat[lex3].mean(0) if lex3 else np.zeros(len(c))
        moved = r["v"] + 0.5 * mat[[pos[i] for i, _ in r["den"][:3]]].mean(0)
        return np.column_stack([x, top_lex, lex_centroid, c @ (moved / np.linalg.norm(moved))])

    part_vecs: dict[str, np.ndarray] = {}
    for r in rows:
        ps = [p.strip(" ,.") for p in _SPLIT.split(r["q"]) if p and len(p.strip(" ,.")) > 12]
        if len(ps) > 1:
            part_vecs[r["q"]] = store.embedder.embed(ps)

    def parts(r: dict[str, Any]) -> np.ndarray:
        x = r["x"]
        if not len(x):
            return x
        if r["q"] not in part_vecs:
            return np.column_stack([x, x[:, FI["cosine"]], np.argsort(np.argsort(-x[:, FI["cosine"]])), np.ones(len(x))])
        s = mat[[pos[i] for i in r["ids"]]] @ part_vecs[r["q"]].T
        best_rank = np.argsort(np.argsort(-s, axis=0), axis=0).min(1)
        return np.column_stack([x, s.max(1), best_rank, np.full(len(x), len(part_vecs[r["q"]]))])

    for name, feat in (("relative", relative), ("prf", prf), ("parts", parts)):
        out[name] = cv(rows, feat, chunk_doc)[0]
        print(f"{name}: {out[name]:.4f}")
    out["parts_questions"] = len(part_vecs)

    # -- query adapter ---------------------------------------------------------------------------------
    m64 = mat.astype(np.float64)
    positives = {id(r): [pos[c] for c, d in chunk_doc.items() if d in r["relevant"]] for r in rows}

    def train_adapter(tr: list[dict[str, Any]], lam: float, steps: int = 200, lr: float = 1e-3, tau: float = 0.05) -> np.ndarray:
        q = np.array([r["v"] for r in tr], dtype=np.float64)
        target = np.zeros((len(q), len(m64)))
        for i, r in enumerate(tr):
            target[i, positives[id(r)]] = 1 / len(positives[id(r)])
        a = np.zeros((q.shape[1], q.shape[1]))
        m1, m2 = np.zeros_like(a), np.zeros_like(a)
        for t in range(1, steps + 1):  # Adam on softmax cross-entropy over every chunk
            logits = (q + q @ a) @ m64.T / tau
            logits -= logits.max(1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(1, keepdims=True)
            grad = q.T @ ((p - target) @ m64 / tau / len(q)) + lam * a
            m1, m2 = 0.9 * m1 + 0.1 * grad, 0.999 * m2 + 0.001 * grad * grad
            a -= lr * (m1 / (1 - 0.9 ** t)) / (np.sqrt(m2 / (1 - 0.999 ** t)) + 1e-8)
        return a

    def dense_recall(rs: list[dict[str, Any]], a: np.ndarray | None) -> float:
        if not rs:
            return float("nan")
        q = np.array([r["v"] for r in rs], dtype=np.float64)
        q = q + q @ a if a is not None else q
        s = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ m64.T
        ranks = [R.doc_ranking([int(ids_all[i]) for i in np.argsort(-row)[:40]], chunk_doc) for row in s]
        return R.metrics(ranks, [Q(r["relevant"]) for r in rs])["recall@5"]

    out["adapter"] = []
    for lam in (0.01, 0.1):
        res = []
        for f in range(3):
            tr = [r for i, r in enumerate(rows) if i % 3 != f]
            te = [r for i, r in enumerate(rows) if i % 3 == f]
            seen = {d for r in tr for d in r["relevant"]}
            unseen = [r for r in te if not (r["relevant"] & seen)]
            a = train_adapter(tr, lam)
            res.append((dense_recall(te, None), dense_recall(te, a), len(unseen), dense_recall(unseen, None), dense_recall(unseen, a)))
        mean = np.mean(res, axis=0)
        row = {"ridge": lam, "dense_recall@5_all": [round(mean[0], 4), round(mean[1], 4)],
               "heldout_unseen_docs_questions": round(mean[2], 1),
               "dense_recall@5_unseen_docs": [round(mean[3], 4), round(mean[4], 4)]}
        out["adapter"].append(row)
        print(f"adapter ridge {lam}: dense recall@5 {mean[0]:.3f} -> {mean[1]:.3f}; "
              f"on questions with unseen documents {mean[3]:.3f} -> {mean[4]:.3f}")
    test = [q for q in questions if q.split == "test"]
    dev_docs = {d for q in dev for d in q.relevant}
    out["test_questions_sharing_a_document_with_dev"] = sum(1 for q in test if q.relevant & dev_docs)

    # -- where the baseline misses ---------------------------------------------------------------------
    miss: Counter[str] = Counter()
    for r, s in zip(rows, base_scores):
        ranked = R.doc_ranking([r["ids"][i] for i in np.argsort(-s, kind="stable")], chunk_doc)
        pool_docs = {chunk_doc.get(c, -1) for c in r["ids"]}
        for d in r["relevant"]:
            w = 1 / len(r["relevant"])
            if d in ranked[:5]:
                miss["hit"] += w
            elif d not in pool_docs:
                miss["not in either half's top 30"] += w
            elif any(x >= 0 and names[x] == names[d] for x in ranked[:5]):
                miss["a same-named sibling in the top 5"] += w
                if sum(n == names[d] for n in names) > 5:
                    miss["  of which in a group of more than 5"] += w
            else:
                miss["other functions in the top 5"] += w
    out["misses"] = {k: round(v / len(rows), 4) for k, v in miss.items()}
    print(json.dumps(out["misses"], indent=1))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    store.close()
    write_json(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
