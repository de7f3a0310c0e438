"""What every cache backend shares: the interface on full keys, the scheme
registry, the circuit breaker, and the invalidations still to apply.

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
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, ClassVar, Literal, TypeVar

from .._urls import redact_url
from ..errors import CacheUnavailable, PloyConfigError
from .flight import Flights
from .pending import PendingDeletes

log = logging.getLogger("flask_ploy.cache")

T = TypeVar("T")

#: URL scheme -> backend class. Filled by :class:`CacheBackend` subclasses.
SCHEMES: dict[str, type[CacheBackend]] = {}

#: Seconds between two log lines about failures of one backend.
LOG_INTERVAL = 10.0

#: What an exception means (:meth:`CacheBackend.classify`): ``"down"`` the
#: server is unreachable or timed out (opens the breaker); ``"error"`` it
#: answered with an error; ``"busy"`` no free connection in the local pool,
#: or a SQLite file locked by another connection past the wait (not the
#: server's fault: neither a failure nor a reason to open the breaker).
Fault = Literal["down", "error", "busy"]

#: :meth:`Breaker.admit` results.
SKIP, GO, PROBE = 0, 1, 2


class _Faults(threading.local):
    kind: str | None = None


#: The failure the calling thread met last, set on failure paths only:
#: ``FAULTS.kind`` is a :data:`Fault` or ``"skipped"`` (refused by an open
#: breaker). :mod:`flask_ploy.observe` clears it before an operation and
#: reads it after, to tell a failure turned into a miss from a real miss.
FAULTS = _Faults()

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


class Unavailable(CacheUnavailable):
    """An operation was not done, and its failure is already counted.

    Raised by :meth:`Breaker.call` (and by backends that keep a breaker per
    node); the :class:`~flask_ploy.Cache` binding turns it into its policy
    (a miss, or :class:`~flask_ploy.CacheUnavailable` naming the binding).

    :param keys: The full keys concerned, if only some of the operation's.
    :param values: What could be read anyway (``get_many`` on a Cluster
        with one shard down), in the order of the keys asked for.
    :param fault: What the failure meant (:data:`Fault`), if known; a
        refusal by an open breaker is ``"down"``.
    """

    def __init__(
        self,
        reason: str,
        *,
        keys: Collection[str] | None = None,
        values: list[str | None] | None = None,
        fault: Fault | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.keys = keys
        self.values = values
        self.fault = fault


class Breaker:
    """The circuit breaker of one server (a backend, or one Cluster node).

    Closed, operations go through. A failure that means the server is
    unreachable (``"down"``) opens it: for *cooldown* seconds no operation
    is tried. Then it is half-open: exactly one caller at a time gets to
    probe the server (:data:`PROBE`) while the others keep being refused;
    the probe closes the breaker if the server answers, or opens it for
    another cooldown. Failures are logged at most once every
    :data:`LOG_INTERVAL` seconds. Thread-safe (and greenlet-safe under
    gevent's monkey patching).

    :param name: Names the server in messages (a redacted URL).
    :param cooldown: Seconds the breaker stays open; ``0`` never opens it.
    """

    __slots__ = (
        "_next_log",
        "_probe",
        "_unlogged",
        "busy",
        "cooldown",
        "failures",
        "name",
        "open_until",
        "skipped",
    )

    def __init__(self, name: str, cooldown: float) -> None:
        self.name = name
        self.cooldown = cooldown
        #: ``time.monotonic()`` until which the breaker is open; 0 when closed.
        self.open_until = 0.0
        #: Operations that failed on the server.
        self.failures = 0
        #: Operations not tried because the breaker was open.
        self.skipped = 0
        #: Operations that found no free pooled connection (or, on SQLite, the
        #: file's write lock) in time.
        self.busy = 0
        self._probe = threading.Lock()
        self._next_log = 0.0
        self._unlogged = 0

    def __repr__(self) -> str:
        state = "open" if self.open_until else "closed"
        return f"<Breaker {self.name} {state} failures={self.failures} skipped={self.skipped}>"

    def admit(self) -> int:
        """May an operation go to the server now?

        :returns: :data:`GO` (closed), :data:`PROBE` (the one trial of a
            half-open breaker: the caller must call :meth:`settle`), or
            :data:`SKIP` (open, or another caller is probing; counted).
        """
        if not self.open_until:
            return GO
        if time.monotonic() >= self.open_until and self._probe.acquire(blocking=False):
            until = self.open_until  # read again: a probe may have just ended
            if not until:
                self._probe.release()
                return GO
            if time.monotonic() >= until:
                return PROBE
            self._probe.release()
        self.skipped += 1
        FAULTS.kind = "skipped"
        return SKIP

    def reset_lock(self) -> None:
        """Forget a probe in flight (in a forked child, where it never ends)."""
        self._probe = threading.Lock()

    def settle(self, reached: bool | None) -> None:
        """End a probe. *reached*: the server answered (closes the breaker);
        ``False``: it did not (:meth:`record` has opened it again); ``None``:
        unknown (the probe was interrupted; the next caller probes)."""
        if reached:
            self.open_until = 0.0
        self._probe.release()

    def refusal(self, op: str) -> Unavailable:
        """The error for *op*, refused by :meth:`admit`."""
        return Unavailable(
            f"cache backend {self.name} is unavailable"
            f" (failed within the last {self.cooldown:g} s); {op} not tried",
            fault="down",
        )

    def record(self, op: str, exc: BaseException, fault: Fault) -> Unavailable:
        """Count *exc* (a failure of *op*), open the breaker if the server is
        ``"down"``, log (throttled), and return the error to raise."""
        now = time.monotonic()
        FAULTS.kind = fault
        if fault == "busy":
            self.busy += 1
            reason = f"cache backend {self.name} was busy for {op}: {exc}"
            after = " (a full pool or a held lock: not counted as a failure of the server)"
        else:
            self.failures += 1
            if fault == "down" and self.cooldown > 0:
                self.open_until = now + self.cooldown
            reason = f"cache backend {self.name} failed on {op}: {type(exc).__name__}: {exc}"
            tripped = fault == "down" and self.cooldown
            after = f"; not trying again for {self.cooldown:g} s" if tripped else ""
        if now < self._next_log:
            self._unlogged += 1
        else:
            more = f" ({self._unlogged} more since the last message)" if self._unlogged else ""
            log.warning("%s%s%s", reason.replace("cache", "Cache", 1), after, more)
            self._next_log = now + LOG_INTERVAL
            self._unlogged = 0
        return Unavailable(reason, fault=fault)

    def call(
        self,
        op: str,
        classify: Callable[[BaseException], Fault],
        errors: tuple[type[BaseException], ...],
        fn: Callable[..., T],
        *args: Any,
    ) -> T:
        """Run ``fn(*args)`` if :meth:`admit` allows, under this breaker.

        :raises Unavailable: Refused, or *fn* raised one of *errors*
            (counted, and classified by *classify*).
        """
        gate = self.admit()
        if not gate:
            raise self.refusal(op)
        reached: bool | None = None
        try:
            result = fn(*args)
            reached = True
            return result
        except Unavailable:
            reached = True  # a finer breaker (a Cluster node) refused or failed
            raise
        except errors as exc:
            fault = classify(exc)
            reached = {"down": False, "error": True, "busy": None}[fault]
            raise self.record(op, exc, fault) from exc
        except Exception:
            reached = True  # bad data (ValueError): the server answered
            raise
        finally:
            if gate == PROBE:
                self.settle(reached)


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
