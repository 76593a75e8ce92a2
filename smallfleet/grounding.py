"""Grounding as a stage of a request: find the knowledge base a step uses, retrieve evidence for its
question and put it in the prompt, so the answer can be checked against it (``evidence_grounded``).

Knowledge-base files come from the config (or a trusted in-process caller), never from a request. One
open store per file: its embedder and vectors stay loaded. The retrieval stack (ONNX, tokenizers)
is imported only when a step is grounded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .config import Config
from .errors import InvalidRequestError, NotAvailableError
from .step import Step, StepKind

if TYPE_CHECKING:
    from .retrieval import KnowledgeBase


class Grounding:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._stores: dict[str, KnowledgeBase] = {}

    def resolve(self, kind: StepKind, kb: str | None, where: str | dict[str, str] | None,
                kb_path: str | Path | None) -> tuple[str | None, dict[str, str] | None, Path | None]:
        """(knowledge-base name, metadata filter, file) for a new step; (None, None, None) when ungrounded.
        A metadata filter, or a step kind listed in ``[grounding] kinds``, asks for the default base."""
        if isinstance(where, str):
            from .retrieval.store import parse_meta

            where = parse_meta(where, "x-smallfleet-kb-where") or None
        if kb_path is not None:
            path = Path(kb_path).expanduser()
            return kb or str(path), where, path
        if kb is None and (where or kind.value in self.config.grounding.kinds):
            kb = "default"
        return kb, where, self.config.knowledge_path(kb) if kb is not None else None

    def store(self, step: Step) -> KnowledgeBase:
        from .retrieval import Store

        path = step.kb_path
        if path is None:
            raise InvalidRequestError("this step names no knowledge base.")
        key = str(path.resolve())
        store = self._stores.get(key)
        if store is None:
            if not path.is_file():
                raise NotAvailableError(f"knowledge base {step.kb!r} has no index file yet.",
                                        hint=f"the operator builds it with `smallfleet index add PATH... --index {path}`")
            store = self._stores[key] = Store(path)
        return store

    def ground(self, step: Step) -> None:
        """Retrieve evidence and put it in the request (blocking: run it off the event loop)."""
        from .retrieval.grounded import Evidence, question_of, with_evidence

        store = self.store(step)
        q = question_of(step.messages)
        if not q.strip():
            raise InvalidRequestError("a grounded step needs a user message to search with.")
        g = self.config.grounding
        hits = store.search(q, g.k, where=step.kb_where)
        rel = store.relevance(q, hits)
        ev = Evidence(step.kb or "default", hits, rel, weak=max(rel, default=0.0) < g.min_relevance)
        step.evidence = ev
        step.request = with_evidence(step.request, ev)
        step.notes.append(f"grounded in {len(hits)} chunk(s), best relevance {ev.best:.2f}" + (" (weak evidence)" if ev.weak else ""))

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()
