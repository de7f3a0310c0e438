"""What :meth:`Cache.get_or_set <flask_ploy.Cache.get_or_set>` stores and
decides: the envelope that keeps a computation's duration and expiry with
its value, the early-recomputation rule, and the lock's key.

A computed value is stored as ``HEADER + "<delta_ms>:<expires_ms>:" +
value``: the last computation's duration in milliseconds, and the Unix time
in milliseconds when the entry expires (``0``: never). Values stay strings;
nothing is pickled. :meth:`~flask_ploy.Cache.get` and
:meth:`~flask_ploy.Cache.get_many` return the value inside; ``set`` wraps a
value that itself starts with NUL, so that every value reads back exactly.
"""

from __future__ import annotations

import math
import random
import threading
import time
from typing import Any

#: How every envelope starts. NUL first: the binding checks one character.
HEADER = "\x00ploy:1:"
#: The first character of :data:`HEADER`: a stored value that starts with it
#: is an envelope.
MARK = HEADER[0]

#: Defaults of ``get_or_set``: seconds a caller waits for another's
#: computation (and the lock's lifetime), and the early-recomputation weight.
LOCK_TIMEOUT = 10.0
BETA = 1.0

#: :func:`early` draws no number while the expiry is this many weighted
#: computations away: the chance then is below ``e**-30``, about 1e-13.
FAR = 30.0

#: Seconds between two looks at the value while another caller computes it:
#: from the first, growing by half each time, up to the last.
POLL_FIRST = 0.002
POLL_MAX = 0.05


def wrap(value: str, delta: float = 0.0, ttl: int | None = None, now: float = 0.0) -> str:
    """*value* in an envelope: computed in *delta* seconds at Unix time *now*,
    for *ttl* seconds (``None``: no expiry)."""
    expires = 0 if ttl is None else int((now + ttl) * 1000)
    return f"{HEADER}{round(delta * 1000)}:{expires}:{value}"


def unwrap(raw: str) -> tuple[str, float, float]:
    """``(value, delta, expires)`` of a stored string: the duration of the
    computation in seconds and its expiry in Unix seconds (``0`` when
    unknown). A string that is not an envelope is its own value."""
    parts = raw.split(":", 4)  # "\x00ploy", "1", delta, expires, value
    if len(parts) != 5 or parts[0] != "\x00ploy" or parts[1] != "1":
        return raw, 0.0, 0.0
    try:
        return parts[4], int(parts[2]) / 1000, int(parts[3]) / 1000
    except ValueError:
        return raw, 0.0, 0.0


def early(delta: float, expires: float, beta: float, now: float | None = None) -> bool:
    """Whether to recompute now, before *expires*: the rule of Vattani,
    Chierichetti and Lowenstein, "Optimal Probabilistic Cache Stampede
    Prevention" (VLDB 2015): ``now - delta * beta * ln(rand()) >= expires``.

    The chance rises as the expiry nears, and sooner for a slower
    computation (*delta* seconds); *beta* above 1 favours earlier
    recomputation, below 1 later, 0 never. While the expiry is more than
    :data:`FAR` times ``delta * beta`` away, the chance (below ``e**-FAR``)
    is taken as 0 without drawing a number.
    """
    if now is None:
        now = time.time()
    weight = delta * beta
    if expires - now > FAR * weight:
        return False
    return now - weight * math.log(1.0 - random.random()) >= expires


def lock_key(namespace: str, key: str) -> str:
    """The lock of *key* in *namespace* (``prefix:resource:``): ``prefix:resource#lock:key``.

    No key of any resource can be it: resource names hold no ``#``.
    """
    return f"{namespace[:-1]}#lock:{key}"


class Flight:
    """One computation this process waits for: its value once it lands
    (``None`` if it failed), and an event set then."""

    __slots__ = ("landed", "leader", "value")

    def __init__(self) -> None:
        self.landed = threading.Event()
        self.value: str | None = None
        #: The thread computing it: a ``get_or_set`` of the same key inside
        #: its *compute* must not wait for itself.
        self.leader = threading.get_ident()


class Flights:
    """The missing keys threads of this process are filling, by full key.

    The first thread to miss a key (the leader) fills it, taking the
    backend's lock; the others in this process wait for its value without
    touching the backend, so a process polls the backend for a computation
    elsewhere once, not once per waiting thread. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, Flight] = {}

    def join(self, key: str) -> tuple[Flight, bool]:
        """The flight of *key*, and whether the caller leads it (a new one)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Flight()
            return flight, True

    def land(self, key: str, flight: Flight, value: str | None) -> None:
        """End *flight* with *value* (``None``: it failed) and wake its followers."""
        flight.value = value
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.landed.set()

    def reset_lock(self) -> None:
        """In a forked child: the parent's threads and flights are not here."""
        self._lock = threading.Lock()
        self._flights = {}


def check_flight(lock_timeout: Any, beta: Any) -> tuple[float, float]:
    """*lock_timeout* (seconds, more than 0, at most a day) and *beta* (0 or more).

    :raises TypeError: Not a number (or a bool).
    :raises ValueError: Out of range.
    """
    for name, value in (("lock_timeout", lock_timeout), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not 0 < lock_timeout <= 86_400:
        raise ValueError(
            f"lock_timeout must be more than 0 and at most 86400 seconds, got {lock_timeout}"
        )
    if not 0 <= beta < math.inf:
        raise ValueError(f"beta must be 0 or more, got {beta}")
    return float(lock_timeout), float(beta)
