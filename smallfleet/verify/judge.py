"""LLM judges ("full verification" by a model).

- ``LLMJudge``: the baseline of bench/verifier.py — a local LLM asked, step by step, whether each
  step is correct, scored from its yes/no log-probabilities. Slow by design; never the model that
  wrote the trace (default: the large local model).
- ``judge_request`` / ``read_judgement``: one call that asks any chat model (local or an API) for the
  first incorrect step of a whole trace. The cascade uses it for answers the distilled verifier is
  unsure of (``[verify] judge``), so the expensive check runs only where the cheap one cannot decide.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

from ..config import load_config
from ..models.llamacpp import LlamaCppBackend
from .process import TraceResult, first_error

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
