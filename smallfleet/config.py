"""Fleet configuration: models, tiers, routing policy, ledger, server.

Sources, later ones win: the built-in default fleet, ``smallfleet.toml`` (path from ``--config``,
``$SMALLFLEET_CONFIG``, or ``./smallfleet.toml`` when present), then environment variables (see
:data:`ENV_VARS`). The whole file is validated once at load time against one schema (:data:`_SCHEMA`);
errors name the table and key, and the closest valid one.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_args, get_origin

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
    "SMALLFLEET_LEDGER": "path of the SQLite ledger (default: .smallfleet/ledger.db beside the config file when there is one, "
                         "else ~/.local/share/smallfleet/ledger.db)",
    "SMALLFLEET_DATABASE_URL": "postgresql://user:password@host:port/db: the ledger, runs and budgets in PostgreSQL, shared by every "
                               "gateway process and command that uses it (instead of the SQLite file)",
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
    "SMALLFLEET_PRIVACY_LOCAL_PASS": "a local model or tier that lists private spans the patterns and NER missed, in text "
                                     "bound for a remote model (off by default)",
    "SMALLFLEET_PRIVACY_REWRITE": "step kinds (comma-separated) whose requests a local model rewrites without private "
                                  "details before a remote model answers them (rewrite mode; off by default)",
    "SMALLFLEET_VAULT_KEY": "Fernet key for encrypted vault files (smallfleet redact --vault)",
    "SMALLFLEET_SESSION_STORE": "session state (pseudonym vaults, Responses history) shared by gateway processes: a file or "
                                "postgresql:// URL (default: the database URL when set; serve --workers: sessions.db)",
    "SMALLFLEET_OTLP_ENDPOINT": "OpenTelemetry collector (OTLP/HTTP, e.g. http://collector:4318): a span per step and attempt; "
                                "needs smallfleet[otel]",
    "SMALLFLEET_PROGRAM_CHECK": "on/off: reasoning answers cross-checked by a program a local model writes, run in a sandbox, "
                                "and decided by the combined reasoning score",
    "SMALLFLEET_REASONING_SAMPLES": "0-16 (default 3): answers sampled when the reasoning score is undecided; 0 never samples",
    "SMALLFLEET_ALLOWED_HOSTS": "Host values (NAME:PORT, comma-separated) a gateway without keys accepts besides its own loopback "
                                "address, e.g. a load balancer on this machine",
    "SMALLFLEET_CORS_ORIGINS": "browser origins allowed to call the API (comma-separated scheme://host[:port], or *); "
                               "default: none (CORS off)",
    "SMALLFLEET_SESSION_KEY": "Fernet key for that shared session state (required on PostgreSQL, the same on every replica)",
    "SMALLFLEET_STREAM": "verified (default: run the cascade, then stream) or live (text steps stream as generated)",
    "SMALLFLEET_GUARD": "block (default), flag, confirm or off: what happens to a tool call the policy denies",
    "SMALLFLEET_POLICY": "tool policy file (TOML: capabilities and argument roles per tool)",
    "SMALLFLEET_MEMORY": "on (default) or off: session facts for requests with x-smallfleet-session",
    "SMALLFLEET_MEMORY_KEY": "Fernet key: session fact values encrypted at rest",
    "SMALLFLEET_INDEX": "knowledge base for grounded steps (default ~/.local/share/smallfleet/index.db)",
    "SMALLFLEET_JUDGE": "a model or tier that judges reasoning answers the process verifier is unsure of (default: off)",
    "SMALLFLEET_ACCESS_LOG": "on (default) or off: one line per HTTP request on stderr (route, status, bytes, time; no request text)",
    "SMALLFLEET_CAPTURE": "on or off (default): capture steps into the trace store for the learning loop",
    "SMALLFLEET_CAPTURE_KEY": "Fernet key: captured traces encrypted at rest (default: traces.key beside the store)",
    "SMALLFLEET_TRACES": "trace store (default ~/.local/share/smallfleet/traces.db)",
    "SMALLFLEET_ROUTES": "learned routing table (default ~/.local/share/smallfleet/routes.json; written by `smallfleet learn apply`)",
    "SMALLFLEET_KEYS": "API-key store (default: keys.db beside the ledger, or the PostgreSQL database when one is set); "
                       "once it holds a key, every endpoint needs one",
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
    # PostgreSQL: the ledger's database when no store file is named (a session's facts follow it to any replica)
    url: str | None = field(default=None, repr=False)

    @property
    def store_path(self) -> Path:
        return self.path or default_data_dir() / "memory.db"

    @property
    def target(self) -> str | Path:
        """Where the facts live: the PostgreSQL URL, else the SQLite file."""
        return self.url or self.store_path


@dataclass(frozen=True)
class CaptureSettings:
    enabled: bool = False            # opt-in: nothing is captured unless asked
    store: Path | None = None        # trace store (default: the data dir's traces.db)
    sample: float = 1.0              # share of conversations captured (a sampled agent run is captured whole)
    retention_days: float = 30.0     # traces stored longer ago are deleted
    shadow: float = 0.0              # share of steps answered above the small tier replayed on it in the background
    queue: int = 1000                # steps waiting to be written; more are dropped (and counted), never waited for
    # Fernet key from $SMALLFLEET_CAPTURE_KEY (never from the config file); else traces.key beside the store
    key: str | None = field(default=None, repr=False)
    # PostgreSQL: a postgresql:// store, or the ledger's database when no store file is named
    url: str | None = field(default=None, repr=False)

    @property
    def store_path(self) -> Path:
        return self.store or default_data_dir() / "traces.db"

    @property
    def target(self) -> str | Path:
        """Where the traces live: a PostgreSQL URL, else the SQLite file."""
        return self.url or self.store_path


@dataclass(frozen=True)
class LearnSettings:
    routes: Path | None = None       # learned routing table (default: the data dir's routes.json), from `smallfleet learn apply`
    use_routes: bool = True          # follow it when it exists

    @property
    def routes_path(self) -> Path:
        return self.routes or default_data_dir() / "routes.json"


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
    program: bool = False  # reasoning answers cross-checked by a program and decided by the combined score (#18; opt-in)
    samples: int = 3  # sampled answers drawn when the combined score is undecided (0: never sample)


@dataclass(frozen=True)
class Config:
    models: dict[str, ModelSpec]
    tiers: tuple[str, ...]
    routing: dict[StepKind, KindPolicy]
    max_escalations: int = 2
    reference_price_in: float = 2.50  # the counterfactual "all-frontier" price when no frontier API
    reference_price_out: float = 10.00
    ledger_path: Path = field(default_factory=lambda: default_data_dir() / "ledger.db")
    database_url: str | None = field(default=None, repr=False)  # PostgreSQL: the shared ledger (may hold a password)
    # session state shared by gateway processes (vaults, Responses history): a URL or a file; None: per process
    session_store: str | None = field(default=None, repr=False)
    session_key: str | None = field(default=None, repr=False)  # $SMALLFLEET_SESSION_KEY
    otlp_endpoint: str | None = None  # OpenTelemetry: spans per step and attempt go to this collector (opt-in)
    allowed_hosts: tuple[str, ...] = ()  # Host values a keyless gateway also accepts (a local balancer's NAME:PORT)
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API ("*": any); empty: CORS off
    host: str = "127.0.0.1"
    port: int = 8088
    run_budget_usd: float | None = None
    stream_mode: str = "verified"  # or "live": text steps stream token by token, checks recorded after
    access_log: bool = True  # one line per HTTP request (smallfleet.access logger), no request text
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    guards: GuardSettings = field(default_factory=GuardSettings)
    grounding: GroundingSettings = field(default_factory=GroundingSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    learn: LearnSettings = field(default_factory=LearnSettings)
    verify: VerifySettings = field(default_factory=VerifySettings)
    limits: ServerLimits = field(default_factory=ServerLimits)
    keys_path: Path | None = None  # API-key store (default: keys.db beside the ledger)
    knowledge: dict[str, Path] = field(default_factory=dict)  # [knowledge.NAME] path: the bases a request may name
    source: str = "built-in defaults"

    @property
    def ledger_target(self) -> str | Path:
        """Where the ledger lives: the PostgreSQL URL when one is set, else the SQLite file."""
        return self.database_url or self.ledger_path

    @property
    def key_store_path(self) -> Path:
        return self.keys_path or self.ledger_path.parent / "keys.db"

    @property
    def key_store(self) -> str | Path:
        """Where the API keys live: a file named for them, else the shared PostgreSQL database when
        one is set (every replica sees the same keys), else keys.db beside the ledger."""
        if self.keys_path is None and self.database_url:
            return self.database_url
        return self.key_store_path

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
    StepKind.CLASSIFICATION: KindPolicy("small", ("schema_valid", "label_margin", "label_in_set"), True, 0.60),
    # after a tool result: a new call (checked like any call) or an answer in words (loop_answer)
    StepKind.RESHAPING: KindPolicy("small", ("tool_call_valid", "loop_answer", "args_grounded", "answer_grounded", "nonempty",
                                             "not_refusal"), True, 0.0),
    # 0.90: Youden-best threshold on held-out GSM8K train problems (bench/calibrate_confidence.py); the
    # signal is weak there (AUROC 0.59), so reasoning escalates readily; the process check adds the
    # arithmetic recomputation and the distilled verifier.
    StepKind.REASONING: KindPolicy("small", ("nonempty", "not_refusal", "process", "confidence"), True, 0.90),
    StepKind.GENERATION: KindPolicy("small", ("nonempty", "not_refusal"), True, 0.0),
}


# Agent steps carry policies, tool schemas and history: 5k-12k tokens is common. Qwen2.5 reads 32k; 20k
# holds a 16k-token prompt and a 4k answer. Its KV cache (f16) is ~250 MB for the 0.5B, ~570 MB for the 1.5B.
LOCAL_CONTEXT = 20_480
# llama.cpp slots per embedded model: concurrent steps decode together (bench/batching.py: 4 slots give 1.39x
# the tokens/s of one at 8 agents, 8 give 1.52x, a lone agent loses nothing). Each slot holds a whole window.
LOCAL_SLOTS = 4
REMOTE_CONTEXT = 128_000  # a hosted model's window unless the config says otherwise (prompts above it are refused unsent)


def _local(name: str, tier: str, location: str, price_in: float, price_out: float, tags: tuple[str, ...]) -> ModelSpec:
    return ModelSpec(
        name=name, backend="llamacpp", tier=tier, location=location, price_in=price_in, price_out=price_out,
        context=LOCAL_CONTEXT, tags=tags, threads=_default_threads(), parallel=LOCAL_SLOTS,
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


# -- schema ------------------------------------------------------------------------------------------
# Every table of smallfleet.toml and the keys it takes, in one place: the loader validates the whole file
# against it before reading any value, so a typo is an error naming the table and key, never a silent
# default. A value is a type, a ``list[T]`` (each item checked), or ``dict``: a sub-table whose schema is
# the entry named by its path, else the parent's "*" entry ("models.*": any [models.NAME]). A "*" key
# accepts any name. float accepts an integer.
_SCHEMA: dict[str, dict[str, Any]] = {
    "": {s: dict for s in ("fleet", "models", "routing", "ledger", "server", "privacy", "guards", "grounding", "memory",
                           "verify", "knowledge", "capture", "learn", "telemetry")},
    "fleet": {"tiers": list[str], "max_escalations": int, "reference_price": list[float], "replace_builtin": bool},
    "models": {"*": dict},
    "models.*": {"backend": str, "tier": str, "path": str, "url": str, "model": str, "api_key_env": str, "api_key": str,
                 "price_in": float, "price_out": float, "context": int, "max_output": int, "tags": list[str],
                 "threads": int, "parallel": int, "timeout_s": float, "retries": int, "next_step_pass": bool,
                 "lora": list[str], "on_premises": bool},
    "routing": {k.value: dict for k in StepKind},
    "routing.*": {"start": str, "checks": list[str], "escalate": bool, "min_confidence": float},
    "ledger": {"path": str, "url": str, "run_budget_usd": float},
    # the limits are ServerLimits' fields, typed as the dataclass declares them
    "server": {"host": str, "port": int, "stream": str, "keys": str, "access_log": bool, "session_store": str,
               "allowed_hosts": list[str], "cors_origins": list[str],
               **{f.name: {"int": int, "float": float}[str(f.type)] for f in fields(ServerLimits)}},
    "privacy": {"enabled": bool, "prefer_local": bool, "entities": list[str], "threshold": float, "ner": bool, "local_pass": str,
                "rewrite": list[str], "rewrite_model": str},
    "guards": {"mode": str, "policy_file": str, "detector": bool, "trusted_tools": list[str], "datamark": bool},
    "grounding": {"index": str, "kinds": list[str], "k": int, "min_relevance": float},
    "memory": {"enabled": bool, "path": str, "model": str, "max_pinned": int, "defer": bool},
    "verify": {"judge": str, "band": list[float], "program": bool, "samples": int},
    "learn": {"routes": str, "use_routes": bool},
    "capture": {"enabled": bool, "store": str, "sample": float, "retention_days": float, "shadow": float, "queue": int},
    "knowledge": {"*": dict},
    "knowledge.*": {"path": str},
    "telemetry": {"otlp_endpoint": str},
}
_NOUNS = {"": "section", "routing": "step kind"}  # what a table's keys are called in errors


def _name(key: str) -> str:
    """A key as TOML writes it: bare when it can be, quoted otherwise ("qwen2.5-coder-0.5b" has dots)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _join(where: str, key: str) -> str:
    return f"{where}.{_name(key)}" if where else _name(key)


