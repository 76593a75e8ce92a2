"""Tool policies: allow, deny or ask for confirmation, per proposed call, with a reason a human can read.

Tools are declared with *capabilities* (what a call can do to the world) and their arguments with
*roles* (what the value decides). Unknown tools and arguments get defaults guessed from their names,
so nothing goes unchecked. The rules are general, per capability and role, never per task:

1. **Who/where is chosen by the user, not by content** (Rule of Two): an argument that decides where
   data, money or access goes (``destination``), what gets changed or deleted (``target``) or when
   (``when``) must not be traceable only to untrusted free text. Destinations and targets must come
   from the user (trusted) or from a structured record a tool returned; a value named by text the
   injection detector flagged is never taken from a record.
2. **Secrets come from the user**: a new password or key (``secret``) must appear in trusted content.
3. **No smuggled identifiers**: outbound content (``content`` of a call that sends outside) must not
   carry a link, e-mail address, IBAN or phone number found only in untrusted text.
4. **Private data stays in**: values from tools declared ``confidential`` (user profile, passport,
   card numbers) must not flow into outbound content unless the user wrote them.
5. **Deleting and changing credentials need the user's intent**: the user's own request must ask
   for it (plan-then-execute: the grant comes from trusted text read before any tool output).
6. **Look-alike values are never allowed**: invisible characters or mixed-script words in a
   consequential argument are denied.
Reading is always allowed; fetching a URL (``fetch``) is a read that can leak through the address, so
it needs a destination that is not only in flagged text.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import orjson

from ..errors import ConfigError
from .trust import Context, Evidence, Label, has_tricks, norm, provenance


class Capability(str, Enum):
    READ = "read"                  # no side effect
    FETCH = "fetch"                # a read whose address goes outside (web fetch)
    WRITES = "writes"              # changes the user's own data (files, calendar, drafts)
    SENDS_OUTSIDE = "sends_outside"  # e-mail, messages, posts, shares, invites
    MOVES_MONEY = "moves_money"    # payments, transfers, bookings that charge
    DELETES = "deletes"
    CREDENTIALS = "credentials"    # passwords, keys, account security


class Role(str, Enum):
    DESTINATION = "destination"
    TARGET = "target"
    WHEN = "when"
    SECRET = "secret"
    AMOUNT = "amount"
    CONTENT = "content"
    OTHER = "other"


class Action(str, Enum):
    ALLOW = "allow"
    DENY = "deny"
    CONFIRM = "confirm"


CONSEQUENTIAL = {Capability.WRITES, Capability.SENDS_OUTSIDE, Capability.MOVES_MONEY, Capability.DELETES,
                 Capability.CREDENTIALS}

# -- defaults from names: conservative, so an unknown tool is treated as able to do harm --------------
_NAME_CAPS: list[tuple[re.Pattern[str], set[Capability]]] = [
    (re.compile(r"(?:^|_)(?:get|fetch|browse|visit|open|download)_?(?:web|url|page|site|link)|^(?:browse|visit|fetch_url|http_get)"),
     {Capability.FETCH}),
    (re.compile(r"^(?:get|list|search|read|find|check|lookup|look_up|query|show|view|count|describe|fetch)(?:_|$)"), {Capability.READ}),
    (re.compile(r"password|credential|api_?key|token|2fa|mfa"), {Capability.CREDENTIALS}),
    (re.compile(r"send_money|transfer|pay|transaction|wire|purchase|buy|order|reserve|book(?!mark)|checkout|refund"),
     {Capability.MOVES_MONEY}),
    (re.compile(r"delete|remove|cancel|drop|purge|erase|revoke|unsubscribe"), {Capability.DELETES}),
    (re.compile(r"send|email|mail|message|post(?!al)|share|invite|publish|tweet|reply|forward|notify|sms|upload|webhook"),
     {Capability.SENDS_OUTSIDE}),
    (re.compile(r"create|update|add|append|write|set|edit|modify|move|rename|schedule|reschedule|insert|save|put|patch"),
     {Capability.WRITES}),
]
_ROLE_NAMES: list[tuple[re.Pattern[str], Role]] = [
    (re.compile(r"password|secret|api_?key|token|pin$|passphrase"), Role.SECRET),
    (re.compile(r"recipient|^to$|^cc$|^bcc$|email|address_to|participant|attendee|invitee|url|link|webhook|channel|"
                r"^user$|username|user_email|iban|account|phone|number_to|destination|^dest|payee|beneficiar|hotel|"
                r"restaurant|company|^share_with|^with$"), Role.DESTINATION),
    (re.compile(r"(?:^|_)ids?$|file_?id|event_?id|email_?id|^name$|filename|path|^key$"), Role.TARGET),
    (re.compile(r"date|time|^day|start|end|when|deadline|^at$"), Role.WHEN),
    (re.compile(r"amount|price|sum|total|quantity|value"), Role.AMOUNT),
    (re.compile(r"body|content|text|message|subject|title|description|note|comment|summary|query"), Role.CONTENT),
]


def guess_capabilities(name: str) -> set[Capability]:
    n = name.casefold()
    for pat, caps in _NAME_CAPS:
        if pat.search(n):
            return set(caps)
    return {Capability.WRITES}  # unknown verb: assume it changes something


def guess_role(arg: str) -> Role:
    a = arg.casefold()
    for pat, role in _ROLE_NAMES:
        if pat.search(a):
            return role
    return Role.OTHER


@dataclass
class ToolSpec:
    name: str
    capabilities: set[Capability]
    roles: dict[str, Role] = field(default_factory=dict)
    trusted_output: bool = False     # its results are trusted content (e.g. your own database)
    confidential_output: bool = False  # its results are private data that must not leave
    allow: dict[str, list[str]] = field(default_factory=dict)  # per-argument allowlists (normalised)
    declared: bool = False

    def role(self, arg: str) -> Role:
        return self.roles.get(arg) or guess_role(arg)


@dataclass(frozen=True)
class Decision:
    action: Action
    tool: str
    reason: str
    rule: str = ""
    argument: str | None = None
    evidence: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.action == Action.ALLOW

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action.value, "tool": self.tool, "reason": self.reason, "rule": self.rule,
                "argument": self.argument, "evidence": list(self.evidence)}


# the user's own words must ask for these (rule 5); a grant covers the whole conversation
_INTENT: dict[Capability, re.Pattern[str]] = {
    Capability.DELETES: re.compile(r"\b(delet\w*|remov\w*|cancel\w*|get rid of|clean\w* up|eras\w*|trash\w*|purg\w*|drop)\b"),
    Capability.CREDENTIALS: re.compile(r"\b(password|passphrase|credential\w*|api key|security|2fa|mfa|pin)\b"),
}
_IDENT = re.compile(r"(?:https?://)?(?:www\.)?[\w-]+(?:\.[\w-]+)+(?:/[^\s'\"<>]*)?|[\w.+-]+@[\w-]+(?:\.[\w-]+)+|"
                    r"\b[A-Z]{2}\d{2}[A-Z0-9]{10,30}\b|\+?\d[\d ()-]{7,}\d")
_WEBLIKE = re.compile(r"@|\b(?:www\.|https?://)|\.(?:com|org|net|io|co|info|biz|ru|xyz|de|uk|fr|app|dev)\b")


def _identifiers(text: str) -> list[str]:
    out = []
    for m in _IDENT.finditer(text):
        s = m.group(0).rstrip(".,;:!?)")
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?|[\d.,]+", s):
            continue  # dates and plain numbers are not addresses
        if "@" in s or _WEBLIKE.search(s) or re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}", s) or sum(c.isdigit() for c in s) >= 8:
            out.append(s)
    return out


def _scalars(v: Any) -> Iterable[Any]:
    if isinstance(v, dict):
        for x in v.values():
            yield from _scalars(x)
    elif isinstance(v, (list, tuple)):
        for x in v:
            yield from _scalars(x)
    elif v is not None and not isinstance(v, bool):
        yield v


def _flat(v: Any) -> str:
    return " ".join(str(x) for x in _scalars(v))


class PolicyEngine:
    """Decides each proposed tool call against the labelled conversation."""

    def __init__(self, tools: dict[str, ToolSpec] | None = None, *, require_intent: Iterable[Capability] = (
            Capability.DELETES, Capability.CREDENTIALS), unknown: Action = Action.ALLOW) -> None:
        self.tools = dict(tools or {})
        self.require_intent = set(require_intent)
        self.unknown = unknown  # what to do with a tool nobody declared (its capabilities are guessed)

    # -- declarations --------------------------------------------------------------------------------
    def spec(self, name: str) -> ToolSpec:
        """The declared spec, else one guessed from the name (not stored: clients may send any names)."""
        return self.tools.get(name) or ToolSpec(name, guess_capabilities(name))

    def declare(self, name: str, **kw: Any) -> ToolSpec:
        s = self.tools.get(name) or ToolSpec(name, kw.pop("capabilities", None) or guess_capabilities(name), declared=True)
        for k, v in kw.items():
            setattr(s, k, v)
        self.tools[name] = s
        return s

    @property
    def trusted_tools(self) -> set[str]:
        return {n for n, s in self.tools.items() if s.trusted_output}

    @property
    def confidential_tools(self) -> set[str]:
        return {n for n, s in self.tools.items() if s.confidential_output}

    @classmethod
    def from_file(cls, path: str | Path) -> PolicyEngine:
        p = Path(path).expanduser()
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"policy file {p} does not exist.", hint="check the path, or drop the option to use defaults") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"policy file {p} is not valid TOML: {e}", hint="see README 'Tool policies' for the format") from None
        return cls.from_dict(data, where=str(p))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "policy") -> PolicyEngine:
        """``[tools.NAME] capabilities = [...], roles = {arg = role}, trusted_output, confidential_output, allow = {arg = [...]}``."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a table at the top level.")
        unknown_keys = set(data) - {"tools", "require_intent", "unknown_tools"}
        if unknown_keys:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown_keys)}.", hint="allowed: tools, require_intent, unknown_tools")
        tools: dict[str, ToolSpec] = {}
        raw_tools = data.get("tools", {})
        if not isinstance(raw_tools, dict):
            raise ConfigError(f"{where}: 'tools' must be a table of [tools.NAME] sections.")
        for name, t in raw_tools.items():
            if not isinstance(t, dict):
                raise ConfigError(f"{where}: tools.{name} must be a table.")
            bad = set(t) - {"capabilities", "roles", "trusted_output", "confidential_output", "allow"}
            if bad:
                raise ConfigError(f"{where}: tools.{name} has unknown key(s) {sorted(bad)}.",
                                  hint="allowed: capabilities, roles, trusted_output, confidential_output, allow")
            caps = t.get("capabilities")
            if caps is None:
                capset = guess_capabilities(name)
            else:
                if not isinstance(caps, list) or not caps:
                    raise ConfigError(f"{where}: tools.{name}.capabilities must be a non-empty list.")
                capset = {cls._enum(Capability, c, f"{where}: tools.{name}.capabilities") for c in caps}
            roles_raw = t.get("roles", {})
            if not isinstance(roles_raw, dict):
                raise ConfigError(f"{where}: tools.{name}.roles must be a table of argument = role.")
            roles = {str(a): cls._enum(Role, r, f"{where}: tools.{name}.roles.{a}") for a, r in roles_raw.items()}
            allow = t.get("allow", {})
            if not isinstance(allow, dict) or not all(isinstance(v, list) for v in allow.values()):
                raise ConfigError(f"{where}: tools.{name}.allow must be a table of argument = [allowed values].")
            for flag in ("trusted_output", "confidential_output"):
                if not isinstance(t.get(flag, False), bool):
                    raise ConfigError(f"{where}: tools.{name}.{flag} must be true or false.")
            tools[name] = ToolSpec(name, capset, roles, bool(t.get("trusted_output", False)),
                                   bool(t.get("confidential_output", False)),
                                   {a: [norm(str(x)) for x in v] for a, v in allow.items()}, declared=True)
        req = data.get("require_intent", [c.value for c in (Capability.DELETES, Capability.CREDENTIALS)])
        if not isinstance(req, list):
            raise ConfigError(f"{where}: require_intent must be a list of capabilities.")
        unk = data.get("unknown_tools", "allow")
        return cls(tools, require_intent={cls._enum(Capability, c, f"{where}: require_intent") for c in req},
                   unknown=cls._enum(Action, unk, f"{where}: unknown_tools"))

    @staticmethod
    def _enum(kind: Any, value: Any, where: str) -> Any:
        try:
            return kind(str(value))
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(m.value for m in kind)}.") from None

    # -- decisions -----------------------------------------------------------------------------------
    def context(self, messages: list[dict[str, Any]], detector: Any = None) -> Context:
        return Context.from_messages(messages, trusted_tools=self.trusted_tools,
                                     confidential_tools=self.confidential_tools, detector=detector)

    def decide(self, tool: str, args: Any, ctx: Context) -> Decision:
        spec = self.spec(tool)
        if not isinstance(args, dict):
            return Decision(Action.DENY, tool, "the call's arguments are not a JSON object", "malformed")
        caps = spec.capabilities
        if not spec.declared and self.unknown != Action.ALLOW and caps & CONSEQUENTIAL:
            return Decision(self.unknown, tool, f"{tool} is not declared and looks like it can {', '.join(sorted(c.value for c in caps))}",
                            "unknown_tool")
        if not caps & (CONSEQUENTIAL | {Capability.FETCH}):
            return Decision(Action.ALLOW, tool, "read-only", "read")
        request = norm(ctx.request)
        for cap in caps & self.require_intent:
            pat = _INTENT.get(cap)
            if pat is not None and not pat.search(request):
                return Decision(Action.DENY, tool, f"{tool} can {cap.value.replace('_', ' ')}, and the user's request does not ask for that",
                                "intent")
        outbound = bool(caps & {Capability.SENDS_OUTSIDE, Capability.MOVES_MONEY, Capability.FETCH})
        for arg, value in args.items():
            role = spec.role(arg)
            allowed = spec.allow.get(arg)
            for item in _scalars(value):
                text = str(item)
                if allowed is not None and role != Role.CONTENT and norm(text) not in allowed:
                    return Decision(Action.DENY, tool, f"{arg}={text[:60]!r} is not on the allowlist for {tool}", "allowlist", arg)
                if role in (Role.DESTINATION, Role.TARGET, Role.SECRET, Role.WHEN):
                    trick = has_tricks(text)
                    if trick:
                        return Decision(Action.DENY, tool, f"{arg}={text[:60]!r} {trick}", "lookalike", arg)
                d = self._check_value(tool, caps, arg, role, item, ctx)
                if d is not None:
                    return d
            if role in (Role.CONTENT, Role.OTHER) and caps & CONSEQUENTIAL and ctx.flagged:
                d = self._check_copied(tool, arg, value, ctx)
                if d is not None:
                    return d
            if outbound and role in (Role.CONTENT, Role.OTHER, Role.AMOUNT):
                d = self._check_outbound_content(tool, arg, value, ctx)
                if d is not None:
                    return d
        return Decision(Action.ALLOW, tool, "every consequential argument traces to the user or a record", "provenance")

    def _check_value(self, tool: str, caps: set[Capability], arg: str, role: Role, value: Any, ctx: Context) -> Decision | None:
        text = str(value)
        if role == Role.SECRET and caps & CONSEQUENTIAL:
            ev = provenance(value, ctx)
            if ev.label != Label.TRUSTED:
                return Decision(Action.DENY, tool, f"{arg}: a new secret must be typed by the user, and this one "
                                f"{'comes from ' + _where(ev) if ev.found else 'appears nowhere in the request'}", "secret", arg,
                                ev.sources)
            return None
        if role not in (Role.DESTINATION, Role.TARGET, Role.WHEN) or not text.strip():
            return None
        if Capability.FETCH in caps and not caps & CONSEQUENTIAL:
            ev = provenance(value, ctx)
            if ev.label is not None and ev.label <= Label.SUSPICIOUS:
                return Decision(Action.DENY, tool, f"{arg}={text[:60]!r} appears only in text flagged as an injection ({_where(ev)})",
                                "fetch_flagged", arg, ev.sources)
            return None
        ev = provenance(value, ctx)
        if ev.label is None:
            if role == Role.DESTINATION and caps & {Capability.SENDS_OUTSIDE, Capability.MOVES_MONEY}:
                return Decision(Action.CONFIRM, tool, f"{arg}={text[:60]!r} appears nowhere in the conversation (the model invented it)",
                                "invented_destination", arg)
            return None  # an invented time or target is the model's own choice, not content steering it
        if ev.label == Label.TRUSTED:
            return None
        if (ev.label == Label.RECORD and role == Role.DESTINATION and Capability.MOVES_MONEY in caps
                and ctx.flagged):
            # injected instructions are in view: money goes only to payees the user named
            return Decision(Action.CONFIRM, tool, f"{arg}={text[:60]!r} comes from a record, not the user, and this conversation "
                            f"contains text flagged as an injection ({ctx.flagged[0].source})", "flagged_context_payee", arg,
                            ev.sources)
        if ev.label == Label.RECORD and role in (Role.DESTINATION, Role.TARGET):
            if role == Role.TARGET and _named_in(text, [s for s in ctx.flagged if s.source in ev.suspicious]):
                # "delete the file with ID '13'" in injected text must not pick the file
                return Decision(Action.DENY, tool, f"{arg}={text[:60]!r} is named by text flagged as an injection ({ev.suspicious[0]})",
                                "named_by_injection", arg, ev.sources)
            return None
        if ev.label == Label.RECORD:
            return None
        if role == Role.WHEN and Capability.MOVES_MONEY not in caps and ev.label > Label.SUSPICIOUS:
            return None  # a date from a mail or document is normal for private writes; only money waits for the user's dates
        return Decision(Action.DENY, tool, f"{arg}={text[:60]!r} appears only in untrusted content ({_where(ev)}), "
                        f"not in the user's request or a record", f"untrusted_{role.value}", arg, ev.sources)

    def _check_copied(self, tool: str, arg: str, value: Any, ctx: Context) -> Decision | None:
        """Text copied word for word from flagged injected content must not be written anywhere."""
        trusted = norm(ctx.trusted_text())
        for item in _scalars(value):
            v = norm(str(item))
            if len(v) < 12 or len(v.split()) < 2 or v in trusted:
                continue
            for seg in ctx.flagged:
                if v in seg.normed:
                    return Decision(Action.DENY, tool, f"{arg} copies text from content flagged as an injection ({seg.source})",
                                    "copied_from_injection", arg, (seg.source,))
        return None

    def _check_outbound_content(self, tool: str, arg: str, value: Any, ctx: Context) -> Decision | None:
        text = _flat(value)
        if not text:
            return None
        for ident in _identifiers(text):
            ev = provenance(ident, ctx)
            if ev.label is not None and ev.label <= Label.UNTRUSTED:
                return Decision(Action.DENY, tool, f"{arg} carries {ident[:60]!r}, found only in untrusted content ({_where(ev)})",
                                "untrusted_identifier", arg, ev.sources)
        private = [s for s in ctx.segments if s.confidential and len(s.text.strip()) >= 5
                   and not s.text.strip().replace(".", "").isalpha()]
        if private:
            t = norm(text)
            trusted = norm(ctx.trusted_text())
            for s in private:
                v = s.normed.strip()
                if v and v in t and v not in trusted:
                    return Decision(Action.DENY, tool, f"{arg} would send private data ({s.source}) outside, which the user did not ask for",
                                    "confidential", arg, (s.source,))
        return None


