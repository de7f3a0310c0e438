"""What every cache backend shares: the interface on full keys, the scheme
registry, and the circuit breaker.

A backend subclass lists its URL schemes in ``schemes`` and is registered
in :data:`SCHEMES` when the class is defined; :func:`make_backend` picks one
by the scheme of a URL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from .._urls import redact_url
from ..errors import PloyConfigError

log = logging.getLogger("flask_ploy.cache")

#: URL scheme -> backend class. Filled by :class:`CacheBackend` subclasses.
SCHEMES: dict[str, type[CacheBackend]] = {}

#: Seconds between two log lines about failures of one backend.
LOG_INTERVAL = 10.0


class Breaker:
    """The circuit breaker of one server.

    After a failure that means the server is unreachable, the breaker opens:
    for *cooldown* seconds operations are not tried (:meth:`allow` says
    no). Then it is half-open and the next operation tries again. Failures
    are logged at most once every :data:`LOG_INTERVAL` seconds.

    :param name: Names the server in log lines (a redacted URL).
    :param cooldown: Seconds the breaker stays open; ``0`` never opens it.
    """

    __slots__ = ("_next_log", "_unlogged", "cooldown", "failures", "name", "open_until", "skipped")

    def __init__(self, name: str, cooldown: float) -> None:
        self.name = name
        self.cooldown = cooldown
        #: ``time.monotonic()`` until which the breaker is open; 0 when closed.
        self.open_until = 0.0
        #: Operations that failed on the server.
        self.failures = 0
        #: Operations not tried because the breaker was open.
        self.skipped = 0
        self._next_log = 0.0
        self._unlogged = 0

    def __repr__(self) -> str:
        state = "open" if self.open_until else "closed"
        return f"<Breaker {self.name} {state} failures={self.failures} skipped={self.skipped}>"

    def allow(self) -> bool:
        """Whether an operation may go to the server; counts it if not."""
        if not self.open_until:
            return True
        if time.monotonic() < self.open_until:
            self.skipped += 1
            return False
        self.open_until = 0.0  # half-open: let the next operations try
        return True

    def failed(self, op: str, exc: BaseException, trips: bool) -> None:
        """Count a failure of *op*; open the breaker if *trips*; log (throttled)."""
        self.failures += 1
        now = time.monotonic()
        if trips and self.cooldown > 0:
            self.open_until = now + self.cooldown
        if now < self._next_log:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more failures since the last message)" if self._unlogged else ""
        after = f"; not trying again for {self.cooldown:g} s" if trips and self.cooldown else ""
        log.warning(
            "Cache backend %s failed on %s: %s: %s%s%s",
            self.name,
            op,
            type(exc).__name__,
            exc,
            after,
            more,
        )
        self._next_log = now + LOG_INTERVAL
        self._unlogged = 0


class CacheBackend:
    """A cache store addressed by full keys. Subclasses register URL schemes.

    Subclasses implement the operations below on full keys (already
    prefixed and checked), list the exceptions that mean "the backend
    failed" in :attr:`errors`, and say in :meth:`trips` which of them mean
    the server is unreachable. The :attr:`breaker` is shared by every
    binding on this backend.
    """

    #: URL schemes served by the subclass.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: Exceptions that mean the backend failed (as opposed to bad input).
    errors: tuple[type[BaseException], ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for scheme in cls.schemes:
            SCHEMES[scheme] = cls

    def __init__(self, url: str, cooldown: float = 1.0) -> None:
        #: The URL with passwords masked, for messages and ``flask ploy config``.
        self.display_url = redact_url(url)
        #: The circuit breaker of the server.
        self.breaker = Breaker(self.display_url, cooldown)

    @classmethod
    def from_url(
        cls, url: str, *, cooldown: float = 1.0, options: Mapping[str, Any] | None = None, **_: Any
    ) -> CacheBackend:
        """Make the backend for *url* (what :func:`make_backend` calls).

        Subclasses take what they need from the keyword arguments and ignore
        the rest; this one takes *cooldown* only.
        """
        return cls(url, cooldown)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.display_url}>"

    @property
    def cooldown(self) -> float:
        """Seconds the breaker stays open after a connection failure."""
        return self.breaker.cooldown

    @property
    def failures(self) -> int:
        """Operations that failed on the backend."""
        return self.breaker.failures

    @property
    def skipped(self) -> int:
        """Operations not tried because a breaker was open."""
        return self.breaker.skipped

    def trips(self, exc: BaseException) -> bool:
        """Whether *exc* means the server is unreachable (opens the breaker)."""
        return False

    def record_failure(self, op: str, exc: BaseException) -> None:
        """Count and log a failure of *op*; open the breaker if it :meth:`trips`."""
        self.breaker.failed(op, exc, self.trips(exc))

    # -- operations on full keys ------------------------------------------

    def get(self, key: str) -> str | None:
        raise NotImplementedError

    def set(self, key: str, value: str, ttl: int | None) -> None:
        raise NotImplementedError

    def delete(self, key: str) -> bool:
        raise NotImplementedError

    def incr(self, key: str, amount: int, ttl: int | None) -> int:
        """Add *amount*; raise :class:`ValueError` if the value is not an int."""
        raise NotImplementedError

    def add(self, key: str, value: str, ttl: int | None) -> bool:
        raise NotImplementedError

    def get_many(self, keys: list[str]) -> list[str | None]:
        raise NotImplementedError

    def set_many(self, items: list[tuple[str, str]], ttl: int | None) -> None:
        raise NotImplementedError

    def clear(self, prefix: str) -> int:
        """Delete every key starting with *prefix*; return how many (tests, CLI)."""
        raise NotImplementedError

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
) -> CacheBackend:
    """Create the backend for *url*, chosen by its scheme in :data:`SCHEMES`.

    :raises PloyConfigError: The scheme is unknown or the URL is malformed.
    """
    if not isinstance(url, str):
        raise PloyConfigError(f"cache URL must be a str, not {type(url).__name__}")
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    cls = SCHEMES.get(scheme)
    if cls is None:
        known = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        raise PloyConfigError(
            f"cache URL {redact_url(url)}: unknown scheme {scheme!r}; use one of {known}"
        )
    return cls.from_url(url, cooldown=cooldown, options=options, max_entries=max_entries)