def _type_name(typ: Any) -> str:
    if get_origin(typ) is list:
        return f"list of {_type_name(get_args(typ)[0])}"
    return "table" if typ is dict else str(typ.__name__)


def _typed(v: Any, typ: Any, where: str) -> Any:
    """``v`` checked against ``typ`` (floats from integers, list items one by one)."""
    if get_origin(typ) is list:
        if not isinstance(v, list):
            raise ConfigError(f"{where} must be a {_type_name(typ)}, got {type(v).__name__} {v!r}.")
        item = get_args(typ)[0]
        return [_typed(x, item, f"{where}[{i}]") for i, x in enumerate(v)]
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if not isinstance(v, typ) or (isinstance(v, bool) and typ is not bool):
        raise ConfigError(f"{where} must be a {_type_name(typ)}, got {type(v).__name__} {v!r}.")
    return v


def _split_name(name: str, sub: dict[str, Any]) -> str:
    """The name a dotted [models.a.b] header was meant to have: TOML made nested tables of its parts."""
    parts = [name]
    while len(sub) == 1:
        (key, value), = sub.items()
        if not isinstance(value, dict):
            break
        parts.append(key)
        sub = value
    return ".".join(parts)


def _homes(key: str, schema: str) -> list[str]:
    """Where a misplaced key belongs: ``port`` at the top or in [fleet] is "[server] port"."""
    return [f"[{s}] {key}" for s in _SCHEMA[""] if s != schema and key in _SCHEMA.get(s, {})][:1]


