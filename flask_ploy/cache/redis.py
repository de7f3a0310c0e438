"""Redis through redis-py: ``redis://``, ``rediss://`` and ``unix://``, plus
what the Sentinel and Cluster backends share (defaults, scripts, errors and
URL parsing)."""

from __future__ import annotations

import difflib
import inspect
import queue
import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.exceptions

from .._urls import ambiguous_userinfo, redact_url, scrub, split_hosts
from .._validate import not_integer
from ..errors import PloyConfigError
from .base import CacheBackend, Fault, Unavailable

#: Client options flask-ploy sets unless ``PLOY_CACHE_OPTIONS`` overrides them.
#: Explicit timeouts keep a hung Redis from hanging requests; the pool is
#: bounded, and waits at most ``timeout`` seconds for a free connection.
REDIS_DEFAULTS: dict[str, Any] = {
    "socket_timeout": 0.5,
    "socket_connect_timeout": 0.5,
    "max_connections": 50,
    "health_check_interval": 0,
}

#: Creates the key with a TTL only when INCRBY creates it, atomically. Returns
#: the value as a string: Lua numbers are doubles and would round big counters.
INCR_WITH_TTL = """
local created = redis.call('EXISTS', KEYS[1]) == 0
redis.call('INCRBY', KEYS[1], ARGV[1])
if created then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return redis.call('GET', KEYS[1])
"""

