"""Capture in the gateway: sampled, opted out per request, scrubbed and written off the request path.

``Capturer.offer(outcome)`` costs the request a hash and a queue put. A background thread takes the
step from the queue, pseudonymises it (the privacy detector: patterns and NER) and writes it. When
the queue is full (the writer is behind) the step is dropped and counted, so a slow disk never
delays an answer. Sampling is by conversation, so a sampled agent run is captured whole (replay
needs its steps in order).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ..config import CaptureSettings
from ..privacy.guard import PrivacyGuard, PrivacySettings
from ..privacy.pseudonymize import Pseudonymizer
from ..privacy.vault import Vault
from .store import TraceStore
from .trace import Trace, from_outcome

if TYPE_CHECKING:
    from ..outcome import Outcome
    from ..privacy.detector import Detector

log = logging.getLogger("smallfleet.capture")

OPT_OUT_HEADER = "x-smallfleet-capture"


def sampled(conversation: str, rate: float) -> bool:
    """Whether a conversation is in the sample: a stable hash, so all its steps agree."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    h = int.from_bytes(hashlib.blake2b(conversation.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < rate


class Capturer:
    def __init__(self, settings: CaptureSettings, store: TraceStore, detector: Detector) -> None:
        self.settings = settings
        self.store = store
        self.detector = detector
        self.captured = 0
        self.dropped = 0
        self._q: queue.Queue[Trace | None] = queue.Queue(maxsize=settings.queue)
        # vaults per conversation (one person, one placeholder), least recently used dropped past 1024: the
        # privacy guard's own map, apart from the gateway's
        self._privacy = PrivacyGuard(PrivacySettings(max_sessions=1024), detector)
        self._next_purge = 0.0
        # feedback that arrived while its step was still queued: applied when the step is written
        self._queued: dict[str, int] = {}  # step ids and conversations in the queue
        self._pending: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="smallfleet-capture", daemon=True)
        self._thread.start()

    def wants(self, outcome: Outcome) -> bool:
        step = outcome.step
        if step.capture is False or outcome.final.result is None:
            return False
        return sampled(step.run_id or step.session_id or step.step_id, self.settings.sample)

    def offer(self, outcome: Outcome) -> bool:
        """Queue a step for capture; False when it is not sampled, opted out or the queue is full."""
        if not self.wants(outcome):
            return False
        t = from_outcome(outcome)
        keys = [t.id, *([t.trace] if t.trace else [])]
        with self._lock:
            try:
                self._q.put_nowait(t)
            except queue.Full:
                self.dropped += 1
                return False
            for k in keys:
                self._queued[k] = self._queued.get(k, 0) + 1
        return True

    def feedback(self, *, step_id: str | None = None, conversation: str | None = None, score: float) -> bool:
        """Record the agent's word on a captured step or conversation; False when none is known."""
        key = step_id if step_id is not None else conversation
        assert key is not None
        with self._lock:
            waiting = key in self._queued
            if waiting:
                self._pending[key] = score
                while len(self._pending) > 10_000:
                    self._pending.popitem(last=False)
        changed = self.store.set_feedback(trace_id=step_id, conversation=conversation, score=score)
        return changed > 0 or waiting

    def scrub(self, conversation: str, message: dict[str, Any] | None, text: str) -> tuple[dict[str, Any] | None, str]:
        """A message and a text pseudonymised with the conversation's vault (a shadow replay's answer and
        verdict quote the same people as the captured step)."""
        pz = Pseudonymizer(self.detector, self._vault(conversation))
        msg = pz.redact_messages([message])[0][0] if message is not None else None
        return msg, pz.redact(text).text

    def _vault(self, conversation: str) -> Vault:
        return self._privacy.vault_for(conversation)

    def _run(self) -> None:
        while True:
            t = self._q.get()
            try:
                if t is None:
                    return
                clean = t.scrubbed(Pseudonymizer(self.detector, self._vault(t.trace or t.id)))
                with self._lock:
                    score = self._pending.get(t.id, self._pending.get(t.trace) if t.trace else None)
                    if score is not None:
                        clean.feedback = score
                    for k in (t.id, t.trace):
                        if k is None:
                            continue
                        left = self._queued.get(k, 0) - 1
                        if left > 0:
                            self._queued[k] = left
                        else:  # its last queued step is being written: later feedback goes to the store
                            self._queued.pop(k, None)
                            self._pending.pop(k, None)
                self.captured += self.store.add([clean])
                if time.time() >= self._next_purge:
                    self.store.purge(self.settings.retention_days)
                    self._next_purge = time.time() + 3600
            except Exception:  # a capture failure never reaches a client; the log says why
                log.exception("capturing step %s failed", t.id if t else "?")
            finally:
                self._q.task_done()

    def drain(self) -> None:
        """Wait until every queued step is written (tests, benchmarks, shutdown)."""
        self._q.join()

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=30)
        self.store.close()
