"""Session memory (issue 6): facts the user states, kept per session with provenance, pinned into later prompts.

- :class:`FactStore`: SQLite, one file; facts with turn, source role and trust label; supersede keeps history.
- :class:`Extractor`: a small local model returns ``{"facts": [{key, value}]}`` under a JSON schema;
  a regex pre-filter skips messages with nothing fact-like; values must be grounded in the message.
- :func:`pin_messages`: the relevant facts as one system message before the latest user message.
- :class:`SessionMemory`: ``observe`` / ``facts`` / ``pin`` / ``prepare`` per session id.
"""

from .extract import FACT_SCHEMA, Extractor, ExtractorStats, Segment, grounded, looks_factual, split_trust
from .pin import PIN_HEADER, UNTRUSTED_HEADER, pin_messages, render, select_facts
from .session import SessionMemory
from .store import Fact, FactStore, key_file, normalize_key, resolve_key

__all__ = [
           "FACT_SCHEMA",
           "PIN_HEADER",
           "UNTRUSTED_HEADER",
           "Extractor",
           "ExtractorStats",
           "Fact",
           "FactStore",
           "Segment",
           "SessionMemory",
           "grounded",
           "key_file",
           "looks_factual",
           "normalize_key",
           "pin_messages",
           "render",
           "resolve_key",
           "select_facts",
           "split_trust",
]
