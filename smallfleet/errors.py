"""Errors that say what went wrong and how to fix it.

Every error carries an HTTP status and an OpenAI error ``type``/``code`` so the gateway can answer in
OpenAI's error format, and a ``hint`` the CLI prints under the message.
"""

from __future__ import annotations

import math
from typing import Any


class SmallfleetError(Exception):
    """Base class: ``message`` says what happened, ``hint`` says what to do about it."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, hint: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.param = param

    def http_headers(self) -> list[tuple[bytes, bytes]]:
        """Headers that go with the error response (say, when a retry can help)."""
        return []

    def to_openai(self) -> dict[str, Any]:
        msg = self.message if not self.hint else f"{self.message} Hint: {self.hint}"
        return {"error": {"message": msg, "type": self.type, "param": self.param, "code": self.code}}

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(SmallfleetError):
    """The fleet configuration (file or environment) is invalid."""

    status = 500
    type = "config_error"
    code = "invalid_config"


class InvalidRequestError(SmallfleetError):
    """The request is malformed (bad JSON, bad tool schema, unknown field values)."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ModelNotFoundError(InvalidRequestError):
    """The request names a model that is not in the fleet."""

    status = 404
    code = "model_not_found"


class PayloadTooLargeError(InvalidRequestError):
    status = 413
    code = "payload_too_large"


class AuthError(SmallfleetError):
    """No API key, or one that is unknown or revoked."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class ForbiddenError(SmallfleetError):
    """A request the gateway refuses whoever sends it (cross-site, foreign Host, non-loopback without keys)."""

    status = 403
    type = "invalid_request_error"
    code = "forbidden"


class NotFoundError(SmallfleetError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ResponseNotFoundError(NotFoundError):
    code = "previous_response_not_found"


class MethodNotAllowedError(SmallfleetError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"

    def __init__(self, message: str, methods: tuple[str, ...]) -> None:
        super().__init__(message)
        self.methods = methods

    def http_headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"allow", ", ".join(self.methods).encode())]


class ContextLengthError(InvalidRequestError):
    """The prompt does not fit the context window of any model that could take it."""

    code = "context_length_exceeded"


class BudgetExceededError(SmallfleetError):
    """The agent run's budget cannot cover the next call (HTTP 429).

    ``retry_after`` (seconds) only where waiting can help: steps of the run still running hold
    reservations, and their real cost may leave room. Otherwise the answer says not to retry
    (``x-should-retry: false``, which the OpenAI SDKs honour), since the same call can never pass."""

    status = 429
    type = "budget_exceeded"
    code = "run_budget_exceeded"

    def __init__(self, message: str, *, hint: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after

    def http_headers(self) -> list[tuple[bytes, bytes]]:
        if self.retry_after is not None:
            return [(b"retry-after", str(max(1, math.ceil(self.retry_after))).encode())]
        return [(b"x-should-retry", b"false")]


class RateLimitError(SmallfleetError):
    """The API key's requests-per-minute limit is reached (HTTP 429, with when to retry)."""

    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, hint: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after

    def http_headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(max(1, math.ceil(self.retry_after))).encode())]


class ModelUnavailableError(SmallfleetError):
    """A model file is missing or corrupted, or its package is not installed."""

    status = 503
    type = "model_unavailable"
    code = "model_unavailable"


class BackendError(SmallfleetError):
    """The model backend failed (down, refused, answered garbage)."""

    status = 502
    type = "backend_error"
    code = "backend_error"


class BackendTimeoutError(BackendError):
    status = 504
    code = "backend_timeout"


class NotAvailableError(SmallfleetError):
    """A feature that cannot run on this machine or with this configuration."""

    status = 501
    type = "not_available"
    code = "not_available"
