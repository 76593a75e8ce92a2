"""A local knowledge base in one SQLite file: documents, structure-aware chunks, FTS5 (BM25) and
dense vectors, searched as a hybrid fused by a small learned model (reciprocal rank fusion without it).

Writes are transactional (a document and all its chunks, or nothing); re-adding an unchanged file is
a no-op (content hash); a changed file replaces its old chunks. ``Store`` implements
:class:`~smallfleet.retrieval.base.KnowledgeBase`, the interface a PostgreSQL/pgvector backend would
implement as well.
"""

from __future__ import annotations

import hashlib
import html.parser
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..errors import InvalidRequestError, NotAvailableError
from . import fusion
from .embed import DIM, Embedder
from .terms import STOPWORDS

MAX_FILE_BYTES = 50 << 20
CHUNK_CHARS = 800
# Dense search is exact up to EXACT_MAX chunks. Above, the sign bits of the vectors (48 bytes a chunk)
# pick DENSE_CANDIDATES candidates by Hamming distance first, and only those are scored exactly: over
# 100k vectors (150 MB) ~1.3 ms instead of ~11 ms here. bench/retrieval.py measures how much of the
# exact top 10 this keeps (0.99 at 100k chunks).
EXACT_MAX = 20_000
DENSE_CANDIDATES = 1000
# Keyword search in an index of at least PRUNE_MIN_CHUNKS chunks leaves out query terms found in more
# than PRUNE_DF of them (unless none would be left): they add little to BM25 and most of FTS5's work
# (its time grows with the postings it reads). 0.05 was chosen on the dev questions of bench/retrieval.py.
PRUNE_MIN_CHUNKS = 1000
PRUNE_DF = 0.05
MODES = ("hybrid", "rrf", "bm25", "dense")
_META_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL, added REAL NOT NULL, meta TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, doc_id INTEGER NOT NULL REFERENCES docs(id) ON DELETE CASCADE,
    ord INTEGER NOT NULL, heading TEXT NOT NULL DEFAULT '', text TEXT NOT NULL, vec BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, heading, content='chunks', content_rowid='id');
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text, heading) VALUES (new.id, new.text, new.heading); END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text, heading) VALUES ('delete', old.id, old.text, old.heading); END;
"""


@dataclass(frozen=True)
class Hit:
    id: int
    source: str
    score: float
    text: str
    heading: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "score": round(self.score, 6), "text": self.text, "heading": self.heading}


# -- reading and chunking ---------------------------------------------------------------------------
class _HTMLText(html.parser.HTMLParser):
    _BLOCK = frozenset({"p", "div", "br", "li", "tr", "section", "article", "pre", "table"})

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag.startswith("h") and tag[1:].isdigit():
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def read_text(path: Path) -> str:
    """Text of a .txt/.md/.html/.pdf file; a clear error for anything unreadable."""
    if not path.is_file():
        raise InvalidRequestError(f"{path}: not a file.")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InvalidRequestError(f"{path}: {size >> 20} MiB is over the {MAX_FILE_BYTES >> 20} MiB limit.")
    raw = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        try:
            from pypdf import PdfReader
        except ImportError as e:
            raise NotAvailableError(f"{path}: PDF needs the pypdf package.", hint="pip install pypdf") from e
        import io

        try:
            return "\n\n".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(raw)).pages)
        except Exception as e:  # pypdf raises many kinds on broken files
            raise InvalidRequestError(f"{path}: unreadable PDF ({e.__class__.__name__}).") from e
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = raw.decode("utf-16")
    elif b"\x00" in raw[:8192]:
        raise InvalidRequestError(f"{path}: looks binary; index text, Markdown, HTML or PDF files.")
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("cp1252", errors="replace")  # legacy Windows text; never fails
    if suffix in (".html", ".htm"):
        p = _HTMLText()
        p.feed(text)
        text = "".join(p.parts)
    return text


_HEADING = re.compile(r"^(#{1,6})\s+(.+)$", re.M)


def chunk(text: str, size: int = CHUNK_CHARS) -> list[tuple[str, str]]:
    """(heading, text) chunks: split at headings, then paragraphs, then sentences, never mid-word."""
    sections: list[tuple[str, str]] = []
    last, heading = 0, ""
    for m in _HEADING.finditer(text):
        sections.append((heading, text[last:m.start()]))
        heading, last = m.group(2).strip(), m.end()
    sections.append((heading, text[last:]))
    out: list[tuple[str, str]] = []
    for head, body in sections:
        buf = ""
        paras = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
        for para in paras:
            pieces = [para] if len(para) <= size else re.split(r"(?<=[.!?])\s+", para)
            for piece in pieces:
                while len(piece) > size:  # a sentence longer than a chunk: cut at a space
                    cut = piece.rfind(" ", 0, size)
                    cut = cut if cut > size // 2 else size
                    if buf:
                        out.append((head, buf))
                        buf = ""
                    out.append((head, piece[:cut].strip()))
                    piece = piece[cut:].strip()
                if buf and len(buf) + len(piece) + 1 > size:
                    out.append((head, buf))
                    buf = ""
                buf = f"{buf}\n\n{piece}" if buf else piece
        if buf:
            out.append((head, buf))
    return [(h, t) for h, t in out if t.strip()]


# -- the store --------------------------------------------------------------------------------------
def rrf(rankings: list[list[int]], k: int = 60) -> dict[int, float]:
    """Reciprocal rank fusion: sum of 1/(k + rank) over the rankings an id appears in."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for r, cid in enumerate(ranking):
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (k + r + 1)
    return scores


