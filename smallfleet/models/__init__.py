"""Model backends behind one interface (:class:`Backend`), one file per kind, and a scripted test double."""

from __future__ import annotations

from .anthropic import AnthropicBackend
from .base import Backend, ChatResult, Sampler, Samples
from .llamacpp import LlamaCppBackend
from .openai_http import OpenAIHTTPBackend
from .scripted import FunctionBackend

__all__ = ["AnthropicBackend", "Backend", "ChatResult", "FunctionBackend", "LlamaCppBackend", "OpenAIHTTPBackend", "Sampler", "Samples"]
