"""What every cache backend shares: the interface on full keys, the scheme
registry, and the invalidations still to apply (the circuit breaker is in
:mod:`flask_ploy.cache.breaker`, re-exported here).

A backend subclass lists its URL schemes in ``schemes`` and is registered
in :data:`SCHEMES` when the class is defined; :func:`make_backend` picks one
by the scheme of a URL.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from .._urls import redact_url
from ..errors import PloyConfigError
from .breaker import FAULTS, GO, LOG_INTERVAL, PROBE, SKIP, Breaker, Fault, Unavailable
from .flight import Flights
from .pending import PendingDeletes

log = logging.getLogger("flask_ploy.cache")


#: URL scheme -> backend class. Filled by :class:`CacheBackend` subclasses.
SCHEMES: dict[str, type[CacheBackend]] = {}

__all__ = [
    "FAULTS", "GO", "LOG_INTERVAL", "PROBE", "SCHEMES", "SKIP", "Breaker", "CacheBackend",
    "Fault", "Unavailable", "make_backend",
]  # fmt: skip

# Backends whose locks a forked child must replace: a lock held by another
# thread at fork time (a probe in flight) would be held forever in the child.
_backends: weakref.WeakSet[CacheBackend] = weakref.WeakSet()


def _reset_locks() -> None:  # pragma: no cover - runs in forked children
    for backend in list(_backends):
        backend.reset_locks()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks)

#: Seconds a process's exit may spend applying its remembered invalidations.
EXIT_FLUSH_SECONDS = 2.0


@atexit.register
def _flush_at_exit() -> None:
    """At interpreter exit (a gunicorn worker recycled, a deploy): apply the
    invalidations this process still remembers, within
    :data:`EXIT_FLUSH_SECONDS` in all, so they are not lost with it."""
    deadline = time.monotonic() + EXIT_FLUSH_SECONDS
    for backend in list(_backends):
        if backend.pending:
            backend.flush_pending(deadline)


class CacheBackend:
    """A cache store addressed by full keys. Subclasses register URL schemes.

    Subclasses implement the operations below on full keys (already
    prefixed and checked), list the exceptions that mean "the backend
    failed" in :attr:`errors`, and say what each means in :meth:`classify`.
    The :attr:`breaker` and :attr:`pending` invalidations are shared by
    every binding on this backend.
    """

    #: URL schemes served by the subclass.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: Exceptions that mean the backend failed (as opposed to bad input).
    errors: tuple[type[BaseException], ...] = (Unavailable,)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for scheme in cls.schemes:
            SCHEMES[scheme] = cls

    def __init__(self, url: str, cooldown: float = 1.0) -> None:
        #: The URL with passwords masked, for messages and ``flask ploy config``.
        self.display_url = redact_url(url)
        #: The circuit breaker of the server.
        self.breaker = Breaker(self.display_url, cooldown)
        #: Invalidations to apply before their keys are served again.
        self.pending = PendingDeletes()
        #: True while the breaker is open or invalidations are pending: the
        #: bindings then take their careful path (one attribute on the hot path).
        self.degraded = False
        self._degraded_lock = threading.Lock()
        #: The keys this process's threads are computing (``get_or_set``).
        self.flights = Flights()
        _backends.add(self)

    @classmethod
    def from_url(
        cls, url: str, *, cooldown: float = 1.0, options: Mapping[str, Any] | None = None, **_: Any
    ) -> CacheBackend:
        """Make the backend for *url* (what :func:`make_backend` calls).

        Subclasses take what they need from the keyword arguments and ignore
        the rest; this one takes *cooldown* only. Opens no connection.
        """
        return cls(url, cooldown)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.display_url}>"

    def reset_locks(self) -> None:
        """Replace every lock (called in a forked child)."""
        self._degraded_lock = threading.Lock()
        self.pending.reset_lock()
        self.flights.reset_lock()
        for breaker in self.breakers():
            breaker.reset_lock()

    def breakers(self) -> list[Breaker]:
        """Every breaker of this backend (one per Cluster node, plus its own)."""
        return [self.breaker]

    @property
    def cooldown(self) -> float:
        """Seconds a breaker stays open after a connection failure."""
        return self.breaker.cooldown

    @property
    def failures(self) -> int:
        """Operations that failed on the backend."""
        return sum(b.failures for b in self.breakers())

    @property
    def skipped(self) -> int:
        """Operations not tried because a breaker was open."""
        return sum(b.skipped for b in self.breakers())

    @property
    def busy(self) -> int:
        """Operations that found no free pooled connection (or lock) in time."""
        return sum(b.busy for b in self.breakers())

    def classify(self, exc: BaseException) -> Fault:
        """What *exc*, one of :attr:`errors`, means; see :data:`Fault`."""
        return "error"

    def record_failure(self, op: str, exc: BaseException) -> Unavailable:
        """Count and log a failure of *op* on :attr:`breaker`; return the error."""
        if isinstance(exc, Unavailable):
            return exc  # counted where it happened
        error = self.breaker.record(op, exc, self.classify(exc))
        if self.breaker.open_until:
            self.update_degraded()
        return error

    def update_degraded(self) -> None:
        """Recompute :attr:`degraded` (after the breaker or :attr:`pending` changed)."""
        with self._degraded_lock:
            self.degraded = bool(self.breaker.open_until or self.pending)

    def remember(self, keys: Iterable[str], namespace: str) -> None:
        """Add *keys* to :attr:`pending` and take the careful path."""
        with self._degraded_lock:
            self.pending.add(keys, namespace)
            self.degraded = True

    # -- operations on full keys ------------------------------------------

    def get(self, key: str) -> str | None:
        raise NotImplementedError

    def set(self, key: str, value: str, ttl: int | None) -> None:
        raise NotImplementedError

    def delete(self, key: str) -> bool:
        raise NotImplementedError

    def flush_pending(self, deadline: float) -> int:
        """Apply the remembered invalidations now, in batches, until
        ``time.monotonic()`` reaches *deadline* or the server fails; return
        how many keys are still pending (logged as a warning if any, or if a
        resource still had to be cleared). Never raises."""
        pending = self.pending
        try:
            while len(pending) and time.monotonic() < deadline:
                keys = pending.batch()
                done = set(self.delete_keys(list(keys)))
                pending.discard({k: seq for k, seq in keys.items() if k in done})
                if not done:
                    break
        except Exception as exc:  # at exit: report, never raise
            log.warning("Cache backend %s failed applying invalidations: %s", self.display_url, exc)
        left = len(pending)
        if pending:
            log.warning(
                "Cache backend %s: this process ends with %d invalidation(s) not applied%s;"
                " those keys may be served stale until they expire",
                self.display_url,
                left,
                " and a resource not cleared" if not left else "",
            )
        return left

    def delete_keys(self, keys: list[str]) -> list[str]:
        """Delete *keys* (pending invalidations); return those deleted.

        :raises: One of :attr:`errors` if the server failed.
        """
        for key in keys:
            self.delete(key)
        return keys

    def incr(self, key: str, amount: int, ttl: int | None) -> int:
        """Add *amount*; raise :class:`ValueError` if the value is not an int."""
        raise NotImplementedError

    def add(self, key: str, value: str, ttl: int | None) -> bool:
        raise NotImplementedError

    def get_many(self, keys: list[str]) -> list[str | None]:
        raise NotImplementedError

    def set_many(self, items: list[tuple[str, str]], ttl: int | None) -> None:
        raise NotImplementedError

    def delete_many(self, keys: list[str]) -> int:
        """Delete *keys* (distinct); return how many were present and unexpired."""
        return sum(self.delete(key) for key in keys)

    def has(self, key: str) -> bool:
        """Whether *key* is present and unexpired."""
        return self.get(key) is not None

    def ttl(self, key: str) -> float | None:
        """Seconds until *key* expires (more than 0); ``None`` if it never
        does; ``0.0`` if it is missing or expired."""
        raise NotImplementedError

    def touch(self, key: str, ttl: int | None) -> bool:
        """Make *key* expire *ttl* seconds from now (``None``: never), keeping
        its value; return whether it was present and unexpired."""
        raise NotImplementedError

    def lock(self, key: str, token: str, seconds: float) -> bool:
        """Store *token* under *key* for *seconds* (a fraction allowed) only
        if *key* is absent or expired, atomically; return whether stored."""
        raise NotImplementedError

    def unlock(self, key: str, token: str) -> bool:
        """Delete *key* only if it holds *token*, atomically; return whether deleted."""
        raise NotImplementedError

    def count(self, prefix: str) -> int:
        """The number of unexpired keys starting with *prefix* (tests, CLI)."""
        raise NotImplementedError

    def clear(self, prefix: str) -> int:
        """Delete every key starting with *prefix*; return how many (tests, CLI)."""
        raise NotImplementedError

    def clear_step(self, prefix: str, cursor: int) -> int:
        """One bounded step of clearing the keys starting with *prefix*:
        start with *cursor* 0, call again with what it returns until that is
        0. The default clears everything in one step; a backend whose
        :meth:`clear` may take long (a scan of a big keyspace) does a slice
        per step, so no single request pays for all of it."""
        self.clear(prefix)
        return 0

    def ping(self) -> None:
        """Round-trip to the backend; raise one of :attr:`errors` on failure."""

    def close(self) -> None:
        """Release connections. The backend must not be used afterwards."""


def make_backend(
    url: str,
    *,
    options: Mapping[str, Any] | None = None,
    cooldown: float = 1.0,
    max_entries: int = 10_000,
    max_bytes: int | None = None,
) -> CacheBackend:
    """Create the backend for *url*, chosen by its scheme in :data:`SCHEMES`.

    Opens no connection: the first operation does.

    :param max_entries: ``memory://`` and ``sqlite:`` only: the most entries kept.
    :param max_bytes: ``memory://`` and ``sqlite:`` only: the most bytes kept
        (default: the backend's own, 64 MiB).
    :raises PloyConfigError: The scheme is unknown or the URL is malformed.
    """
    if not isinstance(url, str):
        raise PloyConfigError(f"cache URL must be a str, not {type(url).__name__}")
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    cls = SCHEMES.get(scheme)
    if cls is None:
        known = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        written = url.partition(":")[0].lower() if "://" not in url else scheme
        hint = (
            "; a SQLite file is sqlite:///relative/path or sqlite:////absolute/path"
            if written == "sqlite"
            else ""
        )
        raise PloyConfigError(
            f"cache URL {redact_url(url)}: unknown scheme {scheme!r}; use one of {known}{hint}"
        )
    extra = {} if max_bytes is None else {"max_bytes": max_bytes}
    return cls.from_url(url, cooldown=cooldown, options=options, max_entries=max_entries, **extra)
