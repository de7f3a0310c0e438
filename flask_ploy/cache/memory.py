"""``memory://``: an in-process LRU cache."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from .._validate import INT_MAX, INT_MIN, is_counter, not_integer
from .base import CacheBackend

_memory_backends: weakref.WeakSet[MemoryBackend] = weakref.WeakSet()


def _reset_locks() -> None:  # pragma: no cover - runs in forked children
    for backend in list(_memory_backends):
        backend.reset_lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks)


class MemoryBackend(CacheBackend):
    """An in-process LRU cache: thread-safe, TTLs honoured, bounded.

    Each process has its own copy, so it suits development, tests and a
    single worker. At most *max_entries* are kept; the least recently used
    entry goes first. Expired entries are never returned.

    :param clock: Returns seconds; :func:`time.monotonic` by default. Tests
        may pass a fake clock.
    """

    schemes: ClassVar[tuple[str, ...]] = ("memory",)

    def __init__(
        self,
        url: str = "memory://",
        cooldown: float = 1.0,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(url, cooldown)
        self.max_entries = max_entries
        self.clock = clock
        self._data: OrderedDict[str, tuple[str, float | None]] = OrderedDict()
        self._lock = threading.Lock()
        _memory_backends.add(self)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cooldown: float = 1.0,
        options: Mapping[str, Any] | None = None,
        max_entries: int = 10_000,
        **_: Any,
    ) -> MemoryBackend:
        return cls(url, cooldown, max_entries=max_entries)

    def reset_lock(self) -> None:
        """Replace the lock (in a forked child, where it may be held forever)."""
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def _live(self, key: str, now: float) -> str | None:
        """The value of *key* if present and unexpired; caller holds the lock."""
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= now:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return item[0]

    def _put(self, key: str, value: str, ttl: int | None, now: float) -> None:
        value.encode()  # refuse what Redis would refuse (lone surrogates)
        self._data[key] = (value, None if ttl is None else now + ttl)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def get(self, key: str) -> str | None:
        key.encode()
        with self._lock:
            return self._live(key, self.clock())

    def set(self, key: str, value: str, ttl: int | None) -> None:
        key.encode()
        with self._lock:
            self._put(key, value, ttl, self.clock())

    def delete(self, key: str) -> bool:
        key.encode()
        with self._lock:
            present = self._live(key, self.clock()) is not None
            self._data.pop(key, None)
            return present

    def incr(self, key: str, amount: int, ttl: int | None) -> int:
        key.encode()
        with self._lock:
            now = self.clock()
            old = self._live(key, now)
            if old is None:
                self._put(key, str(amount), ttl, now)
                return amount
            if not is_counter(old) or not INT_MIN <= int(old) + amount <= INT_MAX:
                raise not_integer(key, old, amount)
            new = int(old) + amount
            self._data[key] = (str(new), self._data[key][1])
            return new

    def add(self, key: str, value: str, ttl: int | None) -> bool:
        key.encode()
        with self._lock:
            now = self.clock()
            if self._live(key, now) is not None:
                return False
            self._put(key, value, ttl, now)
            return True

    def get_many(self, keys: list[str]) -> list[str | None]:
        for key in keys:
            key.encode()
        with self._lock:
            now = self.clock()
            return [self._live(key, now) for key in keys]

    def set_many(self, items: list[tuple[str, str]], ttl: int | None) -> None:
        for key, value in items:
            key.encode()
            value.encode()
        with self._lock:
            now = self.clock()
            for key, value in items:
                self._put(key, value, ttl, now)

    def clear(self, prefix: str) -> int:
        with self._lock:
            doomed = [k for k in self._data if k.startswith(prefix)]
            for key in doomed:
                del self._data[key]
            return len(doomed)
