"""Capture (S1 of the learning loop): steps into an encrypted, pseudonymised trace store.

- :class:`Trace` one step: request, attempts, accepted answer, feedback;
- :class:`TraceStore` the SQLite store (texts Fernet-encrypted);
- :class:`Capturer` the gateway's sampled, off-the-request-path writer;
- :func:`import_jsonl` an agent's own logs into the store;
- :func:`curate` S2: the traces fit to learn from.
"""

from .capturer import OPT_OUT_HEADER, Capturer, sampled
from .curate import CurateReport, curate
from .logs import ImportReport, import_jsonl
from .store import KEY_ENV, StoreStats, TraceStore
from .trace import Trace, TraceAttempt, from_logged, from_outcome, structure_signature, task_text

__all__ = ["KEY_ENV", "OPT_OUT_HEADER", "Capturer", "CurateReport", "ImportReport", "StoreStats", "Trace", "TraceAttempt",
           "TraceStore", "curate", "from_logged", "from_outcome", "import_jsonl", "sampled", "structure_signature", "task_text"]
