"""Fleet configuration: models, tiers, routing policy, ledger, server.

Sources, later ones win: the built-in default fleet, ``smallfleet.toml`` (path from ``--config``,
``$SMALLFLEET_CONFIG``, or ``./smallfleet.toml`` when present), then environment variables (see
:data:`ENV_VARS`). Everything is validated once at load time; errors name the offending key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .checks import registered_checks
from .errors import ConfigError
from .guards.settings import MODES as GUARD_MODES
from .guards.settings import GuardSettings
from .privacy.guard import PrivacySettings
from .spec import KindPolicy, ModelSpec
from .step import StepKind

BACKENDS = ("llamacpp", "openai", "anthropic")

#: Environment variables read by :func:`load_config` (documented in the README and `--help`).
ENV_VARS: dict[str, str] = {
    "SMALLFLEET_CONFIG": "path of a smallfleet.toml to load",
    "SMALLFLEET_LEDGER": "path of the SQLite ledger (default: ~/.local/share/smallfleet/ledger.db)",
    "SMALLFLEET_HOST": "gateway bind address (default 127.0.0.1)",
    "SMALLFLEET_PORT": "gateway port (default 8088)",
    "SMALLFLEET_THREADS": "CPU threads per embedded model (default: all cores)",
    "SMALLFLEET_SMALL_MODEL": "GGUF path or package:NAME for the small tier",
    "SMALLFLEET_LARGE_MODEL": "GGUF path or package:NAME for the large tier",
    "SMALLFLEET_FRONTIER_URL": "base URL of an OpenAI- or Anthropic-style API for the frontier tier",
    "SMALLFLEET_FRONTIER_MODEL": "model name at that API",
    "SMALLFLEET_FRONTIER_STYLE": "openai (default) or anthropic",
    "SMALLFLEET_FRONTIER_API_KEY": "API key for the frontier tier (else OPENAI_API_KEY / ANTHROPIC_API_KEY)",
    "SMALLFLEET_FRONTIER_PRICE": "frontier price per 1M tokens as IN,OUT in USD (default 2.50,10.00)",
    "SMALLFLEET_CACHE_DIR": "where assembled GGUF files are cached (default ~/.cache/smallfleet/models)",
    "SMALLFLEET_RUN_BUDGET": "default budget in USD per agent run (x-smallfleet-run); unset = unlimited",
    "SMALLFLEET_PRIVACY": "on (default) or off: pseudonymise personal data before any remote model call",
    "SMALLFLEET_VAULT_KEY": "Fernet key for encrypted vault files (smallfleet redact --vault)",
    "SMALLFLEET_STREAM": "verified (default: run the cascade, then stream) or live (text steps stream as generated)",
    "SMALLFLEET_GUARD": "block (default), flag, confirm or off: what happens to a tool call the policy denies",
    "SMALLFLEET_POLICY": "tool policy file (TOML: capabilities and argument roles per tool)",
    "SMALLFLEET_MEMORY": "on (default) or off: session facts for requests with x-smallfleet-session",
    "SMALLFLEET_MEMORY_KEY": "Fernet key: session fact values encrypted at rest",
    "SMALLFLEET_INDEX": "knowledge base for grounded steps (default ~/.local/share/smallfleet/index.db)",
    "SMALLFLEET_JUDGE": "a model or tier that judges reasoning answers the process verifier is unsure of (default: off)",
    "SMALLFLEET_KEYS": "API-key store (default: keys.db beside the ledger); once it holds a key, every endpoint needs one",
}


@dataclass(frozen=True)
class GroundingSettings:
    index: Path | None = None        # knowledge base for grounded steps (default: the data dir's index.db)
    kinds: tuple[str, ...] = ()      # step kinds grounded without being asked (e.g. ["generation"])
    k: int = 4                       # chunks of evidence per step
    min_relevance: float = 0.35      # best chunk's cosine below this = weak evidence

    @property
    def index_path(self) -> Path:
        return self.index or default_data_dir() / "index.db"


@dataclass(frozen=True)
class MemorySettings:
    enabled: bool = True             # requests with x-smallfleet-session get facts extracted and pinned
    path: Path | None = None         # fact store (default: the data dir's memory.db)
    model: str = ""                  # extractor (default: the cheapest tier's model; must be local)
    max_pinned: int = 12
    defer: bool = True               # read the latest user turn after answering (its facts serve later turns)
    # Fernet key from $SMALLFLEET_MEMORY_KEY (never from the config file): fact values encrypted at rest
    key: str | None = field(default=None, repr=False)

    @property
    def store_path(self) -> Path:
        return self.path or default_data_dir() / "memory.db"


@dataclass(frozen=True)
class ServerLimits:
    """What one client may cost the gateway; set by the operator, never by a request."""
    max_body_mb: float = 8.0          # request body
    header_timeout_s: float = 10.0    # from connect (or the end of the last response) to the end of the headers
    body_timeout_s: float = 30.0      # from the end of the headers to the end of the body
    keepalive_s: float = 5.0          # idle keep-alive connection
    max_connections: int = 256        # open connections; more are closed at once
    max_concurrent: int = 64          # requests in flight; more get 503

    @property
    def max_body(self) -> int:
        return int(self.max_body_mb * (1 << 20))


@dataclass(frozen=True)
class VerifySettings:
    # A model (fleet name or tier) asked to judge a reasoning answer when the process verifier's score
    # falls in `band` (unsure either way); "" = off. Never the model that wrote the answer.
    judge: str = ""
    band: tuple[float, float] = (0.3, 0.6)


@dataclass(frozen=True)
class Config:
    models: dict[str, ModelSpec]
    tiers: tuple[str, ...]
    routing: dict[StepKind, KindPolicy]
    max_escalations: int = 2
    reference_price_in: float = 2.50  # the counterfactual "all-frontier" price when no frontier API
    reference_price_out: float = 10.00
    ledger_path: Path = field(default_factory=lambda: default_data_dir() / "ledger.db")
    host: str = "127.0.0.1"
    port: int = 8088
    run_budget_usd: float | None = None
    stream_mode: str = "verified"  # or "live": text steps stream token by token, checks recorded after
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    guards: GuardSettings = field(default_factory=GuardSettings)
    grounding: GroundingSettings = field(default_factory=GroundingSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    verify: VerifySettings = field(default_factory=VerifySettings)
    limits: ServerLimits = field(default_factory=ServerLimits)
    keys_path: Path | None = None  # API-key store (default: keys.db beside the ledger)
    knowledge: dict[str, Path] = field(default_factory=dict)  # [knowledge.NAME] path: the bases a request may name
    source: str = "built-in defaults"

    @property
    def key_store_path(self) -> Path:
        return self.keys_path or self.ledger_path.parent / "keys.db"

    def knowledge_path(self, name: str) -> Path:
        """The file of a knowledge base a request names ("default" is [grounding] index unless redefined)."""
        if name in self.knowledge:
            return self.knowledge[name]
        if name == "default":
            return self.grounding.index_path
        from .errors import InvalidRequestError

        known = ", ".join(sorted({"default", *self.knowledge}))
        raise InvalidRequestError(f"no knowledge base named {name[:64]!r}; this gateway has: {known}.", param="x-smallfleet-kb",
                                  hint="knowledge bases are declared by the operator as [knowledge.NAME] path = ... in smallfleet.toml")

    def judge_model(self) -> ModelSpec | None:
        """The model named by [verify] judge (a fleet model or a tier), or None when it is off."""
        j = self.verify.judge
        if not j:
            return None
        return self.models[j] if j in self.models else self.tier_model(j)

    def tier_model(self, tier: str) -> ModelSpec:
        for m in self.models.values():
            if m.tier == tier:
                return m
        raise ConfigError(f"no model is assigned to tier {tier!r}.", hint="add a [models.NAME] with tier = ...")

    def next_tier(self, tier: str) -> str | None:
        i = self.tiers.index(tier)
        return self.tiers[i + 1] if i + 1 < len(self.tiers) else None

    @property
    def frontier(self) -> ModelSpec:
        return self.tier_model(self.tiers[-1])

    def frontier_price(self) -> tuple[float, float]:
        """Prices for the all-frontier counterfactual: the real frontier's, else the reference price."""
        f = self.frontier
        if f.stands_in_for or f.is_local:
            return self.reference_price_in, self.reference_price_out
        return f.price_in, f.price_out

    def frontier_cost(self, tokens_in: int, tokens_out: int) -> float:
        """What these tokens would have cost on the frontier: the counterfactual the reports compare with."""
        pin, pout = self.frontier_price()
        return (tokens_in * pin + tokens_out * pout) / 1_000_000


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "smallfleet"


