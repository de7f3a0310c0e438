"""The Cache binding: ``g.env.CACHE``."""

from __future__ import annotations

import inspect
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta

from .._validate import (
    MAX_TTL,
    check_amount,
    check_key,
    check_keys,
    check_mapping,
    check_ttl,
    check_value,
)
from .base import CacheBackend
from .flight import (
    BETA,
    FAR,
    LOCK_TIMEOUT,
    MARK,
    POLL_FIRST,
    POLL_MAX,
    check_flight,
    early,
    lock_key,
    unwrap,
    wrap,
)
from .policy import Policy


class Cache(Policy):
    """The Cache binding: ``g.env.CACHE``. Ephemeral, best-effort strings.

    Keys are non-empty ``str`` of at most ``PLOY_MAX_KEY_BYTES`` (512) bytes
    in UTF-8; values are ``str`` of at most ``PLOY_MAX_VALUE_BYTES``. A
    ``ttl`` is whole seconds from 1 to 100 years (``int`` or
    :class:`~datetime.timedelta`); ``None`` means ``PLOY_CACHE_DEFAULT_TTL``,
    which is no expiry unless set: the entry stays until it is overwritten
    or evicted.

    When the backend fails, ``get``/``get_many`` return misses, ``has`` and
    ``touch`` ``False``, ``ttl`` ``0``, and ``set``/``set_many``/``delete``/
    ``delete_many`` are not done (logged and counted), unless
    ``PLOY_CACHE_ON_ERROR = "raise"``, which raises
    :class:`~flask_ploy.CacheUnavailable`. ``incr``, ``add`` and ``count``
    always raise it; ``get_or_set`` never does (it computes the value). Bad
    arguments raise :class:`TypeError` or :class:`ValueError` and write
    nothing.

    A ``delete``, ``set`` or ``set_many`` that fails is not forgotten: its
    keys are remembered in this process (10,000 per backend) and deleted on
    the server before this process reads, counts or adds them again, and in
    batches as soon as the server answers. Until then this process serves
    misses for them, never the old values. Past 10,000 keys, the binding's
    whole resource is cleared when the server answers again.
    """

    __slots__ = ("_default_ttl", "_key_chars", "_max_key", "_max_value", "resource")

    def __init__(
        self,
        name: str,
        resource: str,
        backend: CacheBackend,
        *,
        prefix: str = "ploy",
        max_key_bytes: int = 512,
        max_value_bytes: int = 25 * 1024 * 1024,
        on_error: str = "miss",
        default_ttl: int | None = None,
    ) -> None:
        super().__init__(name, backend, f"{prefix}:{resource}:", on_error)
        #: The resource name from ``ploy.yaml`` (``default``).
        self.resource = resource
        self._max_key = max_key_bytes
        self._key_chars = max_key_bytes // 4  # a key of up to this many chars always fits
        self._max_value = max_value_bytes
        self._default_ttl = check_ttl(default_ttl)

    def __repr__(self) -> str:
        return (
            f"<Cache {self.name} resource={self.resource!r} backend={self.backend.display_url!r}>"
        )

    def __contains__(self, key: object) -> bool:
        """``key in CACHE``: :meth:`has`."""
        return self.has(key)  # type: ignore[arg-type]

    # -- operations -------------------------------------------------------

    def get(self, key: str) -> str | None:
        """Return the value of *key*, or ``None`` if it is missing or expired.

        Returns ``None`` too when the backend fails, unless
        ``PLOY_CACHE_ON_ERROR = "raise"``.
        """
        if type(key) is not str or not key or len(key) > self._key_chars:
            check_key(key, self._max_key)
        backend = self.backend
        if backend.degraded:
            full = self._namespace + key
            value = self._careful("get", None, False, backend.get, (full,), (full,), ())
        else:
            try:
                value = backend.get(self._namespace + key)
            except backend.errors as exc:
                return self._failed("get", exc, None)
        if value is not None and value[:1] == MARK:
            return unwrap(value)[0]
        return value

    def set(self, key: str, value: str, ttl: int | timedelta | None = None) -> None:
        """Store *value* under *key*, replacing any value, for *ttl* seconds.

        :param ttl: Whole seconds >= 1, or a timedelta; ``None``: the default
            TTL (``PLOY_CACHE_DEFAULT_TTL``, by default no expiry).
        """
        if type(key) is not str or not key or len(key) > self._key_chars:
            check_key(key, self._max_key)
        if type(value) is not str or len(value) * 4 > self._max_value:
            check_value(value, self._max_value)
        ttl = self._default_ttl if ttl is None else check_ttl(ttl)
        if value[:1] == MARK:
            value = wrap(value)  # read back exactly, not taken for an envelope
        backend = self.backend
        full = self._namespace + key
        if backend.degraded:
            self._careful("set", None, False, backend.set, (full, value, ttl), (), (full,))
            return
        try:
            backend.set(full, value, ttl)
        except backend.errors as exc:
            self._failed("set", exc, None, (full,))

    def delete(self, key: str) -> bool:
        """Remove *key*; return whether it was present.

        When the backend fails in ``"miss"`` mode, returns ``False`` and
        remembers the key: it is deleted before this process serves it again.
        """
        check_key(key, self._max_key)
        full = self._namespace + key
        return self._call("delete", False, False, self.backend.delete, full, writes=(full,))

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove *keys* in one round trip (node by node on a Cluster); return
        how many were present. Failures are as for :meth:`delete` (``0``)."""
        full = [self._namespace + k for k in dict.fromkeys(check_keys(keys, self._max_key))]
        if not full:
            return 0
        return self._call("delete_many", 0, False, self.backend.delete_many, full, writes=full)

    def has(self, key: str) -> bool:
        """Whether *key* is present and unexpired (also ``key in CACHE``);
        ``False`` when the backend fails, unless ``PLOY_CACHE_ON_ERROR = "raise"``."""
        check_key(key, self._max_key)
        full = self._namespace + key
        return self._call("has", False, False, self.backend.has, full, reads=(full,))

    def ttl(self, key: str) -> int | None:
        """Seconds until *key* expires, rounded up; ``None`` if it never
        expires; ``0`` if it is missing (or the backend fails, unless
        ``PLOY_CACHE_ON_ERROR = "raise"``)."""
        check_key(key, self._max_key)
        full = self._namespace + key
        zero: float | None = 0.0
        left = self._call("ttl", zero, False, self.backend.ttl, full, reads=(full,))
        return None if left is None else math.ceil(left)

    def touch(self, key: str, ttl: int | timedelta | None) -> bool:
        """Give *key* a new TTL from now, keeping its value; return whether it
        was present. ``ttl=None``: the default TTL, or no expiry if there is
        none. ``False`` when the backend fails, unless ``"raise"``."""
        check_key(key, self._max_key)
        ttl = self._default_ttl if ttl is None else check_ttl(ttl)
        full = self._namespace + key
        return self._call("touch", False, False, self.backend.touch, full, ttl, reads=(full,))

    def incr(self, key: str, amount: int = 1, ttl: int | timedelta | None = None) -> int:
        """Add *amount* to the integer at *key* atomically; return the result.

        A missing key counts from 0. The value stays a decimal string that
        :meth:`get` reads. *ttl* (or the default TTL) applies only when this
        call creates the key, so ``incr(key, ttl=60)`` counts in fixed
        60-second windows.

        :raises ValueError: The value is not a decimal integer, or the result
            leaves the 64-bit range; the value is left unchanged.
        :raises CacheUnavailable: The backend failed or refused the write
            (out of memory, read-only replica, no permission, ...), in every mode.
        """
        check_key(key, self._max_key)
        amount = check_amount(amount)
        ttl = self._default_ttl if ttl is None else check_ttl(ttl)
        full = self._namespace + key
        try:
            return self._call("incr", 0, True, self.backend.incr, full, amount, ttl, reads=(full,))
        except ValueError as exc:  # name the caller's key, not the namespaced one
            raise ValueError(str(exc).replace(repr(full), repr(key), 1)) from None

    def add(self, key: str, value: str, ttl: int | timedelta | None = None) -> bool:
        """Store *value* only if *key* is absent, atomically; return whether stored.

        :raises CacheUnavailable: The backend failed (in every mode).
        """
        check_key(key, self._max_key)
        check_value(value, self._max_value)
        ttl = self._default_ttl if ttl is None else check_ttl(ttl)
        if value[:1] == MARK:
            value = wrap(value)
        full = self._namespace + key
        return self._call("add", False, True, self.backend.add, full, value, ttl, reads=(full,))

    def get_many(self, keys: Iterable[str]) -> dict[str, str | None]:
        """Return ``{key: value or None}`` for *keys*, in one round trip.

        Misses for the keys the backend fails to read in ``"miss"`` mode (on
        a Cluster, only those of the failing nodes).
        """
        keys = check_keys(keys, self._max_key)
        ns = self._namespace
        values = self._call("get_many", None, False, self._read_many, [ns + k for k in keys])
        if values is None:
            return dict.fromkeys(keys)
        return {
            k: unwrap(v)[0] if v is not None and v[:1] == MARK else v for k, v in zip(keys, values)
        }

    def set_many(self, mapping: Mapping[str, str], ttl: int | timedelta | None = None) -> None:
        """Store every pair of *mapping*, each for *ttl* seconds, in one round trip.

        On a single Redis the writes are atomic (MULTI/EXEC). Nothing is
        written if any key or value is invalid.
        """
        items = check_mapping(mapping, self._max_key, self._max_value)
        ttl = self._default_ttl if ttl is None else check_ttl(ttl)
        ns = self._namespace
        full = [(ns + k, wrap(v) if v[:1] == MARK else v) for k, v in items]
        writes = [k for k, _ in full]
        self._call("set_many", None, False, self.backend.set_many, full, ttl, writes=writes)

    def count(self) -> int:
        """The number of unexpired keys of this binding's resource.

        Scans the keyspace on Redis (as :meth:`clear`): for tests and
        maintenance, not for requests. Keys whose invalidation is still
        pending in this process may be counted.

        :raises CacheUnavailable: The backend failed (in every mode).
        """
        return self._call("count", 0, True, self.backend.count, self._namespace)

    def clear(self) -> int:
        """Delete every key of this binding's resource; return how many.

        Scans the keyspace on Redis: meant for tests and maintenance, not
        for requests. Failures raise the backend's own exception.
        """
        pending = self.backend.pending
        since = pending.seq
        n = self.backend.clear(self._namespace)
        pending.cleared(self._namespace, since)
        return n

    # -- computed values ----------------------------------------------------

    def get_or_set(
        self,
        key: str,
        compute: Callable[[], str],
        ttl: int | timedelta | None = None,
        *,
        lock_timeout: float = LOCK_TIMEOUT,
        beta: float = BETA,
    ) -> str:
        """The value of *key*; on a miss, ``compute()``'s, stored for *ttl* seconds.

        **One computation at a time**, across processes and machines: on a
        miss, one caller takes a lock (on Redis ``SET NX PX`` with a random
        token, released by a compare-and-delete script) and computes; the
        others wait for its value, looking every few milliseconds, at most
        *lock_timeout* seconds; then they compute it themselves. The lock
        expires after *lock_timeout* seconds too, so a caller that dies
        holding it delays the others at most that long.

        **Early recomputation**: a hit close to its expiry is recomputed
        early by one caller, while the others are served the value still
        cached: with probability rising as the expiry nears, weighted by how
        long the last computation took (Vattani et al., VLDB 2015). *beta*
        above 1 recomputes earlier, below 1 later, ``0`` never.

        A busy backend (no free pooled connection in time, a locked SQLite
        file) is a miss here, not an outage: the lock still decides who
        computes.

        **Best effort**: when the backend fails or its breaker is open,
        *compute* runs and its value is returned, in either
        ``PLOY_CACHE_ON_ERROR`` mode. When *compute* raises, nothing is
        stored, the lock is released and the exception reaches the caller.

        The duration of the computation and the expiry are stored with the
        value, in front of it; :meth:`get` and :meth:`get_many` return the
        value alone.

        :param compute: Called without arguments; must return a ``str``
            (``json.dumps`` structured data) of at most PLOY_MAX_VALUE_BYTES.
        :param ttl: As for :meth:`set` (``None``: the default TTL).
        :raises TypeError: *compute* is not callable, or returned no ``str``.
        """
        if type(key) is not str or not key or len(key) > self._key_chars:
            check_key(key, self._max_key)
        if not callable(compute):
            raise TypeError(f"compute must be callable, not {type(compute).__name__}")
        if ttl is None:
            ttl = self._default_ttl
        elif type(ttl) is not int or not 0 < ttl <= MAX_TTL:
            ttl = check_ttl(ttl)
        if lock_timeout != LOCK_TIMEOUT or beta != BETA:
            lock_timeout, beta = check_flight(lock_timeout, beta)
        full = self._namespace + key
        backend = self.backend
        if backend.degraded:
            ok, raw = self._attempt("get", backend.get, full, reads=(full,))
        else:
            try:
                raw, ok = backend.get(full), True
            except backend.errors as exc:
                # Busy (a full pool, a locked SQLite file) is not an outage:
                # treat it as a miss, so the single flight still holds.
                error = backend.record_failure(f"{self.name}.get", exc)
                raw, ok = None, error.fault == "busy"
        if raw is not None:
            if raw[:1] != MARK:
                return raw
            value, delta, expires = unwrap(raw)
            if (
                delta
                and expires
                and beta
                and expires - time.time() <= FAR * delta * beta  # else early() is False
                and early(delta, expires, beta)
            ):
                fresh = self._refresh(full, raw, compute, ttl, lock_timeout)
                if fresh is not None:
                    return fresh
            return value
        if not ok:
            return _computed(compute)  # the backend is out: compute, store nothing
        flights = backend.flights
        flight, leader = flights.join(full)
        if not leader:  # another thread of this process is filling it: wait for it
            if flight.leader == threading.get_ident():  # our own compute asks: no waiting
                return _computed(compute)
            if not flight.landed.wait(lock_timeout):
                return self._store(full, compute, ttl)  # waited long enough
            if flight.value is not None:
                return flight.value
            return self._fill(full, compute, ttl, lock_timeout)  # it failed: try ourselves
        filled: str | None = None
        try:
            filled = self._fill(full, compute, ttl, lock_timeout)
            return filled
        finally:
            flights.land(full, flight, filled)

    def _store(self, full: str, compute: Callable[[], str], ttl: int | None) -> str:
        """Compute, and store the value with its duration and expiry."""
        start = time.perf_counter()
        value = _computed(compute)
        delta = time.perf_counter() - start
        check_value(value, self._max_value)
        self._attempt("set", self.backend.set, full, wrap(value, delta, ttl, time.time()), ttl,
                      writes=(full,))  # fmt: skip
        return value

    def _refresh(
        self, full: str, old: str, compute: Callable[[], str], ttl: int | None, lock_timeout: float
    ) -> str | None:
        """Recompute early if no other caller is: the new value, or ``None``
        (serve *old*, the stored string, meanwhile)."""
        lock, token = lock_key(self._namespace, full[len(self._namespace) :]), _token()
        _, got = self._attempt("lock", self.backend.lock, lock, token, lock_timeout)
        if not got:
            return None
        try:
            _, raw = self._attempt("get", self.backend.get, full, reads=(full,))
            if raw is not None and raw != old:  # refreshed between our read and our lock
                return unwrap(raw)[0]
            return self._store(full, compute, ttl)
        finally:
            self._attempt("unlock", self.backend.unlock, lock, token)

    def _fill(
        self, full: str, compute: Callable[[], str], ttl: int | None, lock_timeout: float
    ) -> str:
        """A miss: compute under the lock, or wait for the caller who holds it."""
        backend = self.backend
        lock, token = lock_key(self._namespace, full[len(self._namespace) :]), _token()
        deadline = time.monotonic() + lock_timeout
        pause = POLL_FIRST
        while True:
            ok, got = self._attempt("lock", backend.lock, lock, token, lock_timeout)
            if not ok:
                return self._store(full, compute, ttl)  # no lock to be had: compute
            if got:
                try:
                    _, raw = self._attempt("get", backend.get, full, reads=(full,))
                    if raw is not None:  # stored between our miss and our lock
                        return unwrap(raw)[0]
                    return self._store(full, compute, ttl)
                finally:
                    self._attempt("unlock", backend.unlock, lock, token)
            left = deadline - time.monotonic()
            if left <= 0:
                return self._store(full, compute, ttl)  # waited long enough
            time.sleep(min(pause, left))
            pause = min(pause * 1.5, POLL_MAX)
            _, raw = self._attempt("get", backend.get, full, reads=(full,))
            if raw is not None:
                return unwrap(raw)[0]


def _computed(compute: Callable[[], str]) -> str:
    value: object = compute()
    if type(value) is not str:
        if inspect.iscoroutine(value):
            value.close()  # never awaited: no warning
            raise TypeError(
                "compute returned a coroutine: get_or_set and @cached are synchronous;"
                " give them a plain function (run async code with asyncio.run or in a view)"
            )
        if not isinstance(value, str):
            raise TypeError(
                f"compute must return a str, not {type(value).__name__}; serialize it first,"
                " e.g. json.dumps(value)"
            )
        return str(value)
    return value


def _token() -> str:
    return secrets.token_hex(16)