#: Deletes the key only if it holds the caller's token: a lock released by its
#: owner only, never by a caller whose lock expired and was taken by another.
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: Removes the expiry of an existing key; 1 if the key exists (PERSIST alone
#: returns 0 for a key without expiry too).
PERSIST = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('PERSIST', KEYS[1])
return 1
"""

#: Exceptions of redis-py that mean the server failed (and flask-ploy's own
#: :class:`~flask_ploy.cache.base.Unavailable`, already counted).
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    Unavailable,
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
    OSError,  # should redis-py let a socket error through unwrapped
)
#: The subset that means the server is unreachable (opens the breaker).
TRIPPING: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.RedisClusterException,
    OSError,
)
#: Error replies of INCRBY that mean bad data, not a failing server.
BAD_COUNTER = ("value is not an integer", "would overflow", "WRONGTYPE")


def _option_hint(exc: BaseException) -> str:
    """For a misspelt connection option: where it came from, and the closest name."""
    m = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
    if m is None:
        return ""
    known = [
        *inspect.signature(redis.connection.AbstractConnection.__init__).parameters,
        *inspect.signature(redis.Connection.__init__).parameters,
        "max_connections",
        "timeout",
    ]
    close = difflib.get_close_matches(m.group(1), known, n=1)
    also = f"; did you mean {close[0]!r}?" if close else ""
    return f" (from PLOY_CACHE_OPTIONS or the URL's query){also}"


def classify(exc: BaseException) -> Fault:
    """What a redis-py exception means (see :data:`~flask_ploy.cache.base.Fault`)."""
    if isinstance(exc, redis.exceptions.MaxConnectionsError) or (
        isinstance(exc, redis.exceptions.ConnectionError)
        and isinstance(exc.__context__, queue.Empty)  # a BlockingConnectionPool's wait
    ):
        return "busy"
    if isinstance(exc, redis.exceptions.SlotNotCoveredError):
        return "error"  # a local lookup: one slot unserved, not a server down
    if isinstance(exc, TRIPPING):
        return "down"
    return "error"


def options_from_query(url: str) -> tuple[str, dict[str, Any]]:
    """Split ``?socket_timeout=1&...`` off a sentinel or cluster URL.

    :returns: The URL without its query, and the options with numbers and
        booleans converted.
    """
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


def parse_multi_host_url(
    url: str, options: Mapping[str, Any], default_port: int
) -> tuple[dict[str, Any], list[tuple[str, int]], list[str]]:
    """Parse ``scheme://[user:pw@]h1:p1[,h2:p2]/path?opts`` (Sentinel, Cluster).

    :returns: Client options (*options*, then the query, then the
        credentials), the hosts, and the path segments.
    """
    base, query_options = options_from_query(url)
    merged = {**options, **query_options}
    # Everything up to the last "@" is user info (a password may hold "/").
    rest = base.partition("://")[2]
    userinfo, at, hostpath = rest.rpartition("@")
    hostlist, _, path = hostpath.partition("/")
    try:
        user, password, hosts = split_hosts(
            f"{userinfo}@{hostlist}" if at else hostlist, default_port
        )
    except ValueError:
        raise PloyConfigError(
            f"cache URL {redact_url(url)}: a port is not a number; percent-encode special"
            " characters of a password (urllib.parse.quote(password, safe=''))"
        ) from None
    if password is not None:
        merged.setdefault("password", unquote(password))
    if user is not None:
        merged.setdefault("username", unquote(user))
    merged.setdefault("decode_responses", True)
    return merged, hosts, [p for p in path.split("/") if p]


class RedisBackend(CacheBackend):
    """Redis through redis-py: ``redis://``, ``rediss://`` (TLS) and ``unix://``.

    One bounded :class:`redis.BlockingConnectionPool` per URL: an operation
    that finds every connection busy waits up to the pool's ``timeout``
    (default: ``socket_timeout``), then counts as busy (:func:`classify`),
    not as a failure of the server. *options* go to the pool
    (``socket_timeout``, ``max_connections``, ``ssl_ca_certs``, ...);
    ``connection_pool`` hands in an existing pool instead. *client*
    is an existing redis-py client to use (flask-ploy never closes it).
    """

    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss", "unix")
    errors = REDIS_ERRORS

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
        self.owns_client = client is None and "connection_pool" not in (options or {})
        if client is None:
            client = self.make_client(url, {**REDIS_DEFAULTS, **(options or {})})
        #: The redis-py client.
        self.client = client
        self.decoded = bool(client.get_encoder().decode_responses)
        self.register_scripts(client)

    def register_scripts(self, client: Any) -> None:
        """Register the Lua scripts on *client* (their SHA1s; no round trip)."""
        self.incr_script = client.register_script(INCR_WITH_TTL)
        self.unlock_script = client.register_script(UNLOCK)
        self.persist_script = client.register_script(PERSIST)

    @classmethod
    def from_url(
        cls, url: str, *, cooldown: float = 1.0, options: Mapping[str, Any] | None = None, **_: Any
    ) -> RedisBackend:
        return cls(url, cooldown, options=options)

    @staticmethod
    def make_client(url: str, options: dict[str, Any]) -> Any:
        """The redis-py client for *url* and *options* (defaults applied).

        :raises PloyConfigError: The URL or an option is malformed.
        """
        pool = options.pop("connection_pool", None)
        if pool is not None:
            return redis.Redis(connection_pool=pool)
        options.setdefault("decode_responses", True)
        options.setdefault("timeout", options.get("socket_timeout") or 1.0)
        if ambiguous_userinfo(url):
            raise PloyConfigError(
                f"cache URL {redact_url(url)}: the user name or password holds '/', '?' or"
                " '#', which redis-py reads as the end of the host; percent-encode it"
                " (urllib.parse.quote(password, safe=''))"
            )
        try:
            pool = redis.BlockingConnectionPool.from_url(url, **options)
            # Connection options are only used when a connection opens: check
            # them now (no I/O), so a misspelt one stops the app at init_app.
            pool.connection_class(**pool.connection_kwargs)
        except (ValueError, TypeError) as exc:
            raise PloyConfigError(
                f"cache URL {redact_url(url)}: {scrub(str(exc), url)}{_option_hint(exc)}"
            ) from None
        return redis.Redis(connection_pool=pool)

    def classify(self, exc: BaseException) -> Fault:
        return classify(exc)

    def text(self, value: Any) -> str | None:
        """*value* as ``str`` (redis-py returns bytes unless decoding)."""
        if value is None or self.decoded:
            return value  # type: ignore[no-any-return]
        return value.decode()  # type: ignore[no-any-return]

    def get(self, key: str) -> str | None:
        value = self.client.get(key)
        if value is None or self.decoded:
            return value  # type: ignore[no-any-return]
        return value.decode()  # type: ignore[no-any-return]

    def set(self, key: str, value: str, ttl: int | None) -> None:
        self.client.set(key, value, ex=ttl)

    def delete(self, key: str) -> bool:
        return bool(self.client.delete(key))

    def delete_keys(self, keys: list[str]) -> list[str]:
        if keys:
            self.client.delete(*keys)
        return keys

    def incr(self, key: str, amount: int, ttl: int | None) -> int:
        """Only the "not an integer" and "overflow" replies (and WRONGTYPE)
        are bad data (:class:`ValueError`); any other error reply (OOM,
        READONLY, MISCONF, NOPERM, ...) is the server's and is raised as is."""
        try:
            if ttl is None:
                return int(self.client.incrby(key, amount))
            return int(self.incr_script(keys=[key], args=[amount, ttl]))
        except redis.exceptions.ResponseError as exc:
            message = str(exc)
            if not any(bad in message for bad in BAD_COUNTER):
                raise
            raise not_integer(key, self.peek(key), amount) from None

    def peek(self, key: str) -> str | None:
        """The value of *key* for an error message; ``None`` if not a string."""
        try:
            return self.text(self.client.get(key))
        except redis.exceptions.ResponseError:  # WRONGTYPE: not a string
            return None

    def add(self, key: str, value: str, ttl: int | None) -> bool:
        return bool(self.client.set(key, value, ex=ttl, nx=True))

    def get_many(self, keys: list[str]) -> list[str | None]:
        if not keys:
            return []
        return [self.text(v) for v in self.client.mget(keys)]

    def set_many(self, items: list[tuple[str, str]], ttl: int | None) -> None:
        if not items:
            return
        # MULTI/EXEC: one round trip, and all keys or none.
        pipe = self.client.pipeline(transaction=True)
        for key, value in items:
            pipe.set(key, value, ex=ttl)
        pipe.execute()

    def delete_many(self, keys: list[str]) -> int:
        return int(self.client.delete(*keys))

    def has(self, key: str) -> bool:
        return bool(self.client.exists(key))

    def ttl(self, key: str) -> float | None:
        ms = int(self.client.pttl(key))
        if ms == -1:
            return None
        return 0.0 if ms < 0 else ms / 1000

    def touch(self, key: str, ttl: int | None) -> bool:
        if ttl is None:
            return bool(self.persist_script(keys=[key]))
        return bool(self.client.expire(key, ttl))

    def lock(self, key: str, token: str, seconds: float) -> bool:
        return bool(self.client.set(key, token, px=max(1, int(seconds * 1000)), nx=True))

    def unlock(self, key: str, token: str) -> bool:
        return bool(self.unlock_script(keys=[key], args=[token]))

    def count(self, prefix: str) -> int:
        return len(set(self.client.scan_iter(match=scan_pattern(prefix), count=1000)))

    def clear(self, prefix: str) -> int:
        n = 0
        batch: list[str] = []
        for key in self.client.scan_iter(match=scan_pattern(prefix), count=1000):
            batch.append(key)
            if len(batch) >= 500:
                n += int(self.client.delete(*batch))
                batch = []
        return n + (int(self.client.delete(*batch)) if batch else 0)

    def clear_step(self, prefix: str, cursor: int) -> int:
        """One ``SCAN`` of about 1,000 keys, and a ``DELETE`` of those that match."""
        cursor, keys = self.client.scan(cursor, match=scan_pattern(prefix), count=1000)
        if keys:
            self.client.delete(*keys)
        return int(cursor)

    def ping(self) -> None:
        self.client.ping()

    def close(self) -> None:
        if self.owns_client:
            self.client.close()
            pool = getattr(self.client, "connection_pool", None)
            if pool is not None:
                pool.disconnect()


def scan_pattern(prefix: str) -> str:
    """A SCAN ``MATCH`` pattern for the keys starting with *prefix*."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"


def backend_for_client(client: Any, cooldown: float = 1.0) -> CacheBackend:
    """Wrap an existing redis-py client (``Redis`` or ``RedisCluster``).

    :raises TypeError: *client* is neither.
    """
    from redis.cluster import RedisCluster

    from .redis_cluster import RedisClusterBackend

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
