"""smallfleet: run each agent step on the cheapest small model that can do it, verify, escalate, log the cost.

The public face — everything not listed in ``__all__`` is private and may change::

    from smallfleet import Engine
    engine = Engine()
    outcome = await engine.complete({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    outcome.message                  # the answer, an OpenAI assistant message
    outcome.final.spec.name, outcome.escalated, outcome.cost_usd, outcome.verdict
    chat_completion(outcome)         # the OpenAI chat.completion object the gateway would send

- configuration: :func:`load_config`, :class:`Config`, :class:`ModelSpec`, :class:`KindPolicy`
- models: :class:`Backend` (the interface), :class:`ChatResult`, :class:`FunctionBackend` (a scripted
  test double), :class:`Fleet` (``Fleet(config, backends={...})`` puts your backends in place)
- checks: :func:`register_check`, :class:`Verdict`
- results: :class:`Outcome`, :class:`Attempt`, :class:`Step`, :class:`StepKind`
- request shapes: :class:`ChatRequest`, :class:`Message`, :class:`Tool`, :class:`ToolCall` (TypedDicts)
- safety: :class:`Guard` and :class:`PolicyEngine` (tool policies), :class:`Pseudonymizer` (personal data)
- knowledge and memory (loaded on first use): :class:`KnowledgeBase`, :class:`SessionMemory`
- errors: :class:`SmallfleetError` and one subclass per failure
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .checks import register_check
from .config import Config, load_config
from .engine import Engine
from .errors import (
    BackendError,
    BudgetExceededError,
    ConfigError,
    ContextLengthError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelUnavailableError,
    NotAvailableError,
    SmallfleetError,
)
from .fleet import Fleet
from .guards import Guard, PolicyEngine
from .messages import ChatRequest, Message, Tool, ToolCall
from .models import Backend, ChatResult, FunctionBackend
from .outcome import Attempt, Outcome
from .privacy import Pseudonymizer
from .spec import KindPolicy, ModelSpec
from .step import Step, StepKind
from .verdict import Verdict

if TYPE_CHECKING:
    from .memory import SessionMemory
    from .retrieval import Store as KnowledgeBase
    from .server.render import chat_completion

__version__ = "0.1.0"

__all__ = [
    "Attempt", "Backend", "BackendError", "BudgetExceededError", "ChatRequest", "ChatResult", "Config", "ConfigError",
    "ContextLengthError", "Engine", "Fleet", "FunctionBackend", "Guard", "InvalidRequestError", "KindPolicy",
    "KnowledgeBase", "Message", "ModelNotFoundError", "ModelSpec", "ModelUnavailableError", "NotAvailableError",
    "Outcome", "PolicyEngine", "Pseudonymizer", "SessionMemory", "SmallfleetError", "Step", "StepKind", "Tool",
    "ToolCall", "Verdict", "chat_completion", "load_config", "register_check",
]


def __getattr__(name: str) -> Any:
    # heavy or optional parts load on first use: the retrieval stack (ONNX), session memory, the server
    if name == "KnowledgeBase":
        from .retrieval import Store

        return Store
    if name == "SessionMemory":
        from .memory import SessionMemory

        return SessionMemory
    if name == "chat_completion":
        from .server.render import chat_completion

        return chat_completion
    raise AttributeError(f"module 'smallfleet' has no attribute {name!r}")
