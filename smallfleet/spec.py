"""The shared types of a fleet: one model (:class:`ModelSpec`) and how one step kind is routed
(:class:`KindPolicy`). A leaf module: the backends, checks and router import these without the config loader."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """One model of the fleet. Prices are USD per 1M tokens."""

    name: str
    backend: str
    tier: str
    location: str = ""  # GGUF path / package:NAME (llamacpp) or base URL (http backends)
    remote_model: str = ""  # model name sent to an HTTP API
    api_key_env: str = ""
    api_key: str = ""
    price_in: float = 0.0
    price_out: float = 0.0
    context: int = 4096
    max_output: int = 1024
    tags: tuple[str, ...] = ()
    threads: int = 0  # 0 = all cores
    parallel: int = 1  # llama.cpp slots, each with the whole context and its own prefix cache (config default: 4)
    timeout_s: float = 120.0
    retries: int = 2
    stands_in_for: str = ""  # set when a local model fills the frontier tier
    next_step_pass: bool = True  # llamacpp: after a tool result, ask "another call, or an answer?" first
    lora: tuple[str, ...] = ()  # llamacpp: GGUF LoRA adapters applied to the base model (`smallfleet learn finetune`)
    on_premises: bool = False  # openai: a model server on the operator's own machines (vLLM, llama.cpp server, Ollama)

    @property
    def is_local(self) -> bool:
        """Embedded in this process."""
        return self.backend == "llamacpp"

    @property
    def private(self) -> bool:
        """Personal data may reach it as is: embedded, or served on the operator's own machines."""
        return self.is_local or self.on_premises

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.price_in + tokens_out * self.price_out) / 1_000_000

    def resolved_api_key(self) -> str:
        if self.api_key:
            return self.api_key
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""


@dataclass(frozen=True)
class KindPolicy:
    """How one step kind is routed: where it starts, what must pass, whether to escalate."""

    start: str
    checks: tuple[str, ...]
    escalate: bool = True
    min_confidence: float = 0.0  # mean token probability floor for the confidence check
