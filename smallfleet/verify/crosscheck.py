"""Reasoning answers cross-checked and scored as one decision (#18; opt-in: ``[verify] program = true``).

For a reasoning step whose answer ends on a number, after the attempt's own checks:
1. a local model writes ``solve()`` for the same problem (:func:`program.program_request`) and the
   sandbox runs it: the ``program`` verdict says whether it agrees, with the code in its reason;
2. the combined score (:mod:`.score`) weighs the program, the recomputed arithmetic and process
   verifier (the ``process`` check), the token confidence (the ``confidence`` check) and, when the
   base score is undecided, k sampled answers drawn in one call from the attempt's own model;
3. one ``reasoning`` verdict decides: the answer passes when the score clears the threshold chosen for
   the target precision of "verified". The checks it weighed stay in the record, marked advisory, so
   the ledger shows each signal and the one decision.

When the top tier fails too, :meth:`ReasoningCheck.settle` looks for a figure two representations agree
on (a tier's program and another tier's answer): it is offered as the cross-checked figure, with the
program's code in the step's record and the ``x-smallfleet-crosschecked`` header.

The program is written by the attempt's own model when it is local, else by the cheapest local tier.
Its tokens, and the samples', are the attempt's cost.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..config import Config
from ..errors import NotAvailableError, SmallfleetError
from ..fleet import Fleet
from ..models.base import Sampler
from ..outcome import Attempt, Outcome
from ..record import Recorder
from ..step import Step, StepKind
from ..verdict import Verdict
from .checks import split_steps
from .program import ProgramResult, agreement, extract_code, final_number, program_request, run_program, same_number
from .score import ReasoningScore, signals

if TYPE_CHECKING:
    from ..spec import ModelSpec

FOLDED = ("process", "confidence")  # checks whose signals the score weighs: advisory once it has decided


@dataclass(frozen=True)
class Figure:
    """A number two representations agree on: one tier's program and another (or the same) tier's answer."""

    value: float
    program_by: str
    answer_by: str
    code: str

    def header(self) -> str:
        return f"{self.value:g} (a program by {self.program_by} agrees with the answer of {self.answer_by})"


class ReasoningCheck:
    def __init__(self, config: Config, fleet: Fleet, recorder: Recorder, score: ReasoningScore | None = None) -> None:
        self.config, self.fleet, self.recorder = config, fleet, recorder
        self.score: ReasoningScore | None
        try:
            self.score = score or ReasoningScore.load()
        except (NotAvailableError, OSError, ValueError, KeyError):
            self.score = None  # no fitted score: the program's agreement decides alone
        self.samples = min(config.verify.samples, self.score.samples) if self.score is not None else 0  # only the score samples
        self._programs: dict[int, tuple[float, str, str]] = {}  # id(attempt) -> program value, writer, code

    def _writer(self, att: Attempt) -> ModelSpec | None:
        if att.spec.private:
            return att.spec
        local = [t for t in self.config.tiers if self.config.tier_model(t).private]
        return self.config.tier_model(local[0]) if local else None

    async def review(self, att: Attempt, step: Step) -> None:
        if step.kind is not StepKind.REASONING or att.result is None or att.error:
            return
        answer = final_number(att.result.content or "")
        problem = _problem(step)
        writer = self._writer(att)
        if answer is None or not problem or writer is None:
            return
        request = program_request(problem)
        try:
            await self.recorder.reserve(step, writer, request)
            res = await self.fleet.get(writer.name).chat(request)
        except SmallfleetError as e:
            att.verdicts.append(Verdict("program", True, f"not cross-checked: {e.message}"))
            return
        att.cost_usd += writer.cost(res.tokens_in, res.tokens_out)
        code = extract_code(res.content or "")
        result = await asyncio.to_thread(run_program, code)
        step.crosschecks.append((att.spec.name, answer, writer.name, result.value if result.ok else None, code[:2000]))
        att.verdicts.append(_program_verdict(answer, result, writer.name, code, advisory=self.score is not None))
        if self.score is not None:
            await self._decide(att, step, problem, answer, result)

    async def _decide(self, att: Attempt, step: Step, problem: str, answer: float, program: ProgramResult) -> None:
        assert self.score is not None and att.result is not None
        steps = split_steps(att.result.content)
        sig = await asyncio.to_thread(signals, problem, steps, att.result.token_logprobs, answer, program)
        p = self.score.p_right(sig)
        backend = self.fleet.get(att.spec.name)
        if self.samples and self.score.needs_samples(p) and isinstance(backend, Sampler):
            try:
                await self.recorder.reserve(step, att.spec, step.request)
                drawn = await backend.samples(_plain(step.request), self.samples)
            except SmallfleetError as e:
                att.verdicts.append(Verdict("samples", True, f"not drawn: {e.message}", advisory=True))
            else:
                att.cost_usd += att.spec.cost(drawn.tokens_in, drawn.tokens_out)
                sig = replace(sig, samples=[final_number(t) for t in drawn.texts])
                p = self.score.p_right(sig)
        ok = self.score.accepts(sig, p)
        att.verdicts[:] = [replace(v, advisory=True) if v.check in FOLDED else v for v in att.verdicts]
        att.verdicts.append(Verdict("reasoning", ok, f"p_right {p:.2f} {'>=' if ok else '<'} threshold: {sig.describe()}", p))

    def settle(self, outcome: Outcome) -> Figure | None:
        """When the final answer is unverified: a figure a program and an answer agree on, across the tiers tried."""
        checks = outcome.step.crosschecks
        if outcome.final.passed or not checks:
            return None
        for _, _, writer, value, code in reversed(checks):
            if value is None:
                continue
            agreeing = [m for m, answer, _, _, _ in reversed(checks) if same_number(answer, value)]
            if agreeing:
                fig = Figure(value, writer, agreeing[0], code)
                outcome.step.notes.append(f"cross-checked figure {fig.header()}; program: {' '.join(code.split())[:300]}")
                return fig
        return None


def _program_verdict(answer: float, result: ProgramResult, writer: str, code: str, advisory: bool) -> Verdict:
    said = agreement(answer, result)
    shown = " ".join(code.split())[:300]
    if said == "agree":
        assert result.value is not None
        return Verdict("program", True, f"a program by {writer} agrees ({result.value:g}): {shown}", 1.0, advisory)
    if said == "disagree":
        assert result.value is not None
        return Verdict("program", False, f"a program by {writer} computes {result.value:g}, the answer says {answer:g}: "
                                         f"{shown}", 0.0, advisory)
    return Verdict("program", True, f"not cross-checked: the program {result.status} ({result.error[:100]})",
                   advisory=advisory)


def _problem(step: Step) -> str | None:
    return next((m.get("content") for m in reversed(step.messages) if m.get("role") == "user"
                 and isinstance(m.get("content"), str)), None)


def _plain(request: dict[str, object]) -> dict[str, object]:
    """The step's request as sampling needs it: the messages and the output cap, nothing that asks for tools or JSON."""
    return {k: v for k, v in request.items() if k in ("messages", "max_tokens", "max_completion_tokens")}