def _default_threads() -> int:
    env = os.environ.get("SMALLFLEET_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ConfigError(f"SMALLFLEET_THREADS={env!r} is not an integer.") from None
        if n < 1:
            raise ConfigError("SMALLFLEET_THREADS must be at least 1.")
        return n
    return os.cpu_count() or 2


DEFAULT_ROUTING: dict[StepKind, KindPolicy] = {
    StepKind.TOOL_CHOICE: KindPolicy("small", ("tool_call_valid", "loop_answer", "args_grounded", "answer_grounded", "nonempty",
                                               "confidence"), True, 0.45),
    StepKind.EXTRACTION: KindPolicy("small", ("schema_valid", "extraction_grounded", "confidence"), True, 0.45),
    StepKind.CLASSIFICATION: KindPolicy("small", ("schema_valid", "label_margin"), True, 0.60),
    # after a tool result: a new call (checked like any call) or an answer in words (loop_answer)
    StepKind.RESHAPING: KindPolicy("small", ("tool_call_valid", "loop_answer", "args_grounded", "answer_grounded", "nonempty",
                                             "not_refusal"), True, 0.0),
    # 0.90: Youden-best threshold on held-out GSM8K train problems (bench/calibrate_confidence.py); the
    # signal is weak there (AUROC 0.59), so reasoning escalates readily; the process check adds the
    # arithmetic recomputation and the distilled verifier.
    StepKind.REASONING: KindPolicy("small", ("nonempty", "not_refusal", "process", "confidence"), True, 0.90),
    StepKind.GENERATION: KindPolicy("small", ("nonempty", "not_refusal"), True, 0.0),
}


def _local(name: str, tier: str, location: str, price_in: float, price_out: float, tags: tuple[str, ...]) -> ModelSpec:
    return ModelSpec(
        name=name, backend="llamacpp", tier=tier, location=location, price_in=price_in, price_out=price_out,
        context=4096, tags=tags, threads=_default_threads(),
    )


def default_models() -> dict[str, ModelSpec]:
    """The built-in fleet. Local prices are small but non-zero (electricity + hardware), so savings are honest."""
    # The 0.5B's next-step pass makes spurious calls (bench/agents.py, inbox: 25 % of tasks with it, 42 % without;
    # suite: 17 of 50 either way); the 1.5B's makes the second calls of chains (suite: 30 → 34 of 50).
    small = replace(_local("qwen2.5-coder-0.5b", "small", "package:qwen2.5-coder-0.5b", 0.02, 0.04, ("tools", "json")),
                    next_step_pass=False)
    large = _local("qwen2.5-coder-1.5b", "large", "package:qwen2.5-coder-1.5b", 0.06, 0.12, ("tools", "json", "reasoning"))
    return {small.name: small, large.name: large}


def _frontier_from_env(env: dict[str, str]) -> ModelSpec | None:
    url = env.get("SMALLFLEET_FRONTIER_URL", "")
    style = env.get("SMALLFLEET_FRONTIER_STYLE", "")
    key = env.get("SMALLFLEET_FRONTIER_API_KEY", "")
    model = env.get("SMALLFLEET_FRONTIER_MODEL", "")
    key_env = ""
    if not url:
        if env.get("OPENAI_API_KEY"):
            url, style, key_env, model = "https://api.openai.com/v1", "openai", "OPENAI_API_KEY", model or "gpt-4o"
        elif env.get("ANTHROPIC_API_KEY"):
            url, style, key_env = "https://api.anthropic.com", "anthropic", "ANTHROPIC_API_KEY"
            model = model or "claude-sonnet-4-5"
        else:
            return None
    style = style or "openai"
    if style not in ("openai", "anthropic"):
        raise ConfigError(f"SMALLFLEET_FRONTIER_STYLE={style!r}: use 'openai' or 'anthropic'.")
    if not model:
        raise ConfigError("SMALLFLEET_FRONTIER_URL is set but SMALLFLEET_FRONTIER_MODEL is not.",
                          hint="set SMALLFLEET_FRONTIER_MODEL to the model name at that API")
    pin, pout = _parse_price(env.get("SMALLFLEET_FRONTIER_PRICE", "2.50,10.00"))
    if not key and not key_env:
        key_env = "OPENAI_API_KEY" if style == "openai" else "ANTHROPIC_API_KEY"
    return ModelSpec(name=model, backend=style, tier="frontier", location=url, remote_model=model, api_key=key,
                     api_key_env=key_env, price_in=pin, price_out=pout, context=128_000, tags=("tools", "json", "reasoning"))


def _parse_price(text: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"price {text!r} must look like IN,OUT in USD per 1M tokens, e.g. 2.50,10.00.") from None
    if a < 0 or b < 0:
        raise ConfigError(f"price {text!r} must not be negative.")
    return a, b


def _stand_in_frontier(models: dict[str, ModelSpec], tiers: tuple[str, ...]) -> dict[str, ModelSpec]:
    """No frontier API configured: the largest local tier answers for it, and reports say so."""
    if any(m.tier == tiers[-1] for m in models.values()):
        return models
    below = [m for m in models.values() if m.tier in tiers[:-1]]
    if not below:
        return models
    biggest = max(below, key=lambda m: tiers.index(m.tier))
    out = dict(models)
    out["frontier-stand-in"] = replace(biggest, name="frontier-stand-in", tier=tiers[-1], stands_in_for=biggest.name)
    return out


def _get(d: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str, default: Any = None) -> Any:
    if key not in d:
        return default
    v = d[key]
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, typ) or (isinstance(v, bool) and typ is not bool):
        tname = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise ConfigError(f"{where}.{key} must be a {tname}, got {type(v).__name__} {v!r}.")
    return v