def _sign_bits(mat: np.ndarray) -> np.ndarray:
    """(n, DIM) float -> (n, DIM / 64) uint64: bit i set where component i is positive."""
    return np.packbits(mat > 0, axis=1).view(np.uint64)


_popcount: Callable[[np.ndarray], np.ndarray]  # bits set in each element
if hasattr(np, "bitwise_count"):  # numpy >= 2.0
    _popcount = np.bitwise_count
else:  # pragma: no cover - numpy 1.x
    _POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

    def _popcount(x: np.ndarray) -> np.ndarray:
        counts: np.ndarray = _POP8[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)
        return counts


_FTS_TOKEN = re.compile(r"\w+")


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not _META_KEY.fullmatch(key):
        raise InvalidRequestError(f"metadata key {key!r}: use letters, digits, '_', '-' or '.' (at most 64).")
    return key


def _doc_meta(path: Path, meta: Mapping[str, Any]) -> dict[str, str]:
    """A document's metadata: its type (file suffix) plus the given keys, all as strings."""
    out = {"type": path.suffix.lower().lstrip(".") or "txt"}
    for key, value in meta.items():
        _check_key(key)
        if not isinstance(value, (str, int, float, bool)):
            raise InvalidRequestError(f"metadata {key}: the value must be a string or a number.")
        out[key] = str(value)
    return out


def parse_meta(pairs: str | list[str] | tuple[str, ...], what: str = "metadata") -> dict[str, str]:
    """``"region=eu,team=support"`` or ``["region=eu", "team=support"]`` as a dict (CLI options, headers)."""
    items = [x for x in (pairs.split(",") if isinstance(pairs, str) else pairs) if x.strip()]
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not _META_KEY.fullmatch(key):
            raise InvalidRequestError(f"{what} {item.strip()!r}: write KEY=VALUE (key: letters, digits, '_', '-', '.').")
        out[key] = value
    return out