def _validated(table: dict[str, Any], where: str, schema: str, source: str, parent: str = "", entry: str = "") -> dict[str, Any]:
    """``table`` (at path ``where``, the ``entry`` of ``parent``) checked against ``_SCHEMA[schema]``, recursively;
    floats normalised."""
    allowed = _SCHEMA[schema]
    unknown = [k for k in table if k not in allowed and "*" not in allowed]
    if unknown:
        split = next((k for k in unknown if isinstance(table[k], dict)), None)
        if schema.endswith(".*") and split is not None:
            # [models.qwen2.5-coder-0.5b] reads as models -> qwen2 -> 5-coder-0 -> 5b
            meant = _split_name(entry, {split: table[split]})
            raise ConfigError(f"[{where}] holds a sub-table {split!r}: TOML split the name {meant!r} at its dots.",
                              hint=f"quote a name that has dots: [{parent}.{json.dumps(meant)}]")
        noun = _NOUNS.get(schema, "key")
        label = f"[{where}]" if where else source
        keys = [k for k in allowed if k != "*"]
        guesses = [f"{m[0]} (for {k})" if len(unknown) > 1 else m[0]
                   for k in unknown if (m := _homes(k, schema) or difflib.get_close_matches(k, keys, n=1))]
        plural = "s" if len(unknown) > 1 else ""
        valid = f"valid {noun}s{f' of {label}' if where else ''}: {', '.join(keys)}"
        raise ConfigError(f"{label}: unknown {noun}{plural} {', '.join(repr(k) for k in unknown)}.",
                          hint=f"did you mean {', '.join(guesses)}? {valid}" if guesses else valid)
    out: dict[str, Any] = {}
    for key, value in table.items():
        typ = allowed.get(key, allowed.get("*"))
        path = _join(where, key)
        if typ is dict:
            if not isinstance(value, dict):
                raise ConfigError(f"{path} must be a table, got {type(value).__name__} {value!r}.",
                                  hint=f"write it as a [{path}] section" if "*" not in allowed else
                                  f"write each entry as a [{_join(where, 'NAME')}] section")
            sub = f"{schema}.{key}" if schema else key
            out[key] = _validated(value, path, sub if sub in _SCHEMA else f"{schema}.*", source, where, key)
        else:
            out[key] = _typed(value, typ, path)
    return out


