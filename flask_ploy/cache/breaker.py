"""The circuit breaker of one server, and what a failure means.

:class:`Breaker` counts failures, opens on a server that is down, lets one
probe at a time through when half-open, and throttles its log lines.
:class:`Unavailable` is the error of an operation not done, already
counted. Both are re-exported by :mod:`flask_ploy.cache.base`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, Literal, TypeVar

from ..errors import CacheUnavailable

log = logging.getLogger("flask_ploy.cache")

T = TypeVar("T")

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
