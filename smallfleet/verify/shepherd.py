"""Step labels from completions (the Math-Shepherd method): a step is sound while a model that goes on
from the steps up to it can still reach the known answer.

For a trace of a problem whose answer is known, the prefix "problem + steps 0..i" is handed to a
completer k times (sampled, in one call where the backend has parallel slots). The prefix *reaches*
the answer when any completion ends on it (Math-Shepherd's "hard" estimate). The first step whose
prefix no longer reaches it is the trace's first error; a trace whose own answer is right has none.

Two choices keep the cost to what a CPU can pay:

- **Binary search.** Reachability is taken to be monotone (once a step has broken the solution, later
  steps do not mend it), so a wrong trace of n steps needs about log2(n) + 1 probes, not n.
- **A reachability gate.** The empty prefix is probed first: when the completer cannot reach the answer
  from the problem alone, every step would look wrong and the labels would measure the completer, not
  the trace. Such traces are skipped and counted.

The labelled traces have ProcessBench's shape (``problem``, ``steps``, ``label``: index of the first
wrong step or -1), so :func:`smallfleet.verify.train_verifier` can train on them (``labels=``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequestError
from ..models.base import Sampler
from .program import final_number, same_number

#: (problem, prefix steps, k) -> the final answers of k completions (None where one gave no number)
Completer = Callable[[str, list[str], int], Awaitable[list[float | None]]]

MAX_STEPS = 32  # a longer trace costs more probes than its labels are worth here


@dataclass
class Labelled:
    """One trace's labels: ``label`` is the first wrong step (-1: none), or None when the trace was skipped."""

    problem: str
    steps: list[str]
    label: int | None
    reason: str  # how the label was reached, or why the trace was skipped
    probes: list[tuple[int, int, int]] = field(default_factory=list)  # (last prefix step, hits, k); -1: problem only
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"problem": self.problem, "steps": self.steps, "label": self.label, "reason": self.reason,
                "probes": [list(p) for p in self.probes], "seconds": round(self.seconds, 2)}


async def label_trace(problem: str, steps: list[str], gold: float, complete: Completer, k: int = 4,
                      finished: bool = True) -> Labelled:
    """The first wrong step of a trace by completions from its prefixes (see the module docstring).
    ``finished``: the trace ended by itself (not cut at a token limit), so its last number is its answer."""
    if not steps:
        raise InvalidRequestError("the trace has no steps.")
    if not 1 <= k <= 16:
        raise InvalidRequestError(f"k={k}: use 1 to 16 completions per prefix.")
    t0 = time.perf_counter()
    probes: list[tuple[int, int, int]] = []

    async def reaches(last: int) -> bool:
        answers = await complete(problem, steps[: last + 1], k)
        hits = sum(same_number(a, gold) for a in answers)
        probes.append((last, hits, len(answers)))
        return hits > 0

    def done(label: int | None, reason: str) -> Labelled:
        return Labelled(problem, steps, label, reason, probes, time.perf_counter() - t0)

    if len(steps) > MAX_STEPS:
        return done(None, f"skipped: {len(steps)} steps (more than {MAX_STEPS})")
    own = final_number("\n".join(steps)) if finished else None
    if same_number(own, gold):
        # The trace itself is a completion from each of its prefixes that reaches the answer.
        return done(-1, "the trace's own answer is right")
    if not await reaches(-1):
        return done(None, f"skipped: no completion from the problem alone reached the answer ({k} tried)")
    lo, hi = -1, len(steps) - 1  # the prefix through lo reaches the answer; through hi it does not
    if own is None and await reaches(hi):  # an unfinished trace: its last prefix is not known to fail
        return done(-1, "unfinished, but completions from its last step reach the answer")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if await reaches(mid):
            lo = mid
        else:
            hi = mid
    return done(hi, f"step {hi} is the first whose prefix no completion carries to the answer")


def sampler_completer(backend: Sampler, system: str, max_tokens: int = 300, temperature: float = 0.7) -> Completer:
    """A completer on a backend with parallel slots: the prefix goes in as the start of the assistant's
    answer (llama.cpp continues a final assistant message), and k continuations decode side by side."""

    async def complete(problem: str, prefix: list[str], k: int) -> list[float | None]:
        head = "".join(s + "\n" for s in prefix)
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": problem}]
        if head:
            messages.append({"role": "assistant", "content": head})
        s = await backend.samples({"messages": messages, "max_tokens": max_tokens, "temperature": temperature}, k)
        # llama.cpp hands back the prefix with the continuation; a server that does not is given it back
        return [final_number(t if not head or t.startswith(head) else head + t) for t in s.texts]

    return complete
