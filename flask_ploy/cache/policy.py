"""The failure policy every :class:`~flask_ploy.Cache` applies: the breaker,
remembered invalidations, ``"miss"`` or ``"raise"``."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from ..errors import CacheUnavailable
from .base import CacheBackend, Unavailable

T = TypeVar("T")


class Policy:
    """How a binding runs an operation on its backend, and what a failure does.

    Every operation of :class:`~flask_ploy.Cache` but ``get`` and ``set``
    goes through :meth:`_call` (those two inline its first lines). A failure
    is counted and logged by the backend; the keys of a write that failed are
    remembered, and deleted on the server before they are served again; then
    a failure is a miss (the operation's default) unless ``on_error`` is
    ``"raise"`` or the operation is strict.
    """

    __slots__ = ("_namespace", "_raise", "backend", "name")

    def __init__(self, name: str, backend: CacheBackend, namespace: str, on_error: str) -> None:
        #: The binding name from ``ploy.yaml`` (``CACHE``).
        self.name = name
        #: The :class:`CacheBackend` shared by bindings on the same URL.
        self.backend = backend
        self._namespace = namespace
        self._raise = on_error == "raise"

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

        If this resource lost track of its invalidations, it is cleared first,
        a bounded step per call (a ``SCAN`` of 1,000 keys on Redis; after a
        failure, tried again once per cooldown); until the clear is done,
        every key of *reads* is blocked.
        """
        backend = self.backend
        pending = backend.pending
        now = time.monotonic()
        ns = self._namespace
        if pending.lost(ns):
            step = pending.begin_step(ns, now)
            if step is None:
                return list(reads)
            since, cursor = step
            try:
                cursor = backend.clear_step(ns, cursor)
            except BaseException:
                pending.end_step(ns, since, cursor, retry_at=now + backend.cooldown)
                raise
            pending.end_step(ns, since, cursor)
            if cursor:
                return list(reads)
        todo = pending.snapshot(reads)
        keys = {**pending.batch(), **todo} if pending.due("", now, backend.cooldown) else todo
        if not keys:
            return []
        done = set(backend.delete_keys(list(keys)))
        pending.discard({k: seq for k, seq in keys.items() if k in done})
        return [k for k in todo if k not in done]

    def _attempt(
        self,
        op: str,
        fn: Callable[..., T],
        *args: Any,
        reads: Collection[str] = (),
        writes: Collection[str] = (),
    ) -> tuple[bool, T | None]:
        """``(True, fn(*args))``, or ``(False, None)`` if the backend failed
        (counted, and the *writes* remembered, as :meth:`_call` does), in
        either mode: for callers with an answer of their own (``get_or_set``)."""
        try:
            return True, self._call(op, None, True, fn, *args, reads=reads, writes=writes)
        except CacheUnavailable:
            return False, None

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
