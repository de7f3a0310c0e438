"""The Cache binding: ``g.env.CACHE``."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from .._validate import (
    check_amount,
    check_key,
    check_keys,
    check_mapping,
    check_ttl,
    check_value,
)
from ..errors import CacheUnavailable
from .base import CacheBackend, Unavailable

T = TypeVar("T")


class Cache:
    """The Cache binding: ``g.env.CACHE``. Ephemeral, best-effort strings.

    Keys are non-empty ``str`` of at most ``PLOY_MAX_KEY_BYTES`` (512) bytes
    in UTF-8; values are ``str`` of at most ``PLOY_MAX_VALUE_BYTES``. A
    ``ttl`` is whole seconds from 1 to 100 years (``int`` or
    :class:`~datetime.timedelta`); ``None`` keeps the entry until it is
    overwritten or evicted.

    When the backend fails, ``get``/``get_many`` return misses and
    ``set``/``set_many``/``delete`` are not done (logged and counted),
    unless ``PLOY_CACHE_ON_ERROR = "raise"``, which raises
    :class:`~flask_ploy.CacheUnavailable`. ``incr`` and ``add`` always raise
    it. Bad arguments raise :class:`TypeError` or :class:`ValueError` and
    write nothing.

    A ``delete``, ``set`` or ``set_many`` that fails is not forgotten: its
    keys are remembered in this process (10,000 per backend) and deleted on
    the server before this process reads, counts or adds them again, and in
    batches as soon as the server answers. Until then this process serves
    misses for them, never the old values. Past 10,000 keys, the binding's
    whole resource is cleared when the server answers again.
    """

    __slots__ = (
        "_key_chars",
        "_max_key",
        "_max_value",
        "_namespace",
        "_raise",
        "backend",
        "name",
        "resource",
    )

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
    ) -> None:
        #: The binding name from ``ploy.yaml`` (``CACHE``).
        self.name = name
        #: The resource name from ``ploy.yaml`` (``default``).
        self.resource = resource
        #: The :class:`CacheBackend` shared by bindings on the same URL.
        self.backend = backend
        self._namespace = f"{prefix}:{resource}:"
        self._max_key = max_key_bytes
        self._key_chars = max_key_bytes // 4  # a key of up to this many chars always fits
        self._max_value = max_value_bytes
        self._raise = on_error == "raise"

    def __repr__(self) -> str:
        return (
            f"<Cache {self.name} resource={self.resource!r} backend={self.backend.display_url!r}>"
        )

    # -- failure policy ---------------------------------------------------

    def _policy(self, error: Unavailable, default: T, strict: bool) -> T:
        """Raise :class:`CacheUnavailable`, or return *default* (a miss)."""
        if self._raise or strict:
            raise CacheUnavailable(error.reason) from error
        return default

    def _failed(
        self,
        op: str,
        exc: BaseException,
        default: T,
        writes: Collection[str] = (),
        strict: bool = False,
    ) -> T:
        """An operation failed outside the careful path: count, remember
        *writes*, apply the policy."""
        error = self.backend.record_failure(f"{self.name}.{op}", exc)
        if writes:
            self._remember(error, writes)
        return self._policy(error, default, strict)

    def _remember(self, error: Unavailable, writes: Collection[str]) -> None:
        """Keep the invalidations *error* left undone: *writes*, or only the
        keys it names (a Cluster ``set_many`` that failed on one node)."""
        keys = writes if error.keys is None else error.keys
        self.backend.remember(keys, self._namespace)

    def _call(
        self,
        op: str,
        default: T,
        strict: bool,
        fn: Callable[..., T],
        *args: Any,
        reads: Collection[str] = (),
        writes: Collection[str] = (),
    ) -> T:
        """Run ``fn(*args)`` under the failure policy.

        Every operation but ``get`` and ``set`` goes through here; those two
        inline the same first lines. While the backend is healthy (breaker
        closed, no invalidation pending) that is one flag and a call; else
        :meth:`_careful` applies the breaker and the pending invalidations.

        :param default: What a failure returns in ``"miss"`` mode.
        :param strict: Raise :class:`CacheUnavailable` in every mode.
        :param reads: Full keys whose pending invalidations must be applied
            first; if one cannot be, *fn* is not called.
        :param writes: Full keys *fn* overwrites or deletes: no longer
            pending when it succeeds, pending when it fails.
        """
        backend = self.backend
        if backend.degraded:
            return self._careful(op, default, strict, fn, args, reads, writes)
        try:
            return fn(*args)
        except backend.errors as exc:
            return self._failed(op, exc, default, writes, strict)

    def _careful(
        self,
        op: str,
        default: T,
        strict: bool,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        reads: Collection[str],
        writes: Collection[str],
    ) -> T:
        """:meth:`_call` while the breaker is open or invalidations are pending."""
        backend = self.backend
        try:
            result: T = backend.breaker.call(
                f"{self.name}.{op}", backend.classify, backend.errors,
                self._apply, fn, args, reads, writes,
            )  # fmt: skip
            return result
        except Unavailable as error:
            if writes:
                self._remember(error, writes)
            return self._policy(error, default, strict)
        finally:
            backend.update_degraded()

    def _apply(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        reads: Collection[str],
        writes: Collection[str],
    ) -> T:
        """``fn(*args)``, after the pending invalidations of *reads*; forget
        those of *writes* when it succeeds."""
        pending = self.backend.pending
        if not pending:
            return fn(*args)
        blocked = self._invalidate(reads)
        if blocked:
            raise Unavailable(
                f"cache backend {self.backend.display_url}: {len(blocked)} pending"
                f" invalidation(s) of {self.name} could not be applied",
                keys=blocked,
            )
        before = pending.snapshot(writes)
        result = fn(*args)
        pending.discard(before)
        return result

    def _invalidate(self, reads: Collection[str]) -> list[str]:
        """Apply the pending invalidations of *reads* (and, once per cooldown,
        a batch of the others); return those of *reads* still pending.

        If this resource lost track of its invalidations, it is cleared first
        (tried once per cooldown; until then every key of *reads* is blocked).
        """
        backend = self.backend
        pending = backend.pending
        now = time.monotonic()
        ns = self._namespace
        if pending.lost(ns):
            if not pending.due(ns, now, backend.cooldown):
                return list(reads)
            since = pending.seq
            backend.clear(ns)
            pending.cleared(ns, since)
        todo = pending.snapshot(reads)
        keys = {**pending.batch(), **todo} if pending.due("", now, backend.cooldown) else todo
        if not keys:
            return []
        done = set(backend.delete_keys(list(keys)))
        pending.discard({k: seq for k, seq in keys.items() if k in done})
        return [k for k in todo if k not in done]

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
            return self._careful("get", None, False, backend.get, (full,), (full,), ())
        try:
            return backend.get(self._namespace + key)
        except backend.errors as exc:
            return self._failed("get", exc, None)

    def set(self, key: str, value: str, ttl: int | timedelta | None = None) -> None:
        """Store *value* under *key*, replacing any value, for *ttl* seconds.

        :param ttl: Whole seconds >= 1, or a timedelta; ``None`` for no expiry.
        """
        if type(key) is not str or not key or len(key) > self._key_chars:
            check_key(key, self._max_key)
        if type(value) is not str or len(value) * 4 > self._max_value:
            check_value(value, self._max_value)
        if ttl is not None:
            ttl = check_ttl(ttl)
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

    def incr(self, key: str, amount: int = 1, ttl: int | timedelta | None = None) -> int:
        """Add *amount* to the integer at *key* atomically; return the result.

        A missing key counts from 0. The value stays a decimal string that
        :meth:`get` reads. *ttl* applies only when this call creates the key,
        so ``incr(key, ttl=60)`` counts in fixed 60-second windows.

        :raises ValueError: The value is not a decimal integer, or the result
            leaves the 64-bit range; the value is left unchanged.
        :raises CacheUnavailable: The backend failed or refused the write
            (out of memory, read-only replica, no permission, ...), in every mode.
        """
        check_key(key, self._max_key)
        amount = check_amount(amount)
        ttl = check_ttl(ttl)
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
        ttl = check_ttl(ttl)
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
        return dict.fromkeys(keys) if values is None else dict(zip(keys, values))

    def _read_many(self, full: list[str]) -> list[str | None]:
        """``backend.get_many(full)``, with misses for the keys whose pending
        invalidation cannot be applied, or (Cluster) whose node fails."""
        backend = self.backend
        blocked = set(self._invalidate(full)) if backend.pending else set()
        wanted = [k for k in full if k not in blocked] if blocked else full
        try:
            values = backend.get_many(wanted)
            failed: Unavailable | None = None
        except Unavailable as exc:
            if exc.values is None:
                raise
            values, failed = exc.values, exc
        if failed is not None and self._raise:
            raise failed
        if not blocked:
            return values
        if self._raise:
            raise Unavailable(
                f"cache backend {backend.display_url}: {len(blocked)} pending"
                f" invalidation(s) of {self.name} could not be applied"
            )
        found = dict(zip(wanted, values))
        return [found.get(k) for k in full]

    def set_many(self, mapping: Mapping[str, str], ttl: int | timedelta | None = None) -> None:
        """Store every pair of *mapping*, each for *ttl* seconds, in one round trip.

        On a single Redis the writes are atomic (MULTI/EXEC). Nothing is
        written if any key or value is invalid.
        """
        items = check_mapping(mapping, self._max_key, self._max_value)
        ttl = check_ttl(ttl)
        full = [(self._namespace + k, v) for k, v in items]
        writes = [k for k, _ in full]
        self._call("set_many", None, False, self.backend.set_many, full, ttl, writes=writes)

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
