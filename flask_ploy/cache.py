"""The Cache binding and its backends.

A :class:`Cache` is what ``g.env.CACHE`` returns: it checks arguments, puts
the key in its resource's namespace, and applies the failure policy. The
storage itself is a :class:`CacheBackend`, chosen by URL scheme through
:data:`SCHEMES`, and shared by every binding whose resource maps to the same
URL (so one app has one connection pool per Redis URL).

Keys are stored as ``<PLOY_CACHE_KEY_PREFIX>:<resource>:<key>``. Neither the
prefix nor a resource name may contain ``:``, so no key of one resource or
app can name another's.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import redis
import redis.exceptions

from ._urls import redact_url, split_hosts
from ._validate import (
    INT_MAX,
    INT_MIN,
    check_amount,
    check_key,
    check_keys,
    check_mapping,
    check_ttl,
    check_value,
    is_counter,
    not_integer,
)
from .errors import CacheUnavailable, PloyConfigError

log = logging.getLogger("flask_ploy.cache")

#: URL scheme -> backend class. Filled by :class:`CacheBackend` subclasses.
SCHEMES: dict[str, type[CacheBackend]] = {}

#: Client options flask-ploy sets unless ``PLOY_CACHE_OPTIONS`` overrides them.
#: Explicit timeouts keep a hung Redis from hanging requests; the pool is
#: bounded, and waits at most ``timeout`` seconds for a free connection.
REDIS_DEFAULTS: dict[str, Any] = {
    "socket_timeout": 0.5,
    "socket_connect_timeout": 0.5,
    "max_connections": 50,
    "health_check_interval": 0,
}

#: Seconds between two log lines about failures of one backend.
LOG_INTERVAL = 10.0


class CacheBackend:
    """A cache store addressed by full keys. Subclasses register URL schemes.

    Subclasses implement the operations below on full keys (already
    prefixed and checked) and list the exceptions that mean "the backend
    failed" in :attr:`errors`. The circuit breaker state lives here, shared
    by every binding on this backend.
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
        #: Seconds to serve failures without trying, after a connection error.
        self.cooldown = cooldown
        #: ``time.monotonic()`` until which the breaker is open; 0 when closed.
        self.down_until = 0.0
        #: Operations that failed on the backend.
        self.failures = 0
        #: Operations not tried because the breaker was open.
        self.skipped = 0
        self._next_log = 0.0
        self._unlogged = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.display_url}>"

    # -- circuit breaker -------------------------------------------------

    def is_down(self) -> bool:
        """Whether the breaker is open; counts the skip. Call only when
        :attr:`down_until` is set."""
        if time.monotonic() < self.down_until:
            self.skipped += 1
            return True
        self.down_until = 0.0  # half-open: let the next operations try
        return False

    def trips(self, exc: BaseException) -> bool:
        """Whether *exc* means the server is unreachable (opens the breaker)."""
        return False

    def record_failure(self, op: str, exc: BaseException) -> None:
        """Count and log (at most every :data:`LOG_INTERVAL` s) a failure."""
        self.failures += 1
        now = time.monotonic()
        tripped = self.trips(exc)
        if tripped:
            self.down_until = now + self.cooldown
        if now < self._next_log:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more failures since the last message)" if self._unlogged else ""
        after = f"; not trying again for {self.cooldown:g} s" if tripped else ""
        log.warning(
            "Cache backend %s failed on %s: %s: %s%s%s",
            self.display_url,
            op,
            type(exc).__name__,
            exc,
            after,
            more,
        )
        self._next_log = now + LOG_INTERVAL
        self._unlogged = 0

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


# ---------------------------------------------------------------------------
# memory://


_memory_backends: weakref.WeakSet[MemoryBackend] = weakref.WeakSet()


def _reset_memory_locks() -> None:  # pragma: no cover - runs in forked children
    for backend in list(_memory_backends):
        backend._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_memory_locks)