_MODEL_KEYS = {"backend", "tier", "path", "url", "model", "api_key_env", "api_key", "price_in", "price_out",
               "context", "max_output", "tags", "threads", "parallel", "timeout_s", "retries", "next_step_pass"}


def _parse_model(name: str, d: Any, tiers: tuple[str, ...]) -> ModelSpec:
    where = f"models.{name}"
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a table.")
    unknown = set(d) - _MODEL_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}.", hint=f"allowed: {', '.join(sorted(_MODEL_KEYS))}")
    backend = _get(d, "backend", str, where, "llamacpp")
    if backend not in BACKENDS:
        raise ConfigError(f"{where}.backend = {backend!r} is not one of {', '.join(BACKENDS)}.")
    tier = _get(d, "tier", str, where)
    if tier is None:
        raise ConfigError(f"{where}.tier is missing.", hint=f"set tier to one of: {', '.join(tiers)}")
    if tier not in tiers:
        raise ConfigError(f"{where}.tier = {tier!r} is not one of the fleet tiers {list(tiers)}.")
    if backend == "llamacpp":
        location = _get(d, "path", str, where)
        if not location:
            raise ConfigError(f"{where}.path is missing: a GGUF file path or package:NAME.")
    else:
        location = _get(d, "url", str, where)
        if not location or not location.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url must be an http(s) base URL, got {location!r}.")
    spec = ModelSpec(
        name=name, backend=backend, tier=tier, location=location,
        remote_model=_get(d, "model", str, where, name), api_key_env=_get(d, "api_key_env", str, where, ""),
        api_key=_get(d, "api_key", str, where, ""),
        price_in=_get(d, "price_in", float, where, 0.0), price_out=_get(d, "price_out", float, where, 0.0),
        context=_get(d, "context", int, where, 4096), max_output=_get(d, "max_output", int, where, 1024),
        tags=tuple(_get(d, "tags", list, where, [])), threads=_get(d, "threads", int, where, 0) or _default_threads(),
        parallel=_get(d, "parallel", int, where, 1), timeout_s=_get(d, "timeout_s", float, where, 120.0),
        retries=_get(d, "retries", int, where, 2), next_step_pass=_get(d, "next_step_pass", bool, where, True),
    )
    if spec.price_in < 0 or spec.price_out < 0:
        raise ConfigError(f"{where}: prices must not be negative.")
    if spec.context < 256:
        raise ConfigError(f"{where}.context = {spec.context} is too small (at least 256).")
    if spec.parallel < 1 or spec.threads < 1:
        raise ConfigError(f"{where}: threads and parallel must be at least 1.")
    return spec


