"""Local retrieval: a knowledge base in one SQLite file, hybrid BM25 + dense search."""

from .base import KnowledgeBase
from .embed import Embedder
from .store import Hit, Store, chunk, only_stopwords, parse_meta, read_text, rrf

__all__ = ["Embedder", "Hit", "KnowledgeBase", "Store", "chunk", "only_stopwords", "parse_meta", "read_text", "rrf"]
