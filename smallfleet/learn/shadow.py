"""Shadow replays online: a share of the steps answered above the cheapest tier is re-run there in the
background and compared with the answer the client got, so the evidence for moving a task down grows
with the traffic, without a separate replay run.

Never in a response's way: a step is only queued (a bounded queue; full means dropped), one shadow
runs at a time, only while no request is in flight, at most ``per_minute`` a minute; the cheapest
tier must run on this machine (the request is not pseudonymised for a shadow). Results go to the
trace store's ``shadow`` table and count in ``smallfleet learn apply`` as replays on that tier.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import SmallfleetError
from ..step import Step
from ..verdict import run_checks
from .compare import compare

if TYPE_CHECKING:
    from ..capture.capturer import Capturer
    from ..fleet import Fleet
    from ..outcome import Outcome
    from ..routing import Router

log = logging.getLogger("smallfleet.shadow")


@dataclass
class _Job:
    step: Step
    final: dict[str, Any]


class Shadow:
    def __init__(self, fleet: Fleet, router: Router, capturer: Capturer, rate: float, *, per_minute: int = 30,
                 queue: int = 64, idle: Any = None, seed: int | None = None) -> None:
        self.fleet = fleet
        self.router = router
        self.capturer = capturer
        self.rate = rate
        self.per_minute = per_minute
        self.tier = router.config.tiers[0]
        self.spec = router.config.tier_model(self.tier)
        self.idle = idle or (lambda: True)  # () -> bool: no request in flight
        self._jobs: deque[_Job] = deque(maxlen=queue)
        self._task: asyncio.Task[None] | None = None
        self._times: deque[float] = deque()
        self._rng = random.Random(seed)
        self.run = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.spec.is_local

    def offer(self, outcome: Outcome) -> bool:
        """Maybe queue a step answered above the cheapest tier (call from the event loop)."""
        if not self.enabled or outcome.final.tier == self.tier or not outcome.final.passed or outcome.step.capture is False:
            return False
        if self._rng.random() >= self.rate:
            return False
        if len(self._jobs) == self._jobs.maxlen:
            self.dropped += 1
        s = outcome.step
        self._jobs.append(_Job(Step(request=s.request, kind=s.kind, step_id=s.step_id, run_id=s.run_id, session_id=s.session_id),
                               dict(outcome.message)))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._work())
        return True

    async def _work(self) -> None:
        while self._jobs:
            while not self.idle() or self._limited():
                await asyncio.sleep(0.2)
            job = self._jobs.popleft()
            self._times.append(time.monotonic())
            try:
                await self._one(job)
            except Exception:  # a shadow never fails anything else
                log.exception("shadow replay of %s failed", job.step.step_id)

    def _limited(self) -> bool:
        now = time.monotonic()
        while self._times and now - self._times[0] > 60:
            self._times.popleft()
        return len(self._times) >= self.per_minute

    async def _one(self, job: _Job) -> None:
        step = job.step
        try:
            res = await self.fleet.get(self.spec.name).chat({**step.request, "model": self.spec.name})
        except SmallfleetError as e:
            agree, why, msg = False, f"failed: {e.message}", None
        else:
            failed = [f"{v.check}: {v.reason}" for v in run_checks(self.router.checks(step), step, res, self.router.policy(step))
                      if not v.passed]
            msg = dict(res.message)
            agree, why = compare(job.final, msg, step.kind.value, wants_json=step.wants_json(), failed_checks=failed)
        await asyncio.to_thread(self._keep, step, agree, why, msg)
        self.run += 1

    def _keep(self, step: Step, agree: bool, why: str, msg: dict[str, Any] | None) -> None:
        msg, why = self.capturer.scrub(step.run_id or step.session_id or step.step_id, msg, why)
        self.capturer.store.add_shadow(step.step_id, self.spec.name, self.tier, agree, why, msg)

    async def drain(self) -> None:
        if self._task is not None:
            await self._task
