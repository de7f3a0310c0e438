"""The Cache binding: ``g.env.CACHE``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
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
from .base import CacheBackend

T = TypeVar("T")


class Cache:
    """The Cache binding: ``g.env.CACHE``. Ephemeral, best-effort strings.

    Keys are non-empty ``str`` of at most ``PLOY_MAX_KEY_BYTES`` (512) bytes
    in UTF-8; values are ``str`` of at most ``PLOY_MAX_VALUE_BYTES``. A
    ``ttl`` is whole seconds >= 1 (``int`` or :class:`~datetime.timedelta`);
    ``None`` keeps the entry until it is overwritten or evicted.

    When the backend fails, ``get``/``get_many`` return misses and
    ``set``/``set_many``/``delete`` are dropped (logged and counted), unless
    ``PLOY_CACHE_ON_ERROR = "raise"``, which raises
    :class:`~flask_ploy.CacheUnavailable`. ``incr`` and ``add`` always raise
    it. Bad arguments raise :class:`TypeError` or :class:`ValueError` and
    write nothing.
    """

    __slots__ = (
        "_breaker",
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
        self._breaker = backend.breaker
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

    def _skipped(self, op: str, strict: bool) -> None:
        """The breaker is open: raise, or return so the caller serves a miss."""
        if self._raise or strict:
            raise CacheUnavailable(
                f"cache backend {self.backend.display_url} is unavailable"
                f" (failed within the last {self.backend.cooldown:g} s); {self.name}.{op} not tried"
            )

    def _failed(self, op: str, exc: BaseException, strict: bool = False) -> None:
        """Count and log *exc*; raise, or return so the caller serves a miss."""
        self.backend.record_failure(op, exc)
        if self._raise or strict:
            raise CacheUnavailable(
                f"cache backend {self.backend.display_url} failed on"
                f" {self.name}.{op}: {type(exc).__name__}: {exc}"
            ) from exc

    def _call(self, op: str, default: T, strict: bool, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` under the failure policy; every operation but
        ``get`` and ``set`` (which inline it) goes through here.

        :param default: What a failure returns in ``"miss"`` mode.
        :param strict: Raise :class:`CacheUnavailable` in every mode.
        """
        if not self._breaker.allow():
            self._skipped(op, strict)
            return default
        backend = self.backend
        try:
            return fn(*args)
        except backend.errors as exc:
            self._failed(op, exc, strict)
            return default

    # -- operations -------------------------------------------------------

    def get(self, key: str) -> str | None:
        """Return the value of *key*, or ``None`` if it is missing or expired.

        Returns ``None`` too when the backend fails, unless
        ``PLOY_CACHE_ON_ERROR = "raise"``.
        """
        if type(key) is not str or not key or len(key) > self._key_chars:
            check_key(key, self._max_key)
        breaker = self._breaker
        if breaker.open_until and not breaker.allow():
            self._skipped("get", False)
            return None
        backend = self.backend
        try:
            return backend.get(self._namespace + key)
        except backend.errors as exc:
            self._failed("get", exc)
            return None

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
        breaker = self._breaker
        if breaker.open_until and not breaker.allow():
            self._skipped("set", False)
            return
        backend = self.backend
        try:
            backend.set(self._namespace + key, value, ttl)
        except backend.errors as exc:
            self._failed("set", exc)

    def delete(self, key: str) -> bool:
        """Remove *key*; return whether it was present.

        Returns ``False`` when the backend fails in ``"miss"`` mode.
        """
        check_key(key, self._max_key)
        return self._call("delete", False, False, self.backend.delete, self._namespace + key)

    def incr(self, key: str, amount: int = 1, ttl: int | timedelta | None = None) -> int:
        """Add *amount* to the integer at *key* atomically; return the result.

        A missing key counts from 0. The value stays a decimal string that
        :meth:`get` reads. *ttl* applies only when this call creates the key,
        so ``incr(key, ttl=60)`` counts in fixed 60-second windows.

        :raises ValueError: The value is not a decimal integer, or the result
            leaves the 64-bit range; the value is left unchanged.
        :raises CacheUnavailable: The backend failed (in every mode).
        """
        check_key(key, self._max_key)
        amount = check_amount(amount)
        ttl = check_ttl(ttl)
        full = self._namespace + key
        try:
            return self._call("incr", 0, True, self.backend.incr, full, amount, ttl)
        except ValueError as exc:  # name the caller's key, not the namespaced one
            raise ValueError(str(exc).replace(repr(full), repr(key), 1)) from None

    def add(self, key: str, value: str, ttl: int | timedelta | None = None) -> bool:
        """Store *value* only if *key* is absent, atomically; return whether stored.

        :raises CacheUnavailable: The backend failed (in every mode).
        """
        check_key(key, self._max_key)
        check_value(value, self._max_value)
        ttl = check_ttl(ttl)
        return self._call("add", False, True, self.backend.add, self._namespace + key, value, ttl)

    def get_many(self, keys: Iterable[str]) -> dict[str, str | None]:
        """Return ``{key: value or None}`` for *keys*, in one round trip.

        All misses when the backend fails in ``"miss"`` mode.
        """
        keys = check_keys(keys, self._max_key)
        ns = self._namespace
        values = self._call("get_many", None, False, self.backend.get_many, [ns + k for k in keys])
        return dict.fromkeys(keys) if values is None else dict(zip(keys, values))

    def set_many(self, mapping: Mapping[str, str], ttl: int | timedelta | None = None) -> None:
        """Store every pair of *mapping*, each for *ttl* seconds, in one round trip.

        On a single Redis the writes are atomic (MULTI/EXEC). Nothing is
        written if any key or value is invalid.
        """
        items = check_mapping(mapping, self._max_key, self._max_value)
        ttl = check_ttl(ttl)
        ns = self._namespace
        self._call(
            "set_many", None, False, self.backend.set_many, [(ns + k, v) for k, v in items], ttl
        )

    def clear(self) -> int:
        """Delete every key of this binding's resource; return how many.

        Scans the keyspace on Redis: meant for tests and maintenance, not
        for requests. Failures raise the backend's own exception.
        """
        return self.backend.clear(self._namespace)