_ID_CONTEXT = r"(?:\bids?\b|#|\bno\.?|\bnumber\b|\bfile\b|\bemail\b|\bevent\b)\s*[:=]?\s*['\"]?"


def _named_in(value: str, segs: list[Any]) -> bool:
    """Does flagged text name this target? A short number counts only where it reads as an id ("ID '13'", "#13")."""
    v = norm(value)
    if not segs or not v:
        return False
    if len(v) > 4 or not v.isdigit():
        return True  # provenance already found the value in these segments
    pat = re.compile(_ID_CONTEXT + re.escape(v) + r"(?!\d)|['\"]" + re.escape(v) + r"['\"]")
    return any(pat.search(s.normed) for s in segs)


def _where(ev: Evidence) -> str:
    srcs = list(dict.fromkeys(s.split(" ", 1)[0] for s in ev.sources))
    return ", ".join(srcs[:3]) + (" …" if len(srcs) > 3 else "")


def decode_args(raw: Any) -> Any:
    """Tool-call arguments as an object (OpenAI sends a JSON string); undecodable → the raw string."""
    if isinstance(raw, (dict, list)):
        return raw
    if isinstance(raw, str):
        try:
            return orjson.loads(raw or "{}")
        except orjson.JSONDecodeError:
            return raw
    return raw


def call_token(tool: str, args: Any) -> str:
    """A stable short token for one exact call, used to approve it after a confirmation request."""
    digest = hashlib.sha256(tool.encode() + b"\0" + orjson.dumps(args, option=orjson.OPT_SORT_KEYS)).digest()
    return base64.urlsafe_b64encode(digest[:12]).decode()
