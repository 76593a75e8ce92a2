"""The fleet: one backend instance per model of the config, built on first use."""

from __future__ import annotations

from .assets import ProgressFn
from .config import Config
from .errors import ModelNotFoundError
from .models import AnthropicBackend, Backend, LlamaCppBackend, OpenAIHTTPBackend
from .spec import ModelSpec


def make_backend(spec: ModelSpec, progress: ProgressFn | None = None) -> Backend:
    if spec.backend == "llamacpp":
        return LlamaCppBackend(spec, progress)
    if spec.backend == "anthropic":
        return AnthropicBackend(spec)
    return OpenAIHTTPBackend(spec)


class Fleet:
    """Lazily built backends, one per distinct model; a frontier stand-in shares its model's instance."""

    def __init__(self, config: Config, progress: ProgressFn | None = None, backends: dict[str, Backend] | None = None) -> None:
        """``backends`` puts given instances (e.g. a :class:`FunctionBackend`) in place of models by name."""
        self.config = config
        self._progress = progress
        self._backends: dict[str, Backend] = dict(backends or {})

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.config.models[name]
        except KeyError:
            raise ModelNotFoundError(f"model {name!r} is not in the fleet.",
                                     hint=f"use 'auto' or one of: {', '.join(self.config.models)}", param="model") from None

    def get(self, name: str) -> Backend:
        b = self._backends.get(name)
        if b is None:
            spec = self.spec(name)
            if spec.stands_in_for:
                b = self.get(spec.stands_in_for)
            else:
                b = make_backend(spec, self._progress)
            self._backends[name] = b
        return b

    def for_tier(self, tier: str) -> tuple[ModelSpec, Backend]:
        spec = self.config.tier_model(tier)
        return spec, self.get(spec.name)

    def loaded(self, name: str) -> bool:
        b = self._backends.get(name)
        return bool(b and b.loaded)

    async def aclose(self) -> None:
        seen: set[int] = set()
        for b in self._backends.values():
            if id(b) not in seen:
                seen.add(id(b))
                await b.aclose()
        self._backends.clear()
