"""The knowledge base: reading, chunking, incremental indexing, hybrid search (MiniLM int8 ONNX)."""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from smallfleet.errors import InvalidRequestError
from smallfleet.retrieval import Store, chunk, only_stopwords, parse_meta, read_text, rrf
from smallfleet.retrieval import store as store_mod
from smallfleet.retrieval.embed import DIM

from .test_cli import sf


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    d = tmp_path_factory.mktemp("kb")
    (d / "lamps.md").write_text("# Lamps\n\nThe Arc pendant takes E27 bulbs.\n\n# Warranty\n\n"
                                "The Halo ceiling light has a 3-year warranty including the LED driver.\n")
    (d / "shipping.html").write_text("<html><body><h1>Shipping</h1><p>Parcels to Finland arrive in five working days."
                                     "</p><script>var secret = 1;</script></body></html>")
    (d / "returns.txt").write_text("Returns are accepted within 30 days if the item is unused.", encoding="cp1252")
    s = Store(d / "kb.db")
    for f in ("lamps.md", "shipping.html", "returns.txt"):
        assert s.add(d / f) == "added"
    s.dir = d  # type: ignore[attr-defined]
    return s


def test_reading_and_chunking(tmp_path: Path) -> None:
    html = tmp_path / "a.html"
    html.write_text("<h2>T</h2><p>Body text.</p><style>x{}</style><script>evil()</script>")
    assert "evil" not in read_text(html) and "## T" in read_text(html)
    binary = tmp_path / "b.bin"
    binary.write_bytes(b"\x00\x01" * 100)
    with pytest.raises(InvalidRequestError, match="binary"):
        read_text(binary)
    latin = tmp_path / "c.txt"
    latin.write_bytes("café crème".encode("cp1252"))
    assert read_text(latin) == "café crème"
    long = "# A\n\n" + " ".join(f"Sentence number {i} is here." for i in range(200)) + "\n\n# B\n\nShort."
    pieces = chunk(long, size=300)
    assert all(len(t) <= 300 for _, t in pieces) and pieces[0][0] == "A" and pieces[-1] == ("B", "Short.")
    assert chunk("") == []


def test_incremental_indexing(store: Store, tmp_path: Path) -> None:
    d = store.dir  # type: ignore[attr-defined]
    assert store.add(d / "lamps.md") == "unchanged"
    (d / "returns.txt").write_text("Returns are accepted within 60 days.")
    assert store.add(d / "returns.txt") == "updated"
    docs = {Path(x["path"]).name: x["chunks"] for x in store.list()}
    assert docs == {"lamps.md": 2, "shipping.html": 1, "returns.txt": 1}
    hits = store.search("how many days for returns", 1)
    assert "60 days" in hits[0].text
    assert store.remove(d / "returns.txt") and not store.remove(d / "returns.txt")


@pytest.mark.parametrize("query, source", [
    ("which bulb fits the pendant?", "lamps.md"),
    ("how long is the guarantee on the ceiling lamp", "lamps.md"),  # no shared keyword: dense finds it
    ("delivery time to Finland", "shipping.html"),
])
def test_hybrid_search(store: Store, query: str, source: str) -> None:
    hits = store.search(query, 2)
    assert Path(hits[0].source).name == source and hits[0].score > 0


def test_store_implements_the_knowledge_base_interface(store: Store) -> None:
    from smallfleet.retrieval import KnowledgeBase

    assert isinstance(store, KnowledgeBase)  # what the engine and the CLI rely on; a pgvector backend implements the same


def test_search_modes_and_bad_queries(store: Store) -> None:
    assert store.bm25("the of and", 5) == []  # stopwords only: nothing for the keyword index
    assert only_stopwords("what is the") and not only_stopwords("the pendant")
    assert store.search("what is the", 1, mode="hybrid")  # dense still ranks
    with pytest.raises(InvalidRequestError):
        store.search("   ")
    with pytest.raises(InvalidRequestError):
        store.search("x", mode="magic")
    assert rrf([[1, 2], [2, 3]])[2] > rrf([[1, 2], [2, 3]])[1]


