"""Who may talk to the gateway: API keys, and the rules for a gateway that has none.

- Keys exist: every endpoint needs one (``Authorization: Bearer sf-...``, or ``x-api-key``), except
  ``/health``, which then says only ``ok``. The dashboard pages also take the key from a
  ``SameSite=Strict`` cookie that its login form sets; the API never reads the cookie, so a
  cross-site page cannot spend on a logged-in user's behalf.
- No keys: loopback clients only, and the ``Host`` header must name this machine's loopback (or the
  bind address), which stops DNS rebinding: a web page whose name resolves to 127.0.0.1 still sends
  its own name. ``[server] allowed_hosts`` names more exact Host values (a balancer on this machine).
- Always: a browser request from another site (``Origin`` not this gateway, or
  ``Sec-Fetch-Site: cross-site``) is refused, so a page in the user's browser cannot POST to the
  gateway as a "simple" cross-origin request.

A keyed client's run and session ids are prefixed with its key id (``KEYID:RUN``), so two keys can
use the same run id without sharing its budget, memory or pseudonym vault.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from ..errors import AuthError, ForbiddenError
from ..keys import KeyInfo, KeyRing

COOKIE = "smallfleet_key"
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


@dataclass(frozen=True)
class Principal:
    """Who sent a request: a key, or the local user of a keyless gateway (``key`` None)."""
    key: KeyInfo | None

    @property
    def admin(self) -> bool:
        return self.key is None or self.key.admin

    def scoped(self, ident: str | None) -> str | None:
        """A client's run or session id in the ledger and stores: prefixed with its key id."""
        if ident is None or self.key is None:
            return ident
        return f"{self.key.id}:{ident}"

    @property
    def prefix(self) -> str | None:
        """Only runs starting with this (None: every run)."""
        return None if self.admin else f"{self.key.id}:"  # type: ignore[union-attr]


LOCAL = Principal(None)


@lru_cache(maxsize=1024)
def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@lru_cache(maxsize=1024)
def _host_name(value: str) -> tuple[str, int | None]:
    """``Host`` or origin netloc -> (lower-case name, port or None)."""
    v = value.strip().lower()
    if v.startswith("["):
        end = v.find("]")
        name, rest = v[: end + 1], v[end + 1:]
    else:
        name, _, rest = v.partition(":")
        rest = ":" + rest if rest else ""
    port = None
    if rest.startswith(":") and rest[1:].isdigit():
        port = int(rest[1:])
    return name, port


class Access:
    def __init__(self, ring: KeyRing, bind_host: str, allowed_hosts: tuple[str, ...] = (),
                 cors_origins: tuple[str, ...] = ()) -> None:
        self.ring = ring
        self.cors = frozenset(cors_origins)  # origins the operator lets browser pages call from ("*": any, with a key)
        self.bind_host = bind_host.lower()
        self.allowed_hosts = frozenset(allowed_hosts)  # exact Host values, e.g. a balancer in front of replicas

    @property
    def keyed(self) -> bool:
        return self.ring.enabled

    def _allowed_names(self) -> set[str]:
        names = set(_LOOPBACK_NAMES)
        if self.bind_host not in ("0.0.0.0", "::", ""):
            names.add(self.bind_host)
            names.add(f"[{self.bind_host}]")
        return names

    def check_site(self, headers: dict[str, str]) -> None:
        """Refuse cross-site browser requests (keys or not), but from the origins CORS allows: a listed one,
        or any when "*" is listed and the request carries its own key (a page cannot borrow a local
        gateway's loopback trust, nor the dashboard's cookie, which is SameSite=Strict)."""
        origin = headers.get("origin")
        if self.cors and origin and (origin.rstrip("/") in self.cors or ("*" in self.cors and _bearer(headers) is not None)):
            return
        site = headers.get("sec-fetch-site", "")
        if site in ("cross-site", "same-site"):
            raise ForbiddenError("cross-site browser requests are refused.",
                                 hint="call the gateway from your own code, not from a web page on another site")
        if origin and origin != "null":
            o = urlsplit(origin)
            oname, oport = _host_name(o.netloc)
            hname, hport = _host_name(headers.get("host", ""))
            default = 443 if o.scheme == "https" else 80
            if oname != hname or (oport or default) != (hport or default):
                raise ForbiddenError("cross-site browser requests are refused.",
                                     hint="call the gateway from your own code, not from a web page on another site")
        elif origin == "null":
            raise ForbiddenError("requests from opaque origins (sandboxed pages, files) are refused.")

    def admit(self, headers: dict[str, str], client: str | None, server_port: int | None, *,
              dashboard: bool = False) -> Principal:
        """The principal for a request, or AuthError / ForbiddenError."""
        self.check_site(headers)
        if not self.keyed:
            if not _is_loopback(client):
                raise ForbiddenError("this gateway has no API keys, so it serves loopback clients only.",
                                     hint="create a key on the gateway's machine: smallfleet keys create NAME")
            host = headers.get("host", "")
            name, port = _host_name(host)
            if host.strip().lower() in self.allowed_hosts:
                return LOCAL
            if name not in self._allowed_names() or (port is not None and server_port is not None and port != server_port):
                raise ForbiddenError("the Host header does not name this gateway.",
                                     hint="connect to 127.0.0.1 or localhost (a gateway without keys refuses other names)")
            return LOCAL
        key = _bearer(headers)
        if key is None and dashboard:
            key = _cookie(headers.get("cookie", ""))
        if key is None:
            raise AuthError("this gateway needs an API key.",
                            hint="send Authorization: Bearer sf-... (the OpenAI SDK's api_key); keys come from `smallfleet keys create`")
        info = self.ring.check(key)
        if info is None:
            raise AuthError("the API key is not valid (unknown or revoked).", hint="ask the operator for a key: smallfleet keys ls")
        return Principal(info)


def _bearer(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get("x-api-key") or None


def _cookie(raw: str) -> str | None:
    for part in raw.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None
