"""Learned fusion of the keyword and dense rankings: a small gradient-boosted model scores each
candidate chunk from generic signals (ranks and scores of both halves, how much of the query the
chunk's heading and text cover, idf-weighted) and the hybrid ranking is sorted by that score.

Why: reciprocal rank fusion ignores how strong each half's evidence is (a BM25 score far above the
rest, a heading that names exactly what was asked). The model is trained by ``bench/tools/train_fusion.py``
on the dev questions of bench/retrieval.py's corpus and shipped as ``data/fusion-v1.json`` (trees,
training-data hash, cross-validated metrics); it is evaluated on that benchmark's test questions only.
Inference is plain numpy over all trees at once (no scikit-learn at query time).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from .terms import STOPWORDS  # the same stop words as the keyword half

if TYPE_CHECKING:  # pragma: no cover
    from .store import Store

FUSION_FILE = Path(__file__).parent / "data" / "fusion-v1.json"
POOL = 30  # candidates taken from each half
STEM_CACHE_MAX = 200_000  # chunks whose stems a store keeps between queries
FEATURES = (
    "rrf", "lex_rr", "dense_rr", "lex_rel", "lex_score", "cosine", "cosine_gap", "head_cover", "head_hits",
    "body_cover", "log_len", "in_lex", "in_dense", "body_idf_cover", "head_idf_cover", "log_query_terms",
)
_WORD = re.compile(r"[^\W_]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def stems(text: str) -> list[str]:
    """Lower-cased word stems: identifiers split at _ . and camelCase, each word cut to 5 characters
    (a crude stemmer that joins calculate/calculates/calculation without a language model)."""
    return [w.lower()[:5] for w in _WORD.findall(_CAMEL.sub(" ", text))]


@dataclass
class Candidates:
    ids: list[int]
    features: np.ndarray  # (len(ids), len(FEATURES))


def candidates(store: Store, query: str, lexical: list[tuple[int, float]], dense: list[tuple[int, float]],
               top_cosine: float, cosine: dict[int, float]) -> Candidates:
    """Feature rows for the union of the two halves' candidates (lexical/dense: (chunk id, score) best first)."""
    lex_ids = [c for c, _ in lexical]
    dense_ids = [c for c, _ in dense]
    ids = list(dict.fromkeys(lex_ids + dense_ids))
    if not ids:
        return Candidates([], np.zeros((0, len(FEATURES)), np.float32))
    lex_rank = {c: r for r, c in enumerate(lex_ids)}
    dense_rank = {c: r for r, c in enumerate(dense_ids)}
    lex_score = dict(lexical)
    top_lex = lexical[0][1] if lexical else 1.0
    words = list(dict.fromkeys(w for w in _WORD.findall(query.lower()) if w not in STOPWORDS))
    total, df = store._term_counts()
    idf = {w[:5]: math.log(1 + (total - df.get(w, 0) + 0.5) / (df.get(w, 0) + 0.5)) for w in words}
    qset = set(idf)
    idf_sum = sum(idf.values()) or 1.0
    cache = store.stem_cache
    missing = [c for c in ids if c not in cache]
    if missing:
        if len(cache) > STEM_CACHE_MAX:
            cache.clear()
        for c, (head, body) in store.chunk_texts(missing).items():
            bv = stems(body)
            cache[c] = (frozenset(stems(head)), frozenset(bv), len(bv))
    rows = []
    for c in ids:
        hv, bset, n_body = cache.get(c, (frozenset(), frozenset(), 0))
        lr, dr = lex_rank.get(c, POOL), dense_rank.get(c, POOL)
        ls = lex_score.get(c, 0.0)
        cos = cosine.get(c, 0.0)
        rows.append((
            1 / (61 + lr) + 1 / (61 + dr), 1 / (lr + 1) if c in lex_rank else 0.0, 1 / (dr + 1) if c in dense_rank else 0.0,
            ls / max(top_lex, 1e-9), ls, cos, cos - top_cosine,
            len(hv & qset) / max(len(hv), 1), len(hv & qset), len(bset & qset) / max(len(qset), 1),
            math.log1p(n_body), float(c in lex_rank), float(c in dense_rank),
            sum(idf[w] for w in qset & bset) / idf_sum, sum(idf[w] for w in qset & hv) / idf_sum,
            math.log1p(len(qset)),
        ))
    return Candidates(ids, np.asarray(rows, dtype=np.float64))


