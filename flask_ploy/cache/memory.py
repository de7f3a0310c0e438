"""``memory://``: an in-process LRU cache."""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from .._validate import INT_MAX, INT_MIN, is_counter, not_integer
from .base import CacheBackend

#: Bytes an entry costs besides its key and value strings (the dict slot, the
#: LRU links, the (value, expiry) tuple and the float), measured on CPython 3.11.
ENTRY_OVERHEAD = 176

#: Default bound of a memory:// cache in bytes (keys, values and overhead).
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def entry_size(key: str, value: str) -> int:
    """Bytes of memory an entry of *key* and *value* holds (approximately)."""
    return sys.getsizeof(key) + sys.getsizeof(value) + ENTRY_OVERHEAD


class MemoryBackend(CacheBackend):
    """An in-process LRU cache: thread-safe, TTLs honoured, bounded.

    Each process has its own copy, so it suits development, tests and a
    single worker. At most *max_entries* entries and *max_bytes* bytes (keys,
    values and about 176 bytes of bookkeeping per entry, as CPython counts
    them) are kept; the least recently used entries go first. A value too
    large for *max_bytes* on its own is not kept (its key then reads as a
    miss). Expired entries are never returned.

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
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(url, cooldown)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        #: Bytes held now, as :func:`entry_size` counts them.
        self.bytes = 0
        self._data: OrderedDict[str, tuple[str, float | None]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cooldown: float = 1.0,
        options: Mapping[str, Any] | None = None,
        max_entries: int = 10_000,
        max_bytes: int = DEFAULT_MAX_BYTES,
        **_: Any,
    ) -> MemoryBackend:
        return cls(url, cooldown, max_entries=max_entries, max_bytes=max_bytes)

    def reset_locks(self) -> None:
        super().reset_locks()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def _live(self, key: str, now: float) -> str | None:
        """The value of *key* if present and unexpired; caller holds the lock."""
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= now:
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return item[0]

    def _drop(self, key: str) -> None:
        """Remove *key* if present; caller holds the lock."""
        item = self._data.pop(key, None)
        if item is not None:
            self.bytes -= entry_size(key, item[0])

    def _put(self, key: str, value: str, expires: float | None) -> None:
        """Store, then evict the least recently used past the bounds; caller
        holds the lock."""
        self._drop(key)
        size = entry_size(key, value)
        if size > self.max_bytes:
            return  # would evict everything and still not fit: not kept
        self._data[key] = (value, expires)
        self.bytes += size
        data = self._data
        while len(data) > self.max_entries or self.bytes > self.max_bytes:
            old, item = data.popitem(last=False)
            self.bytes -= entry_size(old, item[0])

    def get(self, key: str) -> str | None:
        key.encode()
        with self._lock:
            return self._live(key, self.clock())

    def set(self, key: str, value: str, ttl: int | None) -> None:
        key.encode()
        value.encode()  # refuse what Redis would refuse (lone surrogates)
        with self._lock:
            self._put(key, value, None if ttl is None else self.clock() + ttl)

    def delete(self, key: str) -> bool:
        key.encode()
        with self._lock:
            present = self._live(key, self.clock()) is not None
            self._drop(key)
            return present

    def incr(self, key: str, amount: int, ttl: int | None) -> int:
        key.encode()
        with self._lock:
            now = self.clock()
            old = self._live(key, now)
            if old is None:
                self._put(key, str(amount), None if ttl is None else now + ttl)
                return amount
            if not is_counter(old) or not INT_MIN <= int(old) + amount <= INT_MAX:
                raise not_integer(key, old, amount)
            new = int(old) + amount
            self._put(key, str(new), self._data[key][1])
            return new

    def add(self, key: str, value: str, ttl: int | None) -> bool:
        key.encode()
        value.encode()
        with self._lock:
            now = self.clock()
            if self._live(key, now) is not None:
                return False
            self._put(key, value, None if ttl is None else now + ttl)
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
            expires = None if ttl is None else self.clock() + ttl
            for key, value in items:
                self._put(key, value, expires)

    def delete_many(self, keys: list[str]) -> int:
        for key in keys:
            key.encode()
        with self._lock:
            now = self.clock()
            present = 0
            for key in keys:
                present += self._live(key, now) is not None
                self._drop(key)
            return present

    def has(self, key: str) -> bool:
        key.encode()
        with self._lock:
            item = self._data.get(key)
            return item is not None and (item[1] is None or item[1] > self.clock())

    def ttl(self, key: str) -> float | None:
        key.encode()
        with self._lock:
            now = self.clock()
            if self._live(key, now) is None:
                return 0.0
            expires = self._data[key][1]
            return None if expires is None else expires - now

    def touch(self, key: str, ttl: int | None) -> bool:
        key.encode()
        with self._lock:
            now = self.clock()
            value = self._live(key, now)
            if value is None:
                return False
            self._data[key] = (value, None if ttl is None else now + ttl)
            return True

    def lock(self, key: str, token: str, seconds: float) -> bool:
        with self._lock:
            now = self.clock()
            if self._live(key, now) is not None:
                return False
            self._put(key, token, now + seconds)
            return True

    def unlock(self, key: str, token: str) -> bool:
        with self._lock:
            if self._live(key, self.clock()) != token:
                return False
            self._drop(key)
            return True

    def count(self, prefix: str) -> int:
        with self._lock:
            now = self.clock()
            return sum(
                1
                for k, (_, e) in self._data.items()
                if k.startswith(prefix) and (e is None or e > now)
            )

    def clear(self, prefix: str) -> int:
        with self._lock:
            doomed = [k for k in self._data if k.startswith(prefix)]
            for key in doomed:
                self._drop(key)
            return len(doomed)
