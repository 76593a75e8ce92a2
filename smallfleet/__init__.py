"""smallfleet: run each agent step on the cheapest small model that can do it, verify, escalate, log the cost.

Public API (everything else is private and may change)::

    from smallfleet import Engine, load_config
    outcome = await Engine().complete({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
"""

from .cascade import Attempt, Cascade, Outcome
from .checks import Verdict, register_check, run_checks
from .config import Config, KindPolicy, ModelSpec, load_config
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
from .ledger import Ledger
from .fleet import Fleet
from .models import Backend, ChatResult
from .routing import Router
from .step import Step, StepKind, classify_step

__version__ = "0.1.0"

__all__ = [
    "Attempt", "Backend", "BackendError", "BudgetExceededError", "Cascade", "ChatResult", "Config", "ConfigError",
    "ContextLengthError", "Engine", "Fleet", "InvalidRequestError", "KindPolicy", "Ledger", "ModelNotFoundError",
    "ModelSpec", "ModelUnavailableError", "NotAvailableError", "Outcome", "Router", "SmallfleetError", "Step",
    "StepKind", "Verdict", "classify_step", "load_config", "register_check", "run_checks",
]
