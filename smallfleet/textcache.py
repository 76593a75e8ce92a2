"""LRU caches keyed by request text, bounded in bytes as well as entries.

Agents re-send their whole history every turn, so per-message results (parsed tool output, labels,
detector scores, extracted numbers) are cached by text. An entry-count bound alone lets a client fill
memory with a few thousand large messages; these caches also count the text they hold, and texts
over ``max_text`` are computed every time and never kept.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class TextCache:
    """``cache.get(key, compute)``: at most ``max_entries`` keys and ``max_bytes`` charged.

    Each entry is charged its key text times ``weight``: what it keeps per character of text (parsed
    JSON objects or labelled segments are several times larger than the text they came from)."""

    def __init__(self, max_entries: int = 1024, max_bytes: int = 16 << 20, max_text: int = 256 << 10,
                 weight: float = 1.0) -> None:
        self.max_entries, self.max_bytes, self.max_text, self.weight = max_entries, max_bytes, max_text, weight
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def _size(self, key: Any) -> int:
        if isinstance(key, str):
            n = len(key)
        elif isinstance(key, tuple):
            n = sum(len(k) for k in key if isinstance(k, str)) + 8 * len(key)
        else:
            n = 64
        return int(n * self.weight)

    def get(self, key: Any, compute: Callable[[], T]) -> T:
        size = self._size(key)
        if size > self.max_text * self.weight:
            return compute()
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]  # type: ignore[no-any-return]
        value = compute()
        with self._lock:
            if key not in self._data:
                self._data[key] = value
                self._bytes += size
                while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
                    old, _ = self._data.popitem(last=False)
                    self._bytes -= self._size(old)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def bytes(self) -> int:
        return self._bytes


def text_cached(max_entries: int = 1024, max_bytes: int = 16 << 20, max_text: int = 256 << 10,
                weight: float = 1.0) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator form for functions of hashable arguments (strings counted by length)."""
    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        cache = TextCache(max_entries, max_bytes, max_text, weight)

        @functools.wraps(fn)
        def inner(*args: Any) -> T:
            return cache.get(args, lambda: fn(*args))

        inner.cache = cache  # type: ignore[attr-defined]
        return inner
    return wrap