def _parse_routing(d: Any, tiers: tuple[str, ...]) -> dict[StepKind, KindPolicy]:
    routing = dict(DEFAULT_ROUTING)
    if d is None:
        return routing
    if not isinstance(d, dict):
        raise ConfigError("routing must be a table of step kinds.")
    for kind_name, pol in d.items():
        try:
            kind = StepKind(kind_name)
        except ValueError:
            raise ConfigError(f"routing.{kind_name}: unknown step kind.",
                              hint=f"use one of: {', '.join(k.value for k in StepKind)}") from None
        where = f"routing.{kind_name}"
        if not isinstance(pol, dict):
            raise ConfigError(f"{where} must be a table.")
        base = routing[kind]
        start = _get(pol, "start", str, where, base.start)
        if start not in tiers:
            raise ConfigError(f"{where}.start = {start!r} is not one of the tiers {list(tiers)}.")
        checks = tuple(_get(pol, "checks", list, where, list(base.checks)))

        bad = [c for c in checks if c not in registered_checks()]
        if bad:
            raise ConfigError(f"{where}.checks: unknown check(s) {bad}.", hint=f"known: {', '.join(registered_checks())}")
        conf = _get(pol, "min_confidence", float, where, base.min_confidence)
        if not 0.0 <= conf <= 1.0:
            raise ConfigError(f"{where}.min_confidence must be between 0 and 1.")
        routing[kind] = KindPolicy(start, checks, _get(pol, "escalate", bool, where, base.escalate), conf)
    return routing


