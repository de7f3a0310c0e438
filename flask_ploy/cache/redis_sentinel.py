"""``redis+sentinel://``: Redis behind Sentinel."""

from __future__ import annotations

from typing import Any, ClassVar

import redis
from redis.sentinel import Sentinel, SentinelConnectionPool

from .._urls import redact_url
from ..errors import PloyConfigError
from .redis import RedisBackend, parse_multi_host_url


class WaitingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's pool for the master, made to wait for a free connection
    (up to ``timeout`` seconds) like redis://'s ``BlockingConnectionPool``
    instead of failing at once when ``max_connections`` are busy."""


class RedisSentinelBackend(RedisBackend):
    """Redis behind Sentinel: ``redis+sentinel://[:pw@]h1:p1[,h2:p2]/service[/db]``.

    The password in the URL authenticates to the master; pass
    ``sentinel_kwargs={"password": ...}`` in ``PLOY_CACHE_OPTIONS`` if the
    sentinels need one too. The pool of master connections is bounded by
    ``max_connections`` and waits up to ``timeout`` (default:
    ``socket_timeout``) for a free one. Connects on first use.
    """

    schemes: ClassVar[tuple[str, ...]] = ("redis+sentinel",)

    @staticmethod
    def make_client(url: str, options: dict[str, Any]) -> Any:
        options, hosts, path = parse_multi_host_url(url, options, 26379)
        if not hosts or not path:
            raise PloyConfigError(
                f"cache URL {redact_url(url)}: expected"
                " redis+sentinel://host:port[,host:port]/service_name[/db]"
            )
        service = path[0]
        if len(path) > 1:
            options["db"] = int(path[1])
        options.setdefault("timeout", options.get("socket_timeout") or 1.0)
        sentinel_kwargs = options.pop("sentinel_kwargs", None) or {
            "socket_timeout": options.get("socket_timeout"),
            "socket_connect_timeout": options.get("socket_connect_timeout"),
        }
        sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **options)  # type: ignore[no-untyped-call]
        return sentinel.master_for(service, connection_pool_class=WaitingSentinelPool)  # type: ignore[no-untyped-call]
