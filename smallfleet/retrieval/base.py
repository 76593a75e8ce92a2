"""What a knowledge base offers the rest of smallfleet (engine, CLI, grounded steps).

``Store`` (SQLite: FTS5 + vectors in one file) implements it; a PostgreSQL/pgvector backend would
implement the same methods, so the engine and the CLI would not change. Kept to what callers use.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .store import Hit


@runtime_checkable
class KnowledgeBase(Protocol):
    def add(self, path: str | Path, meta: dict[str, Any] | None = None) -> str:
        """Index one file: "added", "updated", "metadata" or "unchanged" (content hash)."""
        ...

    def remove(self, path: str | Path) -> bool:
        """Drop a document and its chunks; False when it was not indexed."""
        ...

    def count(self) -> int:
        """Chunks in the index."""
        ...

    def search(self, query: str, k: int = 5, mode: str = "hybrid", where: Mapping[str, Any] | None = None) -> list[Hit]:
        """The k best chunks (modes: hybrid, rrf, bm25, dense), optionally only documents with that metadata."""
        ...

    def relevance(self, query: str, hits: list[Hit]) -> list[float]:
        """Cosine similarity of the query to each hit (is the evidence any good?)."""
        ...

    def close(self) -> None:
        ...

    # Last on purpose: below this method, ``list`` in an annotation would name it, not the builtin.
    def list(self) -> list[dict[str, Any]]:
        """Indexed documents: path, bytes, added, meta, chunks."""
        ...
