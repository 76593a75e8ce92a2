"""Encryption at rest for the stores that hold what users said (session facts, captured traces).

A store is encrypted with a Fernet key taken from an environment variable when set, else from a key
file beside the store (``traces.db`` -> ``traces.key``), created owner-only (0600) on first use. So
the stores are encrypted by default and a copied database file alone reads as noise; a key kept
elsewhere (the environment variable) keeps the two apart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import ConfigError, NotAvailableError

KEY_HINT = "create a key with: python -c 'from smallfleet.privacy import new_key; print(new_key())'"


def fernet(key: str | bytes, env_name: str) -> Any:
    """A Fernet cipher for ``key``; a malformed key is a config error naming ``env_name``."""
    try:
        from cryptography.fernet import Fernet
    except ImportError as e:  # pragma: no cover - cryptography is a dependency
        raise NotAvailableError("an encrypted store needs the 'cryptography' package.", hint="pip install cryptography") from e
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise ConfigError(f"{env_name} is not a valid key (32 url-safe base64 bytes).", hint=KEY_HINT) from None


def key_file(store_path: Path) -> Path:
    """Where the generated key of a store lives: beside it, ``memory.db`` -> ``memory.key``."""
    return store_path.with_name(store_path.stem + ".key")


def resolve_key(env_key: str | None, store_path: Path) -> str:
    """The store's key: the environment's when given, else the key file beside the store (created,
    0600, when missing; a second process racing to create it reads the first one's)."""
    if env_key:
        return env_key
    path = key_file(store_path)
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    from cryptography.fernet import Fernet

    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key + "\n")
    return key


def cipher(target: str | Path, key: str | bytes | None, env_name: str, what: str) -> Any:
    """The Fernet cipher of a store at ``target``: with ``key`` when given; else, for a file, the key
    file beside it; a database URL needs the key given (no key file is kept beside a database)."""
    if isinstance(target, str) and target.startswith(("postgresql://", "postgres://")):
        if not key:
            from .db import redact_url

            raise ConfigError(f"{what} in PostgreSQL ({redact_url(target)}) needs its key in {env_name}.",
                              hint=f"set {env_name} to the same key wherever it is read (smallfleet keeps no key file "
                                   f"beside a database); {KEY_HINT}")
        return fernet(key, env_name)
    return fernet(key or resolve_key(None, Path(target)), env_name)