def _check_section(d: Any, name: str, allowed: tuple[str, ...]) -> None:
    """A config section must be a table with only the keys it knows (listed in order in the hint)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{name} must be a table.")
    unknown = set(d) - set(allowed)
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {', '.join(sorted(unknown))}.", hint=f"allowed: {', '.join(allowed)}")


def _env_onoff(env: dict[str, str], name: str, default: bool) -> bool:
    """An on/off switch from the environment, overriding the file's value."""
    flag = env.get(name, "").lower()
    if not flag:
        return default
    if flag not in ("on", "off"):
        raise ConfigError(f"{name}={flag!r}: use on or off.")
    return flag == "on"


def _parse_privacy(d: Any, env: dict[str, str]) -> PrivacySettings:
    _check_section(d, "privacy", ("enabled", "prefer_local", "entities", "threshold", "ner"))
    from .privacy.entities import ENTITY_TYPES

    entities = tuple(_get(d, "entities", list, "privacy", []))
    bad = [e for e in entities if e not in ENTITY_TYPES]
    if bad:
        raise ConfigError(f"privacy.entities: unknown type(s) {bad}.", hint=f"known: {', '.join(ENTITY_TYPES)}")
    threshold = _get(d, "threshold", float, "privacy", 0.5)
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError("privacy.threshold must be between 0 and 1.")
    enabled = _env_onoff(env, "SMALLFLEET_PRIVACY", _get(d, "enabled", bool, "privacy", True))
    return PrivacySettings(enabled=enabled, prefer_local=_get(d, "prefer_local", bool, "privacy", True),
                           entities=entities, threshold=threshold, ner=_get(d, "ner", bool, "privacy", True))