_LIMIT_KEYS = tuple(f.name for f in fields(ServerLimits))


def _parse_model(name: str, d: dict[str, Any], tiers: tuple[str, ...]) -> ModelSpec:
    where = _join("models", name)
    backend = d.get("backend", "llamacpp")
    if backend not in BACKENDS:
        raise ConfigError(f"{where}.backend = {backend!r} is not one of {', '.join(BACKENDS)}.")
    tier = d.get("tier")
    if tier is None:
        raise ConfigError(f"{where}.tier is missing.", hint=f"set tier to one of: {', '.join(tiers)}")
    if tier not in tiers:
        raise ConfigError(f"{where}.tier = {tier!r} is not one of the fleet tiers {list(tiers)}.")
    if backend == "llamacpp":
        location = d.get("path")
        if not location:
            raise ConfigError(f"{where}.path is missing: a GGUF file path or package:NAME.")
    else:
        location = d.get("url")
        if not location or not location.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url must be an http(s) base URL, got {location!r}.")
    spec = ModelSpec(
        name=name, backend=backend, tier=tier, location=location,
        remote_model=d.get("model", name), api_key_env=d.get("api_key_env", ""), api_key=d.get("api_key", ""),
        price_in=d.get("price_in", 0.0), price_out=d.get("price_out", 0.0),
        context=d.get("context", LOCAL_CONTEXT if backend == "llamacpp" else REMOTE_CONTEXT), max_output=d.get("max_output", 1024),
        tags=tuple(d.get("tags", [])), threads=d.get("threads", 0) or _default_threads(),
        parallel=d.get("parallel", LOCAL_SLOTS if backend == "llamacpp" else 1), timeout_s=d.get("timeout_s", 120.0),
        retries=d.get("retries", 2), next_step_pass=d.get("next_step_pass", True),
        lora=tuple(str(Path(x).expanduser()) for x in d.get("lora", [])), on_premises=d.get("on_premises", False),
    )
    if spec.lora and backend != "llamacpp":
        raise ConfigError(f"{where}.lora: LoRA adapters are for embedded (llamacpp) models only.")
    if spec.price_in < 0 or spec.price_out < 0:
        raise ConfigError(f"{where}: prices must not be negative.")
    if spec.context < 256:
        raise ConfigError(f"{where}.context = {spec.context} is too small (at least 256).")
    if spec.parallel < 1 or spec.threads < 1:
        raise ConfigError(f"{where}: threads and parallel must be at least 1.")
    return spec