class FusionModel:
    """Gradient-boosted trees (exported from scikit-learn's HistGradientBoostingClassifier) as flat
    arrays; ``score`` walks every tree at once, one level per step."""

    def __init__(self, spec: dict[str, Any], features: tuple[str, ...] = FEATURES) -> None:
        if tuple(spec["features"]) != features:
            raise ValueError("the fusion model was trained on other features; retrain it (python -m bench.tools.train_fusion)")
        self.meta = {k: v for k, v in spec.items() if k != "trees"}
        # all trees in one flat node array; a leaf points to itself, so walking on past it changes nothing
        feature: list[int] = []
        threshold: list[float] = []
        left: list[int] = []
        right: list[int] = []
        value: list[float] = []
        roots: list[int] = []
        for t in spec["trees"]:
            base = len(feature)
            roots.append(base)
            for i, leaf in enumerate(t["leaf"]):
                feature.append(0 if leaf else t["feature"][i])
                threshold.append(0.0 if leaf else t["threshold"][i])
                left.append(base + i if leaf else base + t["left"][i])
                right.append(base + i if leaf else base + t["right"][i])
                value.append(t["value"][i] if leaf else 0.0)
        self.feature = np.array(feature, np.int64)
        self.threshold = np.array(threshold, np.float64)
        self.left = np.array(left, np.int64)
        self.right = np.array(right, np.int64)
        self.value = np.array(value, np.float64)
        self.roots = np.array(roots, np.int64)
        self.depth = int(spec["max_depth"])
        self.baseline = float(spec["baseline"])

    @classmethod
    def load(cls, path: str | Path = FUSION_FILE) -> FusionModel:
        return cls(orjson.loads(Path(path).read_bytes()))

    def score(self, x: np.ndarray) -> np.ndarray:
        """Log-odds that each row is a relevant chunk."""
        n = len(x)
        flat = np.ascontiguousarray(x, dtype=np.float64).ravel()
        offset = np.tile(np.arange(n) * x.shape[1], len(self.roots))  # (tree, row) pairs, tree-major
        node = np.repeat(self.roots, n)
        for _ in range(self.depth):
            go_left = flat[offset + self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        logits: np.ndarray = self.baseline + self.value[node].reshape(len(self.roots), n).sum(axis=0)
        return logits


def export(model: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """A fitted binary HistGradientBoostingClassifier as the JSON spec FusionModel reads."""
    trees, depth = [], 0
    for (pred,) in model._predictors:  # one tree per iteration for a binary classifier
        n = pred.nodes
        trees.append({"feature": n["feature_idx"].astype(int).tolist(), "threshold": n["num_threshold"].astype(float).tolist(),
                      "left": n["left"].astype(int).tolist(), "right": n["right"].astype(int).tolist(),
                      "leaf": n["is_leaf"].astype(bool).tolist(), "value": n["value"].astype(float).tolist()})
        depth = max(depth, int(n["depth"].max()))
    return {**meta, "features": list(meta.get("features", FEATURES)), "baseline": float(np.ravel(model._baseline_prediction)[0]),
            "max_depth": depth, "trees": trees}


@lru_cache(maxsize=1)
def shipped() -> FusionModel | None:
    """The model shipped with the package, or None when it is missing (the store then falls back to RRF)."""
    return FusionModel.load() if FUSION_FILE.is_file() else None