def test_index_and_search_cli(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Lamps\n\nThe Arc pendant takes E27 bulbs.")
    (tmp_path / "docs" / "junk.bin").write_bytes(b"\x00" * 64)
    idx = str(tmp_path / "kb.db")
    r = sf("index", "add", str(tmp_path / "docs"), "--index", idx)
    assert r.returncode == 1 and "1 added" in r.stdout and "binary" in r.stderr
    r = sf("search", "pendant bulbs", "--index", idx, "--json", "--k", "3")
    hits = json.loads(r.stdout)
    assert r.returncode == 0 and hits[0]["source"].endswith("a.md") and {"id", "source", "score", "text"} <= set(hits[0])
    r = sf("search", "-", "--index", idx, input="pendant\nthe\n")
    assert len(r.stdout.splitlines()) == 2 and "only common words" in r.stderr
    r = sf("search", "x", "--index", str(tmp_path / "none.db"))
    assert r.returncode == 2 and "no index" in r.stderr


def test_metadata_filters(tmp_path: Path) -> None:
    (tmp_path / "eu.md").write_text("# Refunds\n\nRefunds take 14 days for customers in the EU.")
    (tmp_path / "us.txt").write_text("Refunds take 30 days for customers in the US.")
    (tmp_path / "ship.html").write_text("<h1>Shipping</h1><p>Shipping is free above 50 euros.</p>")
    s = Store(tmp_path / "kb.db")
    assert s.add(tmp_path / "eu.md", {"region": "eu"}) == "added" and s.add(tmp_path / "us.txt", {"region": "us"}) == "added"
    assert s.add(tmp_path / "ship.html") == "added"
    assert {Path(d["path"]).name: d["meta"] for d in s.list()} == {
        "eu.md": {"type": "md", "region": "eu"}, "us.txt": {"type": "txt", "region": "us"}, "ship.html": {"type": "html"}}
    q = "how long do refunds take"
    for mode in ("hybrid", "rrf", "bm25", "dense"):
        assert {Path(h.source).name for h in s.search(q, 5, mode)} >= {"eu.md", "us.txt"}
        assert [Path(h.source).name for h in s.search(q, 5, mode, where={"region": "us"})] == ["us.txt"]
        assert s.search(q, 5, mode, where={"region": "mars"}) == []
    assert [Path(h.source).name for h in s.search("free shipping", 5, where={"type": "html"})] == ["ship.html"]
    # same text, new metadata: no re-embedding; a changed file keeps its tags; no meta keeps them too
    assert s.add(tmp_path / "eu.md", {"region": "eu", "team": "support"}) == "metadata"
    assert s.add(tmp_path / "eu.md") == "unchanged"
    (tmp_path / "eu.md").write_text("# Refunds\n\nRefunds take 21 days for customers in the EU.")
    assert s.add(tmp_path / "eu.md") == "updated"
    assert [h.text for h in s.search(q, 5, where={"team": "support", "region": "eu"})] == \
        ["Refunds take 21 days for customers in the EU."]
    with pytest.raises(InvalidRequestError, match="metadata key"):
        s.search(q, where={"no spaces": "x"})
    with pytest.raises(InvalidRequestError, match="metadata key"):
        s.add(tmp_path / "us.txt", {"bad key": "x"})
    with pytest.raises(InvalidRequestError, match="KEY=VALUE"):
        parse_meta("region")
    assert parse_meta("region=eu, team=support") == {"region": "eu", "team": "support"} == parse_meta(["region=eu", "team=support"])
    s.close()
    idx = str(tmp_path / "kb.db")
    r = sf("index", "add", str(tmp_path / "us.txt"), "--meta", "region=us-west", "--index", idx)
    assert r.returncode == 0 and "1 metadata updated" in r.stdout
    r = sf("search", "refunds", "--where", "region=us-west", "--json", "--index", idx)
    assert r.returncode == 0 and [Path(h["source"]).name for h in json.loads(r.stdout)] == ["us.txt"]
    r = sf("search", "refunds", "--where", "region", "--index", idx)
    assert r.returncode != 0 and "KEY=VALUE" in r.stderr
    r = sf("index", "ls", "--index", idx, "--json")
    assert {"type": "txt", "region": "us-west"} in [d["meta"] for d in json.loads(r.stdout)]


class BagOfWordsEmbedder:
    """Deterministic stand-in for MiniLM: a sum of one fixed random vector per word, unit length."""

    calls = 0

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                seed = int(hashlib.sha256(w.encode()).hexdigest()[:8], 16)
                out[i] += np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
            out[i] /= max(float(np.linalg.norm(out[i])), 1e-12)
        self.calls += 1
        return out


def _kb(tmp_path: Path, docs: dict[str, str]) -> Store:
    s = Store(tmp_path / "kb.db", embedder=BagOfWordsEmbedder())  # type: ignore[arg-type]
    for name, text in docs.items():
        (tmp_path / name).write_text(text)
        assert s.add(tmp_path / name) == "added"
    return s


def test_large_index_dense_search_keeps_the_nearest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # above EXACT_MAX chunks, dense search pre-selects candidates by sign bits; here with tiny limits
    monkeypatch.setattr(store_mod, "EXACT_MAX", 10)
    monkeypatch.setattr(store_mod, "DENSE_CANDIDATES", 30)
    docs = {f"d{i:03d}.txt": f"item{i} alpha{i % 7} beta{i % 11} gamma{i % 13}" for i in range(120)}
    s = _kb(tmp_path, docs)
    ids, mat, bits = s._vectors()
    assert bits is not None and bits.shape == (DIM // 64, 120)
    for i in (3, 42, 117):
        q = f"item{i} alpha{i % 7} beta{i % 11}"
        exact = ids[np.argsort(-(mat @ s.embedder.embed([q])[0]))[:3]].tolist()
        assert s.dense(q, 3) == exact  # 30 of 120 scored exactly, the same top 3
        assert Path(s.search(q, 1, mode="dense")[0].source).name == f"d{i:03d}.txt"
    # a write drops the vectors and their bits: the new document is found at once, and is gone after removal
    (tmp_path / "new.txt").write_text("zebra quokka item3")
    s.add(tmp_path / "new.txt")
    assert Path(s.search("zebra quokka", 1, mode="dense")[0].source).name == "new.txt"
    s.remove(tmp_path / "new.txt")
    assert all(Path(h.source).name != "new.txt" for h in s.search("zebra quokka", 5, mode="dense"))
    s.close()


def test_keyword_search_drops_terms_most_chunks_contain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "PRUNE_MIN_CHUNKS", 10)
    docs = {f"p{i:02d}.txt": f"common words appear here widget{i}" for i in range(30)}
    docs["target.txt"] = "the rare sprocket manual"
    s = _kb(tmp_path, docs)
    # 'common' is in 30 of 31 chunks: left out, so the one chunk with 'sprocket' is all that matches
    ids = s.bm25("common sprocket sprocket", 5)
    assert len(ids) == 1 and Path(s.search("common sprocket", 1, mode="bm25")[0].source).name == "target.txt"
    # only common terms: the rarest is kept, so the query still finds something
    assert len(s.bm25("common words", 50)) == 30
    # hybrid runs the keyword half beside the dense half and fuses both
    assert Path(s.search("rare sprocket", 1)[0].source).name == "target.txt"
    s.close()


def test_fusion_export_matches_scikit_learn() -> None:
    # the numpy tree walker must give scikit-learn's own log-odds for an exported model
    from sklearn.ensemble import HistGradientBoostingClassifier

    from smallfleet.retrieval import fusion

    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 3))
    y = ((x[:, 0] + 0.5 * x[:, 1] ** 2 - x[:, 2] * x[:, 0]) > 0.3).astype(int)
    m = HistGradientBoostingClassifier(max_iter=30, max_leaf_nodes=9, random_state=0, early_stopping=False).fit(x, y)
    spec = fusion.export(m, {"features": ["a", "b", "c"]})
    walker = fusion.FusionModel(spec, features=("a", "b", "c"))
    assert np.allclose(walker.score(x), m.decision_function(x), atol=1e-9)
    with pytest.raises(ValueError, match="retrain"):
        fusion.FusionModel(spec)  # trained on other features than the store computes