def _merge_fleet(builtin: dict[str, ModelSpec], user: dict[str, ModelSpec], tiers: tuple[str, ...]) -> dict[str, ModelSpec]:
    """The user's models, in their order, plus the built-ins they leave standing: a user model of the same name, or
    on the same tier (a tier has one model), replaces a built-in. Built-ins on tiers the file's [fleet] tiers leave
    out are dropped, so a custom tier list with its own models gets no stray built-in."""
    user_tiers = {m.tier for m in user.values()}
    out = list(user.values())
    for name, m in builtin.items():
        if name in user or m.tier in user_tiers or m.tier not in tiers:
            continue
        # listed in tier order: before the first user model of a dearer tier
        rank = tiers.index(m.tier)
        out.insert(next((i for i, u in enumerate(out) if tiers.index(u.tier) > rank), len(out)), m)
    return {m.name: m for m in out}


def _parse_routing(d: dict[str, Any], tiers: tuple[str, ...]) -> dict[StepKind, KindPolicy]:
    routing = dict(DEFAULT_ROUTING)
    for kind_name, pol in d.items():
        kind = StepKind(kind_name)  # the schema admits step kinds only
        where = _join("routing", kind_name)
        base = routing[kind]
        start = pol.get("start", base.start)
        if start not in tiers:
            raise ConfigError(f"{where}.start = {start!r} is not one of the tiers {list(tiers)}.")
        checks = tuple(pol.get("checks", base.checks))
        bad = [c for c in checks if c not in registered_checks()]
        if bad:
            raise ConfigError(f"{where}.checks: unknown check(s) {bad}.", hint=f"known: {', '.join(registered_checks())}")
        conf = pol.get("min_confidence", base.min_confidence)
        if not 0.0 <= conf <= 1.0:
            raise ConfigError(f"{where}.min_confidence must be between 0 and 1.")
        routing[kind] = KindPolicy(start, checks, pol.get("escalate", base.escalate), conf)
    return routing


def _env_onoff(env: dict[str, str], name: str, default: bool) -> bool:
    """An on/off switch from the environment, overriding the file's value."""
    flag = env.get(name, "").lower()
    if not flag:
        return default
    if flag not in ("on", "off"):
        raise ConfigError(f"{name}={flag!r}: use on or off.")
    return flag == "on"


def _parse_privacy(d: dict[str, Any], env: dict[str, str], models: dict[str, ModelSpec],
                   tiers: tuple[str, ...]) -> PrivacySettings:
    from .privacy.entities import ENTITY_TYPES

    entities = tuple(d.get("entities", []))
    bad = [e for e in entities if e not in ENTITY_TYPES]
    if bad:
        raise ConfigError(f"privacy.entities: unknown type(s) {bad}.", hint=f"known: {', '.join(ENTITY_TYPES)}")
    threshold = d.get("threshold", 0.5)
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError("privacy.threshold must be between 0 and 1.")
    enabled = _env_onoff(env, "SMALLFLEET_PRIVACY", d.get("enabled", True))
    local_pass = _local_model("privacy.local_pass", env.get("SMALLFLEET_PRIVACY_LOCAL_PASS", d.get("local_pass", "")),
                              models, tiers)
    raw = env.get("SMALLFLEET_PRIVACY_REWRITE")
    rewrite = tuple(k.strip() for k in raw.split(",") if k.strip()) if raw is not None else tuple(d.get("rewrite", []))

    kinds = {k.value for k in StepKind}
    if set(rewrite) - kinds:
        raise ConfigError(f"privacy.rewrite: unknown step kind(s) {sorted(set(rewrite) - kinds)}.",
                          hint=f"kinds: {', '.join(sorted(kinds))} (text steps; tool and JSON steps keep placeholders)")
    rewrite_model = ""
    if rewrite:  # default: the local pass's model, else the first local tier's
        first_local = next((m.name for t in tiers for m in models.values() if m.tier == t and m.private), "")
        rewrite_model = _local_model("privacy.rewrite_model", d.get("rewrite_model", "") or local_pass or first_local,
                                     models, tiers)
        if not rewrite_model:
            raise ConfigError("privacy.rewrite needs a local model to rewrite with; this fleet has none.",
                              hint="add an embedded model, or set privacy.rewrite_model")
    return PrivacySettings(enabled=enabled, prefer_local=d.get("prefer_local", True), entities=entities,
                           threshold=threshold, ner=d.get("ner", True), local_pass=local_pass, rewrite=rewrite,
                           rewrite_model=rewrite_model)


