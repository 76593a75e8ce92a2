"""LLM judges ("full verification" by a model).

- ``LLMJudge``: the baseline of bench/verifier.py — a local LLM asked, step by step, whether each
  step is correct, scored from its yes/no log-probabilities. Slow by design; never the model that
  wrote the trace (default: the large local model).
- ``judge_request`` / ``read_judgement``: one call that asks any chat model (local or an API) for the
  first incorrect step of a whole trace. The cascade uses it for answers the distilled verifier is
  unsure of (``[verify] judge``), so the expensive check runs only where the cheap one cannot decide.
- ``Judge``: that second opinion as a cascade step, after the checks of an attempt.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..config import Config, load_config
from ..errors import SmallfleetError
from ..fleet import Fleet
from ..models.llamacpp import LlamaCppBackend
from ..outcome import Attempt
from ..record import Recorder
from ..step import Step
from ..verdict import Verdict
from .checks import process_inputs
from .process import MAX_STEPS, TraceResult, first_error

if TYPE_CHECKING:
    from ..privacy.guard import PrivacyGuard

PROMPT = ("You are checking a solution step by step.\n\nProblem:\n{problem}\n\nSteps so far:\n{before}\n\n"
          "Step to check:\n{step}\n\nIs this step correct (right facts, right reasoning, right arithmetic)? Answer yes or no.")


class LLMJudge:
    def __init__(self, model: str = "package:qwen2.5-coder-1.5b", threshold: float = 0.5, threads: int | None = None) -> None:
        cfg = load_config(env={})
        spec = replace(cfg.tier_model("large"), location=model, name="judge", context=4096)
        if threads:
            spec = replace(spec, threads=threads)
        self.backend = LlamaCppBackend(spec)
        self.threshold = threshold

    def p_wrong(self, problem: str, before: list[str], step: str) -> float:
        req: dict[str, Any] = {
            "messages": [{"role": "user", "content": PROMPT.format(problem=problem, step=step,
                                                                   before="\n".join(before) or "(none)")}],
            "max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": 10,
        }
        self.backend.load()
        res = self.backend._call(self.backend._prepare(req)[0])
        tops = ((res.get("choices") or [{}])[0].get("logprobs") or {}).get("content") or [{}]
        yes = no = 0.0
        for cand in tops[0].get("top_logprobs") or []:
            tok = cand.get("token", "").strip().lower()
            if tok in ("yes", "y"):
                yes += math.exp(cand["logprob"])
            elif tok in ("no", "n"):
                no += math.exp(cand["logprob"])
        return no / (yes + no) if yes + no else 0.5

    def verify(self, problem: str, steps: list[str]) -> TraceResult:
        scores: list[float] = []
        for i, s in enumerate(steps):
            scores.append(self.p_wrong(problem, steps[:i], s))
            if scores[-1] > self.threshold:
                break  # the first error is found; later steps do not change the verdict
        scores += [scores[-1]] * (len(steps) - len(scores))
        return TraceResult(scores, first_error(scores, self.threshold), max(scores))


TRACE_PROMPT = ("Check this solution step by step.\n\nProblem:\n{problem}\n\nSolution steps:\n{numbered}\n\n"
                "Reply with the number of the first incorrect step (wrong facts, reasoning or arithmetic), "
                "or 0 if every step is correct. Reply with the number only.")
_FIRST_INT = re.compile(r"\d+")


def judge_request(problem: str, steps: list[str]) -> dict[str, Any]:
    """The chat request that asks a judge for the first incorrect step (1-based; 0 = none)."""
    numbered = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
    return {"messages": [{"role": "user", "content": TRACE_PROMPT.format(problem=problem, numbered=numbered)}],
            "max_tokens": 6, "temperature": 0.0}


def read_judgement(text: str, n_steps: int) -> int | None:
    """The judge's reply as a 0-based first wrong step, -1 for "all correct", None when unreadable."""
    m = _FIRST_INT.search(text or "")
    if m is None:
        return None
    k = int(m.group())
    return k - 1 if 0 <= k <= n_steps else None


class Judge:
    """A reasoning answer whose process score falls in ``[verify] band`` (the distilled verifier is
    unsure) is judged by the configured judge model, whose reading replaces the verdict. Never the
    model that wrote the answer; a recomputed arithmetic error (score 1.0) is certain, not judged."""

    def __init__(self, config: Config, fleet: Fleet, recorder: Recorder, privacy: PrivacyGuard | None = None) -> None:
        self.config, self.fleet, self.recorder, self.privacy = config, fleet, recorder, privacy

    async def review(self, att: Attempt, step: Step) -> None:
        """Replace the attempt's process verdict with the judge's reading when it applies; its cost is the attempt's."""
        i = next((k for k, v in enumerate(att.verdicts) if v.check == "process"), None)
        lo, hi = self.config.verify.band
        if i is None or att.result is None:
            return
        v = att.verdicts[i]
        if v.score is None or not lo <= v.score <= hi or v.score >= 1.0:
            return
        inputs = process_inputs(step, att.result)
        judge = self.config.judge_model()
        if inputs is None or judge is None:
            return
        unsure = f"unsure ({v.score:.2f})"

        def stands(why: str) -> Verdict:  # the verifier's own verdict, with why the judge did not decide
            return replace(v, reason=f"{v.reason}; {unsure}; {why}" if v.reason else f"{unsure}; {why}")

        if (judge.stands_in_for or judge.name) == (att.spec.stands_in_for or att.spec.name):
            att.verdicts[i] = stands(f"not judged: the judge {judge.name} wrote it")
            return
        problem, steps = inputs[0], inputs[1][:MAX_STEPS]
        request = judge_request(problem, steps)
        try:
            await self.recorder.reserve(step, judge, request, max_out=6)
            if self.privacy is not None and self.privacy.protects(judge):
                request = (await self.privacy.outbound_async(request, step.privacy_key))[0]
            res = await self.fleet.get(judge.name).chat(request)
        except SmallfleetError as e:  # no judge (down, over budget): the verifier's own verdict stands
            att.verdicts[i] = stands(f"judge {judge.name} not asked: {e.message}")
            return
        cost = judge.cost(res.tokens_in, res.tokens_out)
        att.cost_usd += cost
        k = read_judgement(res.content, len(steps))
        who = f"judge {judge.name} ({res.tokens_in + res.tokens_out} tokens, ${cost:.6f})"
        if k is None:
            att.verdicts[i] = stands(f"{who} gave no step number")
        else:
            att.verdicts[i] = Verdict("process", k < 0, f"{unsure}; {who}: " + ("every step is correct" if k < 0 else f"step {k + 1} is wrong"),
                                      v.score)