def _where_sql(where: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """A query for the ids of the chunks whose document's metadata has every key with that value."""
    if not isinstance(where, Mapping) or not where:
        raise InvalidRequestError("a metadata filter is a non-empty mapping of key to value.")
    parts, args = [], []
    for key, value in where.items():
        _check_key(key)
        parts.append("CAST(json_extract(d.meta, ?) AS TEXT) = ?")
        args += [f'$."{key}"', str(value)]
    return "SELECT c.id FROM chunks c JOIN docs d ON d.id = c.doc_id WHERE " + " AND ".join(parts), args


def only_stopwords(query: str) -> bool:
    terms = _FTS_TOKEN.findall(query.lower())
    return bool(terms) and all(t in STOPWORDS for t in terms)


class Store:
    """A local knowledge base in one SQLite file: chunks, keyword index and int8 vectors; hybrid search with citations."""

    def __init__(self, path: str | Path, embedder: Embedder | None = None) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(_SCHEMA)
        # term statistics straight from the FTS5 index; in temp, so the file's schema stays as it was
        self.db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.chunks_vocab USING fts5vocab(main, chunks_fts, 'row')")
        self.embedder = embedder or Embedder()
        self._lock = threading.Lock()
        self._matrix: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None  # (ids, vectors, sign bits); reset by writes
        self._doc_freq: tuple[int, dict[str, int]] | None = None  # (chunks, chunks per term); reset by writes
        self.stem_cache: dict[int, tuple[frozenset[str], frozenset[str], int]] = {}  # fusion features; reset by writes
        self._query_vectors: dict[str, np.ndarray] = {}  # the last few query embeddings (independent of the index)
        self._qlock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="kb-bm25")  # the keyword half of a hybrid search

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.db.close()

    def add(self, path: str | Path, meta: dict[str, Any] | None = None) -> str:
        """Index one file; returns "added", "updated", "metadata" (same text, new metadata) or "unchanged".

        Every document's metadata has ``type`` (the file suffix, e.g. "md"); ``meta`` adds or overrides
        keys (string values), for ``search(where=...)``. Re-adding an unchanged file with ``meta``
        replaces its metadata without re-embedding; without ``meta`` the old metadata is kept.
        """
        p = Path(path).expanduser().resolve()
        new_meta = _doc_meta(p, meta) if meta is not None else None
        text = read_text(p)
        sha = hashlib.sha256(text.encode()).hexdigest()
        row = self.db.execute("SELECT id, sha256, meta FROM docs WHERE path=?", (str(p),)).fetchone()
        if row and row[1] == sha:
            if new_meta is None or orjson.loads(row[2]) == new_meta:
                return "unchanged"
            with self._lock:
                self.db.execute("UPDATE docs SET meta=? WHERE id=?", (orjson.dumps(new_meta).decode(), row[0]))
            return "metadata"
        if new_meta is None:  # a changed file keeps what it was tagged with
            new_meta = {**orjson.loads(row[2]), **_doc_meta(p, {})} if row else _doc_meta(p, {})
        pieces = chunk(text)
        vecs = self.embedder.embed([f"{h}\n{t}" if h else t for h, t in pieces]) if pieces else np.zeros((0, DIM), np.float32)
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                if row:
                    self.db.execute("DELETE FROM chunks WHERE doc_id=?", (row[0],))
                    self.db.execute("DELETE FROM docs WHERE id=?", (row[0],))
                cur = self.db.execute("INSERT INTO docs (path, sha256, bytes, added, meta) VALUES (?,?,?,?,?)",
                                      (str(p), sha, p.stat().st_size, time.time(), orjson.dumps(new_meta).decode()))
                doc_id = cur.lastrowid
                self.db.executemany("INSERT INTO chunks (doc_id, ord, heading, text, vec) VALUES (?,?,?,?,?)",
                                    [(doc_id, i, h, t, vecs[i].astype(np.float32).tobytes()) for i, (h, t) in enumerate(pieces)])
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self._matrix = self._doc_freq = None
            self.stem_cache = {}
        return "updated" if row else "added"

    def remove(self, path: str | Path) -> bool:
        p = str(Path(path).expanduser().resolve())
        with self._lock:
            cur = self.db.execute("DELETE FROM docs WHERE path=?", (p,))
            self._matrix = self._doc_freq = None
            self.stem_cache = {}
        return cur.rowcount > 0

    def count(self) -> int:
        n: int = self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return n

    # -- search ------------------------------------------------------------------------------------
    def bm25(self, query: str, k: int) -> list[int]:
        return [c for c, _ in self._bm25(query, k)]

    def _bm25(self, query: str, k: int, where: Mapping[str, Any] | None = None) -> list[tuple[int, float]]:
        """(chunk id, BM25 score) best first; ``where`` limits it to documents with that metadata."""
        terms = list(dict.fromkeys(t for t in _FTS_TOKEN.findall(query.lower()) if t not in STOPWORDS))
        if not terms:
            return []  # nothing a keyword index can match on: dense search alone decides
        total, df = self._term_counts()
        if total >= PRUNE_MIN_CHUNKS:
            rare = [t for t in terms if df.get(t, 0) <= PRUNE_DF * total]
            terms = rare or [min(terms, key=lambda t: df.get(t, 0))]
        match = " OR ".join(f'"{t}"' for t in terms)
        sql, args = _where_sql(where) if where else ("", [])
        within = f" AND rowid IN ({sql})" if where else ""
        return [(r[0], -r[1]) for r in self.db.execute(
            f"SELECT rowid, bm25(chunks_fts) AS s FROM chunks_fts WHERE chunks_fts MATCH ?{within} ORDER BY s LIMIT ?",
            (match, *args, k))]

    def _term_counts(self) -> tuple[int, dict[str, int]]:
        counts = self._doc_freq
        if counts is None:
            total = self.count()
            df = dict(self.db.execute("SELECT term, doc FROM temp.chunks_vocab"))  # pruning and fusion's idf
            counts = self._doc_freq = (total, df)
        return counts

    def _vectors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(ids, unit vectors, sign bits or None), read once and kept until the next write."""
        matrix = self._matrix
        if matrix is None:
            rows = self.db.execute("SELECT id, vec FROM chunks ORDER BY id").fetchall()
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            mat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), DIM) if rows \
                else np.zeros((0, DIM), np.float32)
            # one row per 64-bit word, so the Hamming distance is a few whole-column operations
            bits = np.ascontiguousarray(_sign_bits(mat).T) if len(rows) > EXACT_MAX else None
            matrix = self._matrix = (ids, mat, bits)
        return matrix

    def dense(self, query: str, k: int) -> list[int]:
        return [c for c, _ in self._dense(self._query_vector(query), k)]

    def _query_vector(self, query: str) -> np.ndarray:
        """The query's embedding; the last few are kept, since a grounded step searches and then asks
        relevance() of the same query (one MiniLM pass saved, ~6 ms)."""
        vec = self._query_vectors.get(query)
        if vec is None:
            vec = self.embedder.embed([query])[0]
            with self._qlock:  # searches may run in several threads (the gateway grounds in to_thread)
                if len(self._query_vectors) >= 8:
                    self._query_vectors.pop(next(iter(self._query_vectors)), None)
                self._query_vectors[query] = vec
        return vec

    def _dense(self, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """(chunk id, cosine) best first for the unit query vector q; ``allowed``: sorted chunk ids to
        search among (a metadata filter), scored exactly."""
        ids, mat, bits = self._vectors()
        if not len(ids):
            return []
        rows: np.ndarray | None = None  # candidate rows; None = all
        n_cand = max(DENSE_CANDIDATES, k * 25)
        if allowed is not None:
            pos = np.searchsorted(ids, allowed)
            ok = pos < len(ids)
            ok[ok] = ids[pos[ok]] == allowed[ok]  # ids the vector matrix has (it may predate a write)
            rows = pos[ok]
            if not len(rows):
                return []
        elif bits is not None and len(ids) > n_cand:
            qbits = _sign_bits(q[None, :])[0]
            dist = _popcount(bits[0] ^ qbits[0]).astype(np.uint16)
            for j in range(1, len(bits)):
                dist += _popcount(bits[j] ^ qbits[j])
            rows = np.argpartition(dist, n_cand)[:n_cand]
        # einsum, not `@`: a matrix-vector product this size is memory-bound, and OpenBLAS's threads for it
        # (which then spin) made it 10-30x slower on a busy machine and took CPU from the embedder
        sims = np.einsum("ij,j->i", mat if rows is None else mat[rows], q)
        top = np.argpartition(-sims, min(k, len(sims) - 1))[:k]
        top = top[np.argsort(-sims[top])]
        return [(int(ids[i if rows is None else rows[i]]), float(sims[i])) for i in top]

    def _cosines(self, q: np.ndarray, chunk_ids: list[int]) -> dict[int, float]:
        ids, mat, _ = self._vectors()
        rows = np.searchsorted(ids, chunk_ids)
        return {c: float(np.dot(mat[r], q)) for r, c in zip(rows, chunk_ids) if r < len(ids) and ids[r] == c}

    def chunk_texts(self, chunk_ids: list[int]) -> dict[int, tuple[str, str]]:
        """chunk id -> (heading, text)."""
        q = ",".join("?" * len(chunk_ids))
        return {r[0]: (r[1], r[2]) for r in self.db.execute(f"SELECT id, heading, text FROM chunks WHERE id IN ({q})", chunk_ids)}

    def relevance(self, query: str, hits: list[Hit]) -> list[float]:
        """Cosine similarity of the query to each hit's chunk (for "is the evidence any good?")."""
        if not hits:
            return []
        cos = self._cosines(self._query_vector(query), [h.id for h in hits])
        return [cos.get(h.id, 0.0) for h in hits]

    def search(self, query: str, k: int = 5, mode: str = "hybrid", where: Mapping[str, Any] | None = None) -> list[Hit]:
        """The k best chunks. Modes: ``hybrid`` (both halves, fused by the shipped learned model, or by
        reciprocal rank when it is missing), ``rrf`` (both halves, reciprocal rank fusion), ``bm25``, ``dense``.
        ``where``: only documents whose metadata has every key with that value (compared as text)."""
        if not query.strip():
            raise InvalidRequestError("the query is empty.")
        if mode not in MODES:
            raise InvalidRequestError(f"search mode {mode!r}: use {', '.join(MODES)}.")
        allowed = self._allowed(where) if where else None
        if allowed is not None and not len(allowed):
            return []
        pool = max(k * 4, 20)
        if mode == "bm25":
            scores = rrf([[c for c, _ in self._bm25(query, pool, where)]])
        elif mode == "dense":
            scores = rrf([[c for c, _ in self._dense(self._query_vector(query), pool, allowed)]])
        else:
            model = fusion.shipped() if mode == "hybrid" else None
            pool = max(fusion.POOL, k) if model else pool
            self._vectors()  # loaded here, so that the two halves never read the database at the same time
            lexical = self._pool.submit(self._bm25, query, pool, where)  # SQLite, ONNX and numpy all release the GIL
            try:
                q = self._query_vector(query)
                semantic = self._dense(q, pool, allowed)
            finally:
                keyword = lexical.result()
            if model is None:
                scores = rrf([[c for c, _ in keyword], [c for c, _ in semantic]])
            else:
                scores = self._fuse(model, query, q, keyword, semantic)
        best = sorted(scores.items(), key=lambda kv: -kv[1])[:k]
        if not best:
            return []
        marks = ",".join("?" * len(best))
        rows = {r[0]: r[1:] for r in self.db.execute(
            f"SELECT c.id, d.path, c.text, c.heading FROM chunks c JOIN docs d ON d.id = c.doc_id WHERE c.id IN ({marks})",
            [cid for cid, _ in best])}
        return [Hit(cid, rows[cid][0], s, rows[cid][1], rows[cid][2]) for cid, s in best if cid in rows]

    def _allowed(self, where: Mapping[str, Any]) -> np.ndarray:
        """Sorted ids of the chunks whose document matches ``where``."""
        sql, args = _where_sql(where)
        return np.array(sorted(r[0] for r in self.db.execute(sql, args)), dtype=np.int64)

    def fusion_features(self, query: str, q: np.ndarray, keyword: list[tuple[int, float]],
                        semantic: list[tuple[int, float]]) -> fusion.Candidates:
        union = list(dict.fromkeys([c for c, _ in keyword] + [c for c, _ in semantic]))
        top = semantic[0][1] if semantic else 0.0
        return fusion.candidates(self, query, keyword[:fusion.POOL], semantic[:fusion.POOL], top, self._cosines(q, union))

    def _fuse(self, model: fusion.FusionModel, query: str, q: np.ndarray, keyword: list[tuple[int, float]],
              semantic: list[tuple[int, float]]) -> dict[int, float]:
        """Chunk id -> probability of relevance from the learned fusion (candidates beyond POOL of each half
        keep a reciprocal-rank score below every scored one, so a large k still gets k results)."""
        cand = self.fusion_features(query, q, keyword, semantic)
        out = {c: -1.0 + s for c, s in rrf([[c for c, _ in keyword], [c for c, _ in semantic]]).items()}
        if cand.ids:
            probs = 1.0 / (1.0 + np.exp(-model.score(cand.features)))
            out.update(zip(cand.ids, probs.tolist()))
        return out

    # Last in the class on purpose: below this method, ``list`` in an annotation would name it, not the builtin.
    def list(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT d.path, d.bytes, d.added, d.meta, COUNT(c.id) FROM docs d LEFT JOIN chunks c "
                               "ON c.doc_id = d.id GROUP BY d.id ORDER BY d.path").fetchall()
        return [{"path": p, "bytes": b, "added": a, "meta": orjson.loads(m), "chunks": n} for p, b, a, m, n in rows]
