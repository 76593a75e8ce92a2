"""Verify before trusting: a fast distilled process verifier, full arithmetic/provenance checks,
grounding of tool arguments and extracted fields, and an LLM-judge baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .grounding import Context, ungrounded
from .outcome import OutcomeModel
from .process import ProcessVerifier, TraceResult, first_error, processbench_f1, train_verifier
from .training import train_outcome

if TYPE_CHECKING:  # pragma: no cover - imported on demand below
    from .judge import LLMJudge


def __getattr__(name: str) -> type[LLMJudge]:  # the judge pulls in llama.cpp: only on demand
    if name == "LLMJudge":
        from .judge import LLMJudge

        return LLMJudge
    raise AttributeError(name)


__all__ = ["Context", "LLMJudge", "OutcomeModel", "ProcessVerifier", "TraceResult", "first_error", "processbench_f1",
           "train_outcome", "train_verifier", "ungrounded"]