def _parse_guards(d: Any, env: dict[str, str]) -> GuardSettings:
    _check_section(d, "guards", ("mode", "policy_file", "detector", "trusted_tools", "datamark"))
    mode = env.get("SMALLFLEET_GUARD") or _get(d, "mode", str, "guards", "block")
    if mode not in GUARD_MODES:
        raise ConfigError(f"guard mode {mode!r}: use one of {', '.join(GUARD_MODES)}.", hint="guards.mode or SMALLFLEET_GUARD")
    pf = env.get("SMALLFLEET_POLICY") or _get(d, "policy_file", str, "guards", "")
    policy_file = Path(pf).expanduser() if pf else None
    if policy_file is not None and not policy_file.is_file():
        raise ConfigError(f"policy file {policy_file} does not exist.", hint="fix guards.policy_file or SMALLFLEET_POLICY")
    trusted = _get(d, "trusted_tools", list, "guards", [])
    if not all(isinstance(t, str) for t in trusted):
        raise ConfigError("guards.trusted_tools must be a list of tool names.")
    return GuardSettings(mode=mode, policy_file=policy_file, detector=_get(d, "detector", bool, "guards", True),
                         trusted_tools=tuple(trusted), datamark=_get(d, "datamark", bool, "guards", False))


def _parse_grounding(d: Any, env: dict[str, str]) -> GroundingSettings:
    _check_section(d, "grounding", ("index", "kinds", "k", "min_relevance"))
    kinds = tuple(_get(d, "kinds", list, "grounding", []))
    bad = [k for k in kinds if k not in {s.value for s in StepKind}]
    if bad:
        raise ConfigError(f"grounding.kinds: unknown step kind(s) {bad}.", hint=f"known: {', '.join(s.value for s in StepKind)}")
    k = _get(d, "k", int, "grounding", 4)
    if not 1 <= k <= 20:
        raise ConfigError("grounding.k must be between 1 and 20.")
    rel = _get(d, "min_relevance", float, "grounding", 0.35)
    if not 0.0 <= rel <= 1.0:
        raise ConfigError("grounding.min_relevance must be between 0 and 1.")
    idx = env.get("SMALLFLEET_INDEX") or _get(d, "index", str, "grounding", "")
    return GroundingSettings(index=Path(idx).expanduser() if idx else None, kinds=kinds, k=k, min_relevance=rel)


def _parse_memory(d: Any, env: dict[str, str]) -> MemorySettings:
    _check_section(d, "memory", ("enabled", "path", "model", "max_pinned", "defer"))
    enabled = _env_onoff(env, "SMALLFLEET_MEMORY", _get(d, "enabled", bool, "memory", True))
    n = _get(d, "max_pinned", int, "memory", 12)
    if not 1 <= n <= 100:
        raise ConfigError("memory.max_pinned must be between 1 and 100.")
    path = _get(d, "path", str, "memory", "")
    return MemorySettings(enabled=enabled, path=Path(path).expanduser() if path else None,
                          model=_get(d, "model", str, "memory", ""), max_pinned=n, defer=_get(d, "defer", bool, "memory", True),
                          key=env.get("SMALLFLEET_MEMORY_KEY") or None)


_LIMIT_KEYS = ("max_body_mb", "header_timeout_s", "body_timeout_s", "keepalive_s", "max_connections", "max_concurrent")