def test_shipped_fusion_model_and_its_features(store: Store) -> None:
    from smallfleet.retrieval import fusion

    model = fusion.shipped()
    assert model is not None, "smallfleet/retrieval/data/fusion-v1.json is missing (bench/tools/train_fusion.py)"
    assert model.meta["questions"] > 0 and len(model.meta["training_data_sha256"]) == 64
    q = "which bulb fits the Arc pendant"
    v = store.embedder.embed([q])[0]
    cand = store.fusion_features(q, v, store._bm25(q, fusion.POOL), store._dense(v, fusion.POOL))
    assert cand.features.shape == (len(cand.ids), len(fusion.FEATURES)) and np.isfinite(cand.features).all()
    feats = dict(zip(fusion.FEATURES, cand.features[0]))  # the best keyword hit comes first
    assert "E27" in store.chunk_texts([cand.ids[0]])[cand.ids[0]][1] and feats["lex_rel"] == 1.0 and feats["in_lex"] == 1.0
    hits = store.search(q, 3)
    assert all(0.0 < h.score < 1.0 for h in hits) and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # reciprocal rank fusion stays available, and a k beyond the learned pool still gets k results
    assert Path(store.search(q, 1, mode="rrf")[0].source).name == "lamps.md"
    assert len(store.search(q, 40)) == store.count()


def test_fusion_stems_split_identifiers() -> None:
    from smallfleet.retrieval.fusion import stems

    assert stems("getCurrentWeather") == ["get", "curre", "weath"]
    assert stems("math.factorial_of") == ["math", "facto", "of"]


def test_a_grounded_search_embeds_its_query_once(tmp_path: Path) -> None:
    s = _kb(tmp_path, {"a.txt": "the arc pendant takes e27 bulbs", "b.txt": "parcels to finland take five days"})
    before = s.embedder.calls
    hits = s.search("pendant bulbs", 2)
    s.relevance("pendant bulbs", hits)  # what the engine does next for the same query
    assert s.embedder.calls == before + 1
    s.search("finland parcels", 1)
    assert s.embedder.calls == before + 2
    s.close()
