"""The LLM-judge baseline ("full verification" by a model): a local LLM asked, step by step,
whether each step is correct. Slow by design; used to compare against the distilled verifier and
never the model that wrote the trace (default: the large local model)."""

from __future__ import annotations

import math
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