def _local_model(setting: str, name: str, models: dict[str, ModelSpec], tiers: tuple[str, ...]) -> str:
    """The model a setting names (by model or tier), which must run on this machine: it reads the raw text."""
    name = name.strip()
    if name.lower() in ("", "off", "none"):
        return ""
    spec = models.get(name) or next((m for m in models.values() if m.tier == name), None)
    if spec is None:
        raise ConfigError(f"{setting}: {name!r} is neither a model nor a tier of this fleet.",
                          hint=f"models: {', '.join(models)}; tiers: {', '.join(tiers)}")
    if not spec.private:
        raise ConfigError(f"{setting}: {name!r} ({spec.name}) is not a local model; it reads the raw text, so it must "
                          "run on this machine.", hint="name an embedded (llamacpp) model or one marked on_premises = true")
    return spec.name


def _parse_guards(d: dict[str, Any], env: dict[str, str]) -> GuardSettings:
    mode = env.get("SMALLFLEET_GUARD") or d.get("mode", "block")
    if mode not in GUARD_MODES:
        raise ConfigError(f"guard mode {mode!r}: use one of {', '.join(GUARD_MODES)}.", hint="guards.mode or SMALLFLEET_GUARD")
    pf = env.get("SMALLFLEET_POLICY") or d.get("policy_file", "")
    policy_file = Path(pf).expanduser() if pf else None
    if policy_file is not None and not policy_file.is_file():
        raise ConfigError(f"policy file {policy_file} does not exist.", hint="fix guards.policy_file or SMALLFLEET_POLICY")
    return GuardSettings(mode=mode, policy_file=policy_file, detector=d.get("detector", True),
                         trusted_tools=tuple(d.get("trusted_tools", [])), datamark=d.get("datamark", False))


def _parse_grounding(d: dict[str, Any], env: dict[str, str]) -> GroundingSettings:
    kinds = tuple(d.get("kinds", []))
    bad = [k for k in kinds if k not in {s.value for s in StepKind}]
    if bad:
        raise ConfigError(f"grounding.kinds: unknown step kind(s) {bad}.", hint=f"known: {', '.join(s.value for s in StepKind)}")
    k = d.get("k", 4)
    if not 1 <= k <= 20:
        raise ConfigError("grounding.k must be between 1 and 20.")
    rel = d.get("min_relevance", 0.35)
    if not 0.0 <= rel <= 1.0:
        raise ConfigError("grounding.min_relevance must be between 0 and 1.")
    idx = env.get("SMALLFLEET_INDEX") or d.get("index", "")
    return GroundingSettings(index=Path(idx).expanduser() if idx else None, kinds=kinds, k=k, min_relevance=rel)


def _parse_memory(d: dict[str, Any], env: dict[str, str], database_url: str | None = None) -> MemorySettings:
    enabled = _env_onoff(env, "SMALLFLEET_MEMORY", d.get("enabled", True))
    n = d.get("max_pinned", 12)
    if not 1 <= n <= 100:
        raise ConfigError("memory.max_pinned must be between 1 and 100.")
    path = d.get("path", "")
    return MemorySettings(enabled=enabled, path=Path(path).expanduser() if path else None, model=d.get("model", ""),
                          max_pinned=n, defer=d.get("defer", True), key=env.get("SMALLFLEET_MEMORY_KEY") or None,
                          url=database_url if not path else None)


def _parse_capture(d: dict[str, Any], env: dict[str, str], database_url: str | None = None) -> CaptureSettings:
    enabled = _env_onoff(env, "SMALLFLEET_CAPTURE", d.get("enabled", False))
    for key, default in (("sample", 1.0), ("shadow", 0.0)):
        if not 0.0 <= d.get(key, default) <= 1.0:
            raise ConfigError(f"capture.{key} must be between 0 and 1 (a share of steps).")
    if not 0 < d.get("retention_days", 30.0) <= 36500:
        raise ConfigError("capture.retention_days must be between 0 (exclusive) and 36500.")
    if not 1 <= d.get("queue", 1000) <= 1_000_000:
        raise ConfigError("capture.queue must be between 1 and 1000000.")
    store = env.get("SMALLFLEET_TRACES") or d.get("store", "")
    url = store if store.startswith(("postgresql://", "postgres://")) else (database_url if not store else None)
    return CaptureSettings(enabled=enabled, store=Path(store).expanduser() if store and not url else None,
                           sample=d.get("sample", 1.0), retention_days=d.get("retention_days", 30.0), shadow=d.get("shadow", 0.0),
                           queue=d.get("queue", 1000), key=env.get("SMALLFLEET_CAPTURE_KEY") or None, url=url)


