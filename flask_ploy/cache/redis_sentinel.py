"""``redis+sentinel://``: Redis behind Sentinel."""

from __future__ import annotations

from typing import Any, ClassVar

from .._urls import redact_url
from ..errors import PloyConfigError
from .redis import RedisBackend, parse_multi_host_url


class RedisSentinelBackend(RedisBackend):
    """Redis behind Sentinel: ``redis+sentinel://[:pw@]h1:p1[,h2:p2]/service[/db]``.

    The password in the URL authenticates to the master; pass
    ``sentinel_kwargs={"password": ...}`` in ``PLOY_CACHE_OPTIONS`` if the
    sentinels need one too.
    """

    schemes: ClassVar[tuple[str, ...]] = ("redis+sentinel",)

    @staticmethod
    def make_client(url: str, options: dict[str, Any]) -> Any:
        from redis.sentinel import Sentinel

        options, hosts, path = parse_multi_host_url(url, options, 26379)
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
