"""Session vaults shared by gateway processes: the same value gets the same placeholder on every
replica, and a placeholder written on one is restored on another.

Each session's vault is one row of :class:`~smallfleet.shared.SharedState`, encrypted, with a version
that counts its writes. Pseudonymising a request runs under the row's lock: a process whose copy is
as new as the row uses it, an older one reads the row first, and a vault that gained values is
written back before the lock goes. So two replicas never give one placeholder to two values.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from ..shared import SharedState
from .vault import Vault

T = TypeVar("T")


class SharedVaults:
    """Vaults in the shared state's database, with this process's copies cached; thread-safe."""

    def __init__(self, state: SharedState, *, cache: int = 4096) -> None:
        self.state = state
        self._cache: OrderedDict[str, tuple[Vault, int]] = OrderedDict()  # session -> (vault, version it matches)
        self._max = cache
        self._lock = threading.Lock()

    @property
    def remote(self) -> bool:
        return self.state.remote

    def cached(self, session: str) -> Vault | None:
        """This process's copy (for scrubbing ledger text; it may lag another replica's writes)."""
        with self._lock:
            got = self._cache.get(session)
        return got[0] if got else None

    def edit(self, session: str, fn: Callable[[Vault], T]) -> T:
        """Run ``fn`` on the session's current vault under its lock; what it adds is stored before the
        lock goes. If anything fails, this process's copy is dropped (the row is unchanged)."""
        db = self.state.db
        try:
            with db.transaction() as cur:
                now = time.time()
                cur.execute("INSERT INTO session_vaults (session, version, data, updated) VALUES (?, 0, NULL, ?) "
                            "ON CONFLICT (session) DO NOTHING", (session, now))
                lock = " FOR UPDATE" if db.dialect == "postgresql" else ""  # SQLite's write lock already holds
                version, data = cur.execute("SELECT version, data FROM session_vaults WHERE session=?" + lock, (session,)).fetchone()
                with self._lock:
                    mine = self._cache.get(session)
                if mine is not None and mine[1] == version:
                    vault = mine[0]
                else:
                    vault = Vault.from_bytes(self.state.unseal(data)) if data else Vault()
                before = vault.entries
                out = fn(vault)
                if vault.entries != before:
                    version += 1
                    cur.execute("UPDATE session_vaults SET version=?, data=?, updated=? WHERE session=?",
                                (version, self.state.seal(vault.to_bytes()), now, session))
        except BaseException:
            with self._lock:
                self._cache.pop(session, None)
            raise
        with self._lock:
            self._cache[session] = (vault, version)
            self._cache.move_to_end(session)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return out