class MemoryBackend(CacheBackend):
    """An in-process LRU cache: thread-safe, TTLs honoured, bounded.

    Each process has its own copy, so it suits development, tests and a
    single worker. At most *max_entries* are kept; the least recently used
    entry goes first. Expired entries are never returned.

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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(url, cooldown)
        self.max_entries = max_entries
        self.clock = clock
        self._data: OrderedDict[str, tuple[str, float | None]] = OrderedDict()
        self._lock = threading.Lock()
        _memory_backends.add(self)

    def __len__(self) -> int:
        return len(self._data)

    def _live(self, key: str, now: float) -> str | None:
        """The value of *key* if present and unexpired; caller holds the lock."""
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= now:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return item[0]

    def _put(self, key: str, value: str, ttl: int | None, now: float) -> None:
        value.encode()  # refuse what Redis would refuse (lone surrogates)
        self._data[key] = (value, None if ttl is None else now + ttl)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def get(self, key: str) -> str | None:
        key.encode()
        with self._lock:
            return self._live(key, self.clock())

    def set(self, key: str, value: str, ttl: int | None) -> None:
        key.encode()
        with self._lock:
            self._put(key, value, ttl, self.clock())

    def delete(self, key: str) -> bool:
        key.encode()
        with self._lock:
            present = self._live(key, self.clock()) is not None
            self._data.pop(key, None)
            return present

    def incr(self, key: str, amount: int, ttl: int | None) -> int:
        key.encode()
        with self._lock:
            now = self.clock()
            old = self._live(key, now)
            if old is None:
                self._put(key, str(amount), ttl, now)
                return amount
            if not is_counter(old) or not INT_MIN <= int(old) + amount <= INT_MAX:
                raise not_integer(key, old, amount)
            new = int(old) + amount
            self._data[key] = (str(new), self._data[key][1])
            return new

    def add(self, key: str, value: str, ttl: int | None) -> bool:
        key.encode()
        with self._lock:
            now = self.clock()
            if self._live(key, now) is not None:
                return False
            self._put(key, value, ttl, now)
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
            now = self.clock()
            for key, value in items:
                self._put(key, value, ttl, now)

    def clear(self, prefix: str) -> int:
        with self._lock:
            doomed = [k for k in self._data if k.startswith(prefix)]
            for key in doomed:
                del self._data[key]
            return len(doomed)


# ---------------------------------------------------------------------------
# Redis: redis://, rediss://, unix://, redis+sentinel://, redis+cluster://

# Creates the key with a TTL only when INCRBY creates it, atomically. Returns
# the value as a string: Lua numbers are doubles and would round big counters.
_INCR_WITH_TTL = """
local created = redis.call('EXISTS', KEYS[1]) == 0
redis.call('INCRBY', KEYS[1], ARGV[1])
if created then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return redis.call('GET', KEYS[1])
"""

_REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
)
_TRIPPING: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.RedisClusterException,
    OSError,
)


def _options_from_query(url: str) -> tuple[str, dict[str, Any]]:
    """Split ``?socket_timeout=1&...`` off a sentinel or cluster URL."""
    parts = urlsplit(url)
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query):
        if key.endswith("timeout") or key == "health_check_interval":
            options[key] = float(value)
        elif key in ("max_connections", "db"):
            options[key] = int(value)
        elif value.lower() in ("true", "false"):
            options[key] = value.lower() == "true"
        else:
            options[key] = value
    return parts._replace(query="").geturl(), options


def _multi_host_url(
    url: str, options: dict[str, Any], default_port: int
) -> tuple[dict[str, Any], list[tuple[str, int]], list[str]]:
    """Parse ``scheme://[user:pw@]h1:p1[,h2:p2]/path?opts`` for Sentinel and
    Cluster: client options (query, credentials), hosts, path segments."""
    base, query_options = _options_from_query(url)
    options = {**options, **query_options}
    parts = urlsplit(base)
    user, password, hosts = split_hosts(parts.netloc, default_port)
    if password is not None:
        options.setdefault("password", password)
    if user is not None:
        options.setdefault("username", user)
    options.pop("timeout", None)  # a BlockingConnectionPool option
    options.setdefault("decode_responses", True)
    return options, hosts, [p for p in parts.path.split("/") if p]


class RedisBackend(CacheBackend):
    """Redis through redis-py: ``redis://``, ``rediss://`` (TLS) and ``unix://``.

    One bounded :class:`redis.BlockingConnectionPool` per URL. *options* go
    to the pool (``socket_timeout``, ``max_connections``, ``ssl_ca_certs``,
    ...); ``connection_pool`` hands in an existing pool instead.
    """

    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss", "unix")
    errors = _REDIS_ERRORS

    def __init__(
        self,
        url: str,
        cooldown: float = 1.0,
        *,
        options: Mapping[str, Any] | None = None,
        client: Any = None,
    ) -> None:
        super().__init__(url, cooldown)
        # Close only what flask-ploy created, not a client or pool handed in.
        self._own_client = client is None and "connection_pool" not in (options or {})
        if client is None:
            client = self._make_client(url, {**REDIS_DEFAULTS, **(options or {})})
        self.client = client
        self._decoded = bool(client.get_encoder().decode_responses)
        self._incr_script = client.register_script(_INCR_WITH_TTL)
        if self._decoded:
            # The hot path: redis-py's own bound method, nothing in between.
            self.get = client.get  # type: ignore[method-assign]

    @staticmethod
    def _make_client(url: str, options: dict[str, Any]) -> Any:
        pool = options.pop("connection_pool", None)
        if pool is not None:
            return redis.Redis(connection_pool=pool)
        options.setdefault("decode_responses", True)
        options.setdefault("timeout", options.get("socket_timeout") or 1.0)
        try:
            pool = redis.BlockingConnectionPool.from_url(url, **options)
        except (ValueError, TypeError) as exc:
            raise PloyConfigError(f"cache URL {redact_url(url)}: {exc}") from None
        return redis.Redis(connection_pool=pool)

    def trips(self, exc: BaseException) -> bool:
        return isinstance(exc, _TRIPPING)

    def _str(self, value: Any) -> str | None:
        if value is None or self._decoded:
            return value  # type: ignore[no-any-return]
        return value.decode()  # type: ignore[no-any-return]

    def get(self, key: str) -> str | None:
        return self._str(self.client.get(key))

    def set(self, key: str, value: str, ttl: int | None) -> None:
        self.client.set(key, value, ex=ttl)

    def delete(self, key: str) -> bool:
        return bool(self.client.delete(key))

    def incr(self, key: str, amount: int, ttl: int | None) -> int:
        try:
            if ttl is None:
                return int(self.client.incrby(key, amount))
            return int(self._incr_script(keys=[key], args=[amount, ttl]))
        except redis.exceptions.ResponseError as exc:
            if "NOSCRIPT" in str(exc):
                raise
            raise not_integer(key, self._peek(key), amount) from None

    def _peek(self, key: str) -> str | None:
        try:
            return self._str(self.client.get(key))
        except redis.exceptions.ResponseError:  # WRONGTYPE: not a string
            return None

    def add(self, key: str, value: str, ttl: int | None) -> bool:
        return bool(self.client.set(key, value, ex=ttl, nx=True))

    def get_many(self, keys: list[str]) -> list[str | None]:
        if not keys:
            return []
        return [self._str(v) for v in self.client.mget(keys)]

    def set_many(self, items: list[tuple[str, str]], ttl: int | None) -> None:
        if not items:
            return
        # MULTI/EXEC: one round trip, and all keys or none.
        pipe = self.client.pipeline(transaction=True)
        for key, value in items:
            pipe.set(key, value, ex=ttl)
        pipe.execute()

    def clear(self, prefix: str) -> int:
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
        n = 0
        batch: list[str] = []
        for key in self.client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                n += self._delete_batch(batch)
                batch = []
        return n + (self._delete_batch(batch) if batch else 0)

    def _delete_batch(self, keys: list[str]) -> int:
        return int(self.client.delete(*keys))

    def ping(self) -> None:
        self.client.ping()

    def close(self) -> None:
        if self._own_client:
            self.client.close()
            pool = getattr(self.client, "connection_pool", None)
            if pool is not None:
                pool.disconnect()


class RedisSentinelBackend(RedisBackend):
    """Redis behind Sentinel: ``redis+sentinel://[:pw@]h1:p1[,h2:p2]/service[/db]``.

    The password in the URL authenticates to the master; pass
    ``sentinel_kwargs={"password": ...}`` in ``PLOY_CACHE_OPTIONS`` if the
    sentinels need one too.
    """

    schemes: ClassVar[tuple[str, ...]] = ("redis+sentinel",)

    @staticmethod
    def _make_client(url: str, options: dict[str, Any]) -> Any:
        from redis.sentinel import Sentinel

        options, hosts, path = _multi_host_url(url, options, 26379)
        if not hosts or not path:
            raise PloyConfigError(
                f"cache URL {redact_url(url)}: expected"
                " redis+sentinel://host:port[,host:port]/service_name[/db]"
            )
        service = path[0]
        if len(path) > 1:
            options["db"] = int(path[1])
        sentinel_kwargs = options.pop("sentinel_kwargs", None) or {
            "socket_timeout": options.get("socket_timeout"),
            "socket_connect_timeout": options.get("socket_connect_timeout"),
        }
        sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **options)  # type: ignore[no-untyped-call]
        return sentinel.master_for(service)  # type: ignore[no-untyped-call]


class RedisClusterBackend(RedisBackend):
    """Redis Cluster: ``redis+cluster://[:pw@]h1:p1[,h2:p2]``.

    Keys are not hash-tagged, so a resource spreads over every slot;
    ``get_many`` and ``set_many`` split their keys by slot (one round trip
    per node rather than one in all).
    """

    schemes: ClassVar[tuple[str, ...]] = ("redis+cluster",)

    @staticmethod
    def _make_client(url: str, options: dict[str, Any]) -> Any:
        from redis.backoff import NoBackoff
        from redis.cluster import ClusterNode, RedisCluster
        from redis.retry import Retry

        options, hosts, _ = _multi_host_url(url, options, 6379)
        if not hosts:
            raise PloyConfigError(
                f"cache URL {redact_url(url)}: expected redis+cluster://host:port[,host:port]"
            )
        options.pop("health_check_interval", None)
        options.setdefault("retry", Retry(NoBackoff(), 1))
        nodes = [ClusterNode(h, p) for h, p in hosts]  # type: ignore[no-untyped-call]
        return RedisCluster(startup_nodes=nodes, **options)

    def get_many(self, keys: list[str]) -> list[str | None]:
        if not keys:
            return []
        return [self._str(v) for v in self.client.mget_nonatomic(keys)]

    def set_many(self, items: list[tuple[str, str]], ttl: int | None) -> None:
        if not items:
            return
        pipe = self.client.pipeline()  # grouped by node, not atomic across slots
        for key, value in items:
            pipe.set(key, value, ex=ttl)
        pipe.execute()

    def clear(self, prefix: str) -> int:
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
        keys = list(self.client.scan_iter(match=pattern, count=1000))
        for key in keys:
            self.client.delete(key)
        return len(keys)

    def close(self) -> None:
        if self._own_client:
            self.client.close()


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
    if cls is MemoryBackend:
        return MemoryBackend(url, cooldown, max_entries=max_entries)
    return cls(url, cooldown, options=options)  # type: ignore[call-arg]


def backend_for_client(client: Any, cooldown: float = 1.0) -> CacheBackend:
    """Wrap an existing redis-py client (``Redis`` or ``RedisCluster``)."""
    from redis.cluster import RedisCluster

    if isinstance(client, RedisCluster):
        return RedisClusterBackend("redis+cluster://(client)", cooldown, client=client)
    if isinstance(client, redis.Redis):
        kwargs = client.connection_pool.connection_kwargs
        host = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return RedisBackend(f"redis://{host}", cooldown, client=client)
    raise TypeError(
        "cache_client must be a redis.Redis or redis.cluster.RedisCluster,"
        f" not {type(client).__name__}"
    )


# ---------------------------------------------------------------------------
# The binding


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

    __slots__ = ("_kfast", "_kmax", "_ns", "_raise", "_vmax", "backend", "name", "resource")

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
        self._ns = f"{prefix}:{resource}:"
        self._kmax = max_key_bytes
        self._kfast = max_key_bytes // 4  # up to this many chars, always fits
        self._vmax = max_value_bytes
        self._raise = on_error == "raise"

    def __repr__(self) -> str:
        return (
            f"<Cache {self.name} resource={self.resource!r} backend={self.backend.display_url!r}>"
        )

    # -- failure policy ---------------------------------------------------

    def _down(self, op: str, always_raise: bool = False) -> None:
        """The breaker is open: raise, or return so the caller serves a miss."""
        if self._raise or always_raise:
            raise CacheUnavailable(
                f"cache backend {self.backend.display_url} is unavailable"
                f" (failed within the last {self.backend.cooldown:g} s); {self.name}.{op} not tried"
            )

    def _failed(self, op: str, exc: BaseException, always_raise: bool = False) -> None:
        self.backend.record_failure(op, exc)
        if self._raise or always_raise:
            raise CacheUnavailable(
                f"cache backend {self.backend.display_url} failed on"
                f" {self.name}.{op}: {type(exc).__name__}: {exc}"
            ) from exc

    # -- operations -------------------------------------------------------

    def get(self, key: str) -> str | None:
        """Return the value of *key*, or ``None`` if it is missing or expired.

        Returns ``None`` too when the backend fails, unless
        ``PLOY_CACHE_ON_ERROR = "raise"``.
        """
        if type(key) is not str or not key or len(key) > self._kfast:
            check_key(key, self._kmax)
        backend = self.backend
        if backend.down_until and backend.is_down():
            self._down("get")
            return None
        try:
            return backend.get(self._ns + key)
        except backend.errors as exc:
            self._failed("get", exc)
            return None

    def set(self, key: str, value: str, ttl: int | timedelta | None = None) -> None:
        """Store *value* under *key*, replacing any value, for *ttl* seconds.

        :param ttl: Whole seconds >= 1, or a timedelta; ``None`` for no expiry.
        """
        if type(key) is not str or not key or len(key) > self._kfast:
            check_key(key, self._kmax)
        if type(value) is not str or len(value) * 4 > self._vmax:
            check_value(value, self._vmax)
        if ttl is not None:
            ttl = check_ttl(ttl)
        backend = self.backend
        if backend.down_until and backend.is_down():
            self._down("set")
            return
        try:
            backend.set(self._ns + key, value, ttl)
        except backend.errors as exc:
            self._failed("set", exc)

    def delete(self, key: str) -> bool:
        """Remove *key*; return whether it was present.

        Returns ``False`` when the backend fails in ``"miss"`` mode.
        """
        check_key(key, self._kmax)
        backend = self.backend
        if backend.down_until and backend.is_down():
            self._down("delete")
            return False
        try:
            return backend.delete(self._ns + key)
        except backend.errors as exc:
            self._failed("delete", exc)
            return False

    def incr(self, key: str, amount: int = 1, ttl: int | timedelta | None = None) -> int:
        """Add *amount* to the integer at *key* atomically; return the result.

        A missing key counts from 0. The value stays a decimal string that
        :meth:`get` reads. *ttl* applies only when this call creates the key,
        so ``incr(key, ttl=60)`` counts in fixed 60-second windows.

        :raises ValueError: The value is not a decimal integer, or the result
            leaves the 64-bit range; the value is left unchanged.
        :raises CacheUnavailable: The backend failed (in every mode).
        """
        check_key(key, self._kmax)
        amount = check_amount(amount)
        ttl = check_ttl(ttl)
        backend = self.backend
        if backend.down_until and backend.is_down():
            self._down("incr", always_raise=True)
        full = self._ns + key
        try:
            return backend.incr(full, amount, ttl)
        except backend.errors as exc:
            self._failed("incr", exc, always_raise=True)
            raise  # pragma: no cover - _failed raised
        except ValueError as exc:  # name the caller's key, not the namespaced one
            raise ValueError(str(exc).replace(repr(full), repr(key), 1)) from None

    def add(self, key: str, value: str, ttl: int | timedelta | None = None) -> bool:
        """Store *value* only if *key* is absent, atomically; return whether stored.

        :raises CacheUnavailable: The backend failed (in every mode).
        """
        check_key(key, self._kmax)
        check_value(value, self._vmax)
        ttl = check_ttl(ttl)
        backend = self.backend
        if backend.down_until and backend.is_down():
            self._down("add", always_raise=True)
        try:
            return backend.add(self._ns + key, value, ttl)
        except backend.errors as exc:
            self._failed("add", exc, always_raise=True)
            raise  # pragma: no cover - _failed raised

    def get_many(self, keys: Iterable[str]) -> dict[str, str | None]:
        """Return ``{key: value or None}`` for *keys*, in one round trip.

        All misses when the backend fails in ``"miss"`` mode.
        """
        keys = check_keys(keys, self._kmax)
        backend = self.backend
        if backend.down_until and backend.is_down():
            self._down("get_many")
            return dict.fromkeys(keys)
        ns = self._ns
        try:
            values = backend.get_many([ns + k for k in keys])
        except backend.errors as exc:
            self._failed("get_many", exc)
            return dict.fromkeys(keys)
        return dict(zip(keys, values))

    def set_many(self, mapping: Mapping[str, str], ttl: int | timedelta | None = None) -> None:
        """Store every pair of *mapping*, each for *ttl* seconds, in one round trip.

        On a single Redis the writes are atomic (MULTI/EXEC). Nothing is
        written if any key or value is invalid.
        """
        items = check_mapping(mapping, self._kmax, self._vmax)
        ttl = check_ttl(ttl)
        backend = self.backend
        if backend.down_until and backend.is_down():
            self._down("set_many")
            return
        ns = self._ns
        try:
            backend.set_many([(ns + k, v) for k, v in items], ttl)
        except backend.errors as exc:
            self._failed("set_many", exc)

    def clear(self) -> int:
        """Delete every key of this binding's resource; return how many.

        Scans the keyspace on Redis: meant for tests and maintenance, not
        for requests.
        """
        return self.backend.clear(self._ns)
