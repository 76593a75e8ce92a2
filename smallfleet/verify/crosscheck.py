"""The program-of-thought cross-check as a cascade step (#18; opt-in: ``[verify] program = true``).

After the checks of a reasoning attempt that answered with a number, a local model writes
``solve()`` for the same problem (:func:`program.program_request`) and the sandbox runs it:
- the program's number equals the answer's: a passing ``program`` verdict;
- it differs: a failing one, so the cascade escalates as for any failed check;
- the program could not be written or run: a passing verdict that says so. A failed program is a
  weak signal, and the combined score (to come) weighs it.
The program is written by the attempt's own model when it is local, else by the cheapest local tier.
Its tokens are the attempt's cost; the code and the result go into the verdict's reason (bounded), so
the ledger shows what was cross-checked.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..config import Config
from ..errors import SmallfleetError
from ..fleet import Fleet
from ..outcome import Attempt
from ..record import Recorder
from ..step import Step, StepKind
from ..verdict import Verdict
from .program import agreement, extract_code, final_number, program_request, run_program

if TYPE_CHECKING:
    from ..spec import ModelSpec


class ProgramCheck:
    def __init__(self, config: Config, fleet: Fleet, recorder: Recorder) -> None:
        self.config, self.fleet, self.recorder = config, fleet, recorder

    def _writer(self, att: Attempt) -> ModelSpec | None:
        if att.spec.private:
            return att.spec
        local = [t for t in self.config.tiers if self.config.tier_model(t).private]
        return self.config.tier_model(local[0]) if local else None

    async def review(self, att: Attempt, step: Step) -> None:
        if step.kind is not StepKind.REASONING or att.result is None or att.error:
            return
        answer = final_number(att.result.content or "")
        problem = next((m.get("content") for m in reversed(step.messages) if m.get("role") == "user"
                        and isinstance(m.get("content"), str)), None)
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
        said = agreement(answer, result)
        shown = " ".join(code.split())[:300]
        if said == "agree":
            att.verdicts.append(Verdict("program", True, f"a program by {writer.name} agrees ({result.value:g}): {shown}", 1.0))
        elif said == "disagree":
            att.verdicts.append(Verdict("program", False, f"a program by {writer.name} computes {result.value:g}, "
                                                          f"the answer says {answer:g}: {shown}", 0.0))
        else:
            att.verdicts.append(Verdict("program", True, f"not cross-checked: the program {result.status} ({result.error[:100]})"))
