"""Cluster (S3): captured steps grouped into tasks.

First by structure (:func:`~smallfleet.capture.structure_signature`: step kind, offered tools,
response schema, system prompt, place in the loop): steps that differ there are different tasks.
Then, inside a structure, by what the step is about: the task text's MiniLM embedding, k-means with k
chosen by the data (the k from 1 to 8 whose silhouette is best, and only above ``MIN_SILHOUETTE``;
else the structure is one task). Each cluster gets a readable name (its tools and the terms that set
it apart), its size, its share of the spend and example ids.

The router never runs MiniLM: a request is matched to a cluster by its signature and, where a
structure holds several clusters, the nearest centroid in a hashed word space (:mod:`.match`), built
here from each cluster's members.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..capture.store import TraceStore
from ..capture.trace import Trace, task_text
from ..retrieval.terms import STOPWORDS
from .match import PLACEHOLDER, term_vector

MIN_SILHOUETTE = 0.12  # below this a split is noise: measured on one-task groups it stays under 0.08
MAX_K = 8
MIN_CLUSTER = 5  # a group smaller than twice this is not split
_TERM = re.compile(r"[a-z][a-z0-9_'-]{2,}")


@dataclass
class Cluster:
    id: str
    kind: str
    signature: str
    name: str
    tools: list[str]
    terms: list[str]
    size: int = 0
    spend_usd: float = 0.0
    spend_share: float = 0.0
    examples: list[str] = field(default_factory=list)  # a few trace ids to look at
    members: list[str] = field(default_factory=list)  # every trace id, in time order
    centroid: dict[int, float] = field(default_factory=dict)  # hashed-term space (match.py), unit length

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "kind": self.kind, "signature": self.signature, "tools": self.tools,
                "terms": self.terms, "size": self.size, "spend_usd": self.spend_usd, "spend_share": self.spend_share,
                "examples": self.examples}


def _terms(texts: Sequence[str]) -> Counter[str]:
    c: Counter[str] = Counter()
    for t in texts:
        c.update(set(w for w in _TERM.findall(PLACEHOLDER.sub(" ", t).lower()) if w not in STOPWORDS))
    return c


def _choose_k(x: np.ndarray) -> np.ndarray:
    """Labels for the rows of ``x`` (unit vectors): one cluster unless a split is clearly better."""
    n = len(x)
    if n < 2 * MIN_CLUSTER:
        return np.zeros(n, dtype=int)
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    best, labels = MIN_SILHOUETTE, np.zeros(n, dtype=int)
    for k in range(2, min(MAX_K, n // MIN_CLUSTER) + 1):
        km = KMeans(n_clusters=k, n_init=4, random_state=0).fit(x)
        if len(set(km.labels_)) < k:
            continue
        s = float(silhouette_score(x, km.labels_, metric="cosine"))
        if s > best:
            best, labels = s, km.labels_
    return labels


def cluster_traces(traces: Sequence[Trace], embed: Callable[[list[str]], np.ndarray] | None = None) -> list[Cluster]:
    """Clusters of ``traces``, largest spend first; ids ``c1``, ``c2``… in that order.

    ``embed`` maps texts to unit vectors (default: the shipped MiniLM)."""
    if embed is None:
        from ..retrieval.embed import Embedder

        embed = Embedder().embed
    groups: dict[tuple[str, str], list[Trace]] = {}
    for t in traces:
        groups.setdefault((t.kind, t.signature), []).append(t)
    all_terms = _terms([task_text(t.request) for t in traces])
    n_all = max(1, len(traces))
    total_spend = sum(t.cost_usd for t in traces) or 1.0
    out: list[Cluster] = []
    for (kind, sig), members in groups.items():
        texts = [task_text(t.request) for t in members]
        labels = _choose_k(embed(texts)) if len(members) >= 2 * MIN_CLUSTER else np.zeros(len(members), dtype=int)
        tools = sorted({str((x.get("function") or {}).get("name", "")) for x in members[0].request.get("tools") or []})
        for lab in sorted(set(int(v) for v in labels)):
            part = [t for t, v in zip(members, labels) if v == lab]
            ptexts = [task_text(t.request) for t in part]
            local = _terms(ptexts)
            # terms frequent here and rare elsewhere (tf-idf over the whole store)
            common = [w for w in local if local[w] >= max(1, math.ceil(0.2 * len(part)))]  # not one step's city
            scored = sorted(common, key=lambda w: (-local[w] / len(part) * math.log(n_all / all_terms[w] + 1), w))
            terms = scored[:4]
            vecs = [term_vector(x) for x in ptexts]
            cen: Counter[int] = Counter()
            for v in vecs:
                cen.update(v)
            norm = math.sqrt(sum(w * w for w in cen.values())) or 1.0
            spend = sum(t.cost_usd for t in part)
            name = f"{kind}: " + (", ".join(tools[:3]) + ("…" if len(tools) > 3 else "") + " | " if tools else "") + \
                (" ".join(terms) if terms else "(no words)")
            out.append(Cluster(id="", kind=kind, signature=sig, name=name, tools=tools, terms=terms, size=len(part),
                               spend_usd=spend, spend_share=spend / total_spend, examples=[t.id for t in part[:3]],
                               members=[t.id for t in part], centroid={k: w / norm for k, w in cen.items()}))
    out.sort(key=lambda c: (-c.spend_usd, -c.size, c.name))
    for i, c in enumerate(out, 1):
        c.id = f"c{i}"
    return out


def save_clusters(store: TraceStore, clusters: Sequence[Cluster]) -> None:
    store.put_learned("clusters", [{**c.summary(), "members": c.members, "centroid": c.centroid} for c in clusters])


def load_clusters(store: TraceStore) -> list[Cluster]:
    """The clusters last computed for this store (``smallfleet learn clusters``); [] when never."""
    got = store.get_learned("clusters")
    if got is None:
        return []
    out = []
    for d in got[1]:
        out.append(Cluster(id=d["id"], kind=d["kind"], signature=d["signature"], name=d["name"], tools=d["tools"],
                           terms=d["terms"], size=d["size"], spend_usd=d["spend_usd"], spend_share=d["spend_share"],
                           examples=d["examples"], members=d["members"],
                           centroid={int(k): float(v) for k, v in d["centroid"].items()}))
    return out