def _parse_limits(server: dict[str, Any]) -> ServerLimits:
    vals: dict[str, Any] = {}
    for key in _LIMIT_KEYS:
        typ = int if key.startswith("max_c") else float
        v = _get(server, key, typ, "server", None)
        if v is None:
            continue
        if v <= 0:
            raise ConfigError(f"server.{key} must be positive.")
        vals[key] = v
    return ServerLimits(**vals)


def _parse_knowledge(d: Any) -> dict[str, Path]:
    if not isinstance(d, dict):
        raise ConfigError("knowledge must be a table of [knowledge.NAME] entries.")
    out: dict[str, Path] = {}
    for name, entry in d.items():
        _check_section(entry, f"knowledge.{name}", ("path",))
        path = _get(entry, "path", str, f"knowledge.{name}", "")
        if not path:
            raise ConfigError(f"knowledge.{name}.path is missing.", hint="the knowledge-base file built by `smallfleet index add`")
        out[name] = Path(path).expanduser()
    return out


def _parse_verify(d: Any, env: dict[str, str], models: dict[str, ModelSpec], tiers: tuple[str, ...]) -> VerifySettings:
    _check_section(d, "verify", ("judge", "band"))
    judge = env.get("SMALLFLEET_JUDGE", _get(d, "judge", str, "verify", "")).strip()
    if judge.lower() in ("off", "none"):
        judge = ""
    if judge and judge not in models and judge not in tiers:
        raise ConfigError(f"verify.judge: {judge!r} is neither a model nor a tier of this fleet.",
                          hint=f"models: {', '.join(models)}; tiers: {', '.join(tiers)}; or \"\" for no judge")
    band = _get(d, "band", list, "verify", [0.3, 0.6])
    if len(band) != 2 or not all(isinstance(x, (int, float)) for x in band) or not 0 <= band[0] <= band[1] <= 1:
        raise ConfigError("verify.band must be [LOW, HIGH] with 0 <= LOW <= HIGH <= 1.",
                          hint="process-check scores inside it go to the judge, e.g. [0.3, 0.6]")
    return VerifySettings(judge=judge, band=(float(band[0]), float(band[1])))


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Load and validate the fleet configuration (see module doc for the precedence)."""
    env = dict(os.environ) if env is None else env
    data: dict[str, Any] = {}
    source = "built-in defaults"
    path = path or env.get("SMALLFLEET_CONFIG") or ("smallfleet.toml" if Path("smallfleet.toml").is_file() else None)
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist.", hint="check --config or SMALLFLEET_CONFIG")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {p} is not valid TOML: {e}.") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {p} is not UTF-8 text.") from None
        source = str(p)
    unknown = set(data) - {"fleet", "models", "routing", "ledger", "server", "privacy", "guards", "grounding", "memory",
                         "verify", "knowledge"}
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(sorted(unknown))}.",
                          hint="sections: fleet, models, routing, ledger, server, privacy, guards, grounding, memory, verify, knowledge")
    fleet = data.get("fleet", {})
    if not isinstance(fleet, dict):
        raise ConfigError("fleet must be a table.")
    tiers = tuple(_get(fleet, "tiers", list, "fleet", ["small", "large", "frontier"]))
    if len(tiers) < 1 or len(set(tiers)) != len(tiers) or not all(isinstance(t, str) for t in tiers):
        raise ConfigError("fleet.tiers must be a non-empty list of distinct names, cheapest first.")

    models = default_models() if "models" not in data else {}
    if "models" in data:
        if not isinstance(data["models"], dict) or not data["models"]:
            raise ConfigError("models must be a non-empty table of [models.NAME] entries.")
        for name, d in data["models"].items():
            models[name] = _parse_model(name, d, tiers)
    for tier_env, tier in (("SMALLFLEET_SMALL_MODEL", "small"), ("SMALLFLEET_LARGE_MODEL", "large")):
        if env.get(tier_env):
            for n, m in list(models.items()):
                if m.tier == tier and m.is_local:
                    models[n] = replace(m, location=env[tier_env])
    frontier = _frontier_from_env(env)
    if frontier is not None and tiers[-1] == "frontier" and not any(m.tier == "frontier" for m in models.values()):
        models[frontier.name] = frontier
    models = _stand_in_frontier(models, tiers)
    for t in tiers:
        if not any(m.tier == t for m in models.values()):
            raise ConfigError(f"tier {t!r} has no model.", hint=f"add a [models.NAME] with tier = \"{t}\"")

    routing = _parse_routing(data.get("routing"), tiers)
    ref_in, ref_out = _parse_price(",".join(str(x) for x in _get(fleet, "reference_price", list, "fleet", [2.5, 10.0])))
    ledger = data.get("ledger", {})
    server = data.get("server", {})
    if not isinstance(ledger, dict) or not isinstance(server, dict):
        raise ConfigError("ledger and server must be tables.")
    ledger_path = Path(env.get("SMALLFLEET_LEDGER") or _get(ledger, "path", str, "ledger", "")
                       or default_data_dir() / "ledger.db").expanduser()
    try:
        port = int(env.get("SMALLFLEET_PORT") or _get(server, "port", int, "server", 8088))
    except ValueError:
        raise ConfigError(f"SMALLFLEET_PORT={env.get('SMALLFLEET_PORT')!r} is not a port number.") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} is out of range.")
    budget_txt = env.get("SMALLFLEET_RUN_BUDGET")
    budget = _get(ledger, "run_budget_usd", float, "ledger", None)
    if budget_txt:
        try:
            budget = float(budget_txt)
        except ValueError:
            raise ConfigError(f"SMALLFLEET_RUN_BUDGET={budget_txt!r} is not a number.") from None
    if budget is not None and not (0 <= budget < float("inf")):
        raise ConfigError(f"run budget {budget!r} must be a finite, non-negative number of USD.",
                          hint="ledger.run_budget_usd or SMALLFLEET_RUN_BUDGET")
    unknown_server = set(server) - {"host", "port", "stream", "keys", *_LIMIT_KEYS}
    if unknown_server:
        raise ConfigError(f"server: unknown key(s) {', '.join(sorted(unknown_server))}.",
                          hint=f"allowed: host, port, stream, keys, {', '.join(_LIMIT_KEYS)}")
    keys = env.get("SMALLFLEET_KEYS") or _get(server, "keys", str, "server", "")
    stream_mode = env.get("SMALLFLEET_STREAM") or _get(server, "stream", str, "server", "verified")
    if stream_mode not in ("verified", "live"):
        raise ConfigError(f"stream mode {stream_mode!r}: use 'verified' or 'live'.")
    privacy = _parse_privacy(data.get("privacy", {}), env)
    guards = _parse_guards(data.get("guards", {}), env)
    grounding = _parse_grounding(data.get("grounding", {}), env)
    memory = _parse_memory(data.get("memory", {}), env)
    verify = _parse_verify(data.get("verify", {}), env, models, tiers)
    max_esc = _get(fleet, "max_escalations", int, "fleet", 2)
    if max_esc < 0 or max_esc > len(tiers):
        raise ConfigError(f"fleet.max_escalations must be between 0 and {len(tiers)}.")
    return Config(
        models=models, tiers=tiers, routing=routing, max_escalations=max_esc,
        reference_price_in=ref_in, reference_price_out=ref_out, ledger_path=ledger_path,
        host=env.get("SMALLFLEET_HOST") or _get(server, "host", str, "server", "127.0.0.1"), port=port,
        run_budget_usd=budget, stream_mode=stream_mode, privacy=privacy, guards=guards, grounding=grounding, memory=memory, verify=verify,
        limits=_parse_limits(server), keys_path=Path(keys).expanduser() if keys else None,
        knowledge=_parse_knowledge(data.get("knowledge", {})), source=source,
    )
