"""The Cache binding and its backends.

A :class:`Cache` is what ``g.env.CACHE`` returns: it checks arguments, puts
the key in its resource's namespace, and applies the failure policy. The
storage itself is a :class:`CacheBackend`, chosen by URL scheme through
:data:`SCHEMES`, and shared by every binding whose resource maps to the same
URL (so one app has one connection pool per Redis URL).

Keys are stored as ``<PLOY_CACHE_KEY_PREFIX>:<resource>:<key>``. Neither the
prefix nor a resource name may contain ``:``, so no key of one resource or
app can name another's.

Modules: :mod:`~flask_ploy.cache.base` (interface, registry, breaker),
``memory``, ``sqlite`` (with ``sqlite_sql``), ``redis``, ``redis_sentinel``,
``redis_cluster`` (one backend each), ``policy`` (the failure policy),
``binding`` (:class:`Cache`), ``flight`` (what ``get_or_set`` stores and
decides) and ``cached`` (``@ploy.cached``).
"""

from __future__ import annotations

from . import base, redis
from .base import LOG_INTERVAL, Breaker, CacheBackend, make_backend
from .binding import Cache
from .memory import MemoryBackend
from .redis import RedisBackend, backend_for_client
from .redis_cluster import RedisClusterBackend
from .redis_sentinel import RedisSentinelBackend
from .sqlite import SQLiteBackend

#: URL scheme -> backend class. Filled by :class:`CacheBackend` subclasses.
SCHEMES = base.SCHEMES

#: Client options flask-ploy sets unless ``PLOY_CACHE_OPTIONS`` overrides them.
#: Explicit timeouts keep a hung Redis from hanging requests; the pool is
#: bounded, and waits at most ``timeout`` seconds for a free connection.
REDIS_DEFAULTS = redis.REDIS_DEFAULTS

__all__ = [
    "LOG_INTERVAL",
    "REDIS_DEFAULTS",
    "SCHEMES",
    "Breaker",
    "Cache",
    "CacheBackend",
    "MemoryBackend",
    "RedisBackend",
    "RedisClusterBackend",
    "RedisSentinelBackend",
    "SQLiteBackend",
    "backend_for_client",
    "make_backend",
]