def _parse_limits(server: dict[str, Any]) -> ServerLimits:
    vals = {key: server[key] for key in _LIMIT_KEYS if key in server}
    for key, v in vals.items():
        if v <= 0:
            raise ConfigError(f"server.{key} must be positive.")
    return ServerLimits(**vals)


def _parse_knowledge(d: dict[str, Any]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for name, entry in d.items():
        path = entry.get("path", "")
        if not path:
            raise ConfigError(f"{_join('knowledge', name)}.path is missing.",
                              hint="the knowledge-base file built by `smallfleet index add`")
        out[name] = Path(path).expanduser()
    return out


def _parse_verify(d: dict[str, Any], env: dict[str, str], models: dict[str, ModelSpec], tiers: tuple[str, ...]) -> VerifySettings:
    judge = env.get("SMALLFLEET_JUDGE", d.get("judge", "")).strip()
    if judge.lower() in ("off", "none"):
        judge = ""
    if judge and judge not in models and judge not in tiers:
        raise ConfigError(f"verify.judge: {judge!r} is neither a model nor a tier of this fleet.",
                          hint=f"models: {', '.join(models)}; tiers: {', '.join(tiers)}; or \"\" for no judge")
    band = d.get("band", [0.3, 0.6])
    if len(band) != 2 or not 0 <= band[0] <= band[1] <= 1:
        raise ConfigError("verify.band must be [LOW, HIGH] with 0 <= LOW <= HIGH <= 1.",
                          hint="process-check scores inside it go to the judge, e.g. [0.3, 0.6]")
    program = _env_onoff(env, "SMALLFLEET_PROGRAM_CHECK", d.get("program", False))
    raw = env.get("SMALLFLEET_REASONING_SAMPLES", d.get("samples", 3))
    try:
        samples = int(raw)
    except (TypeError, ValueError):
        samples = -1
    if not 0 <= samples <= 16:
        raise ConfigError(f"verify.samples must be a whole number from 0 to 16, not {raw!r}.",
                          hint="3 samples are drawn only when the reasoning score is undecided; 0 never samples")
    return VerifySettings(judge=judge, band=(band[0], band[1]), program=program, samples=samples)


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Load and validate the fleet configuration (see module doc for the precedence)."""
    env = dict(os.environ) if env is None else env
    raw: dict[str, Any] = {}
    source = "built-in defaults"
    path = path or env.get("SMALLFLEET_CONFIG") or ("smallfleet.toml" if Path("smallfleet.toml").is_file() else None)
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist.", hint="check --config or SMALLFLEET_CONFIG")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {p} is not valid TOML: {e}.") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {p} is not UTF-8 text.") from None
        source = str(p)
    data = _validated(raw, "", "", source)
    fleet = data.get("fleet", {})
    tiers = tuple(fleet.get("tiers", ["small", "large", "frontier"]))
    if len(tiers) < 1 or len(set(tiers)) != len(tiers):
        raise ConfigError("fleet.tiers must be a non-empty list of distinct names, cheapest first.")

    models = default_models()
    if "models" in data:
        if not data["models"]:
            raise ConfigError("models must be a non-empty table of [models.NAME] entries.")
        user = {name: _parse_model(name, d, tiers) for name, d in data["models"].items()}
        models = user if fleet.get("replace_builtin", False) else _merge_fleet(models, user, tiers)
    elif fleet.get("replace_builtin", False):
        raise ConfigError("fleet.replace_builtin = true, but there are no [models.NAME] entries to replace the built-in fleet with.",
                          hint="add [models.NAME] sections, or drop replace_builtin")
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

    routing = _parse_routing(data.get("routing", {}), tiers)
    ref_in, ref_out = _parse_price(",".join(str(x) for x in fleet.get("reference_price", [2.5, 10.0])))
    ledger = data.get("ledger", {})
    server = data.get("server", {})
    # a project with a config file keeps its own ledger beside it: runs of other projects stay out of its reports
    project_dir = Path(source).expanduser().resolve().parent / ".smallfleet" if path else default_data_dir()
    ledger_path = Path(env.get("SMALLFLEET_LEDGER") or ledger.get("path", "") or project_dir / "ledger.db").expanduser()
    database_url = (env.get("SMALLFLEET_DATABASE_URL") or ledger.get("url", "") or "").strip() or None
    if database_url is not None and not database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("the ledger's database URL must start with postgresql://.",
                          hint="[ledger] url or SMALLFLEET_DATABASE_URL, e.g. postgresql://smallfleet@db:5432/smallfleet")
    try:
        port = int(env.get("SMALLFLEET_PORT") or server.get("port", 8088))
    except ValueError:
        raise ConfigError(f"SMALLFLEET_PORT={env.get('SMALLFLEET_PORT')!r} is not a port number.") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} is out of range.")
    budget_txt = env.get("SMALLFLEET_RUN_BUDGET")
    budget = ledger.get("run_budget_usd")
    if budget_txt:
        try:
            budget = float(budget_txt)
        except ValueError:
            raise ConfigError(f"SMALLFLEET_RUN_BUDGET={budget_txt!r} is not a number.") from None
    if budget is not None and not (0 <= budget < float("inf")):
        raise ConfigError(f"run budget {budget!r} must be a finite, non-negative number of USD.",
                          hint="ledger.run_budget_usd or SMALLFLEET_RUN_BUDGET")
    keys = env.get("SMALLFLEET_KEYS") or server.get("keys", "")
    stream_mode = env.get("SMALLFLEET_STREAM") or server.get("stream", "verified")
    if stream_mode not in ("verified", "live"):
        raise ConfigError(f"stream mode {stream_mode!r}: use 'verified' or 'live'.")
    privacy = _parse_privacy(data.get("privacy", {}), env, models, tiers)
    guards = _parse_guards(data.get("guards", {}), env)
    grounding = _parse_grounding(data.get("grounding", {}), env)
    memory = _parse_memory(data.get("memory", {}), env, database_url)
    capture = _parse_capture(data.get("capture", {}), env, database_url)
    learn = data.get("learn", {})
    routes = env.get("SMALLFLEET_ROUTES") or learn.get("routes", "")
    learned = LearnSettings(routes=Path(routes).expanduser() if routes else None, use_routes=learn.get("use_routes", True))
    verify = _parse_verify(data.get("verify", {}), env, models, tiers)
    max_esc = fleet.get("max_escalations", min(2, len(tiers)))  # a one-tier fleet has nothing to escalate to
    if max_esc < 0 or max_esc > len(tiers):
        raise ConfigError(f"fleet.max_escalations must be between 0 and {len(tiers)}.")
    return Config(
        models=models, tiers=tiers, routing=routing, max_escalations=max_esc,
        reference_price_in=ref_in, reference_price_out=ref_out, ledger_path=ledger_path, database_url=database_url,
        host=env.get("SMALLFLEET_HOST") or server.get("host", "127.0.0.1"), port=port,
        run_budget_usd=budget, stream_mode=stream_mode, access_log=_env_onoff(env, "SMALLFLEET_ACCESS_LOG", server.get("access_log", True)),
        privacy=privacy, guards=guards, grounding=grounding, memory=memory, verify=verify,
        capture=capture, learn=learned,
        limits=_parse_limits(server), keys_path=Path(keys).expanduser() if keys else None,
        knowledge=_parse_knowledge(data.get("knowledge", {})), source=source,
        session_store=_session_store(env.get("SMALLFLEET_SESSION_STORE") or server.get("session_store") or database_url),
        session_key=env.get("SMALLFLEET_SESSION_KEY") or None,
        allowed_hosts=tuple(h.strip().lower() for h in (env["SMALLFLEET_ALLOWED_HOSTS"].split(",") if env.get("SMALLFLEET_ALLOWED_HOSTS")
                                                         else server.get("allowed_hosts", [])) if h.strip()),
        cors_origins=_cors(env.get("SMALLFLEET_CORS_ORIGINS"), server.get("cors_origins", [])),
        otlp_endpoint=_otlp(env.get("SMALLFLEET_OTLP_ENDPOINT") or data.get("telemetry", {}).get("otlp_endpoint") or None),
    )


def _cors(env_value: str | None, listed: list[str]) -> tuple[str, ...]:
    origins = [o.strip() for o in (env_value.split(",") if env_value is not None else listed) if o.strip()]
    for o in origins:
        if o != "*" and (not o.startswith(("http://", "https://")) or o.count("/") != 2 or len(o) > 200):
            raise ConfigError(f"CORS origin {o[:200]!r} is not an origin.",
                              hint="[server] cors_origins / SMALLFLEET_CORS_ORIGINS: scheme://host[:port] with no path, e.g. "
                                   "http://localhost:3000, or \"*\" for any")
    return tuple(o.rstrip("/") for o in origins)


def _otlp(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ConfigError(f"telemetry.otlp_endpoint {value!r} must be an http(s) URL.",
                          hint="[telemetry] otlp_endpoint or SMALLFLEET_OTLP_ENDPOINT, e.g. http://collector:4318")
    return value


def _session_store(value: str | None) -> str | None:
    if not value:
        return None
    return value if value.startswith(("postgresql://", "postgres://")) else str(Path(value).expanduser())
