"""``redis+cluster://``: Redis Cluster."""

from __future__ import annotations

from typing import Any, ClassVar

from .._urls import redact_url
from ..errors import PloyConfigError
from .redis import RedisBackend, parse_multi_host_url, scan_pattern


class RedisClusterBackend(RedisBackend):
    """Redis Cluster: ``redis+cluster://[:pw@]h1:p1[,h2:p2]``.

    Keys are not hash-tagged, so a resource spreads over every slot;
    ``get_many`` and ``set_many`` split their keys by slot (one round trip
    per node rather than one in all).
    """

    schemes: ClassVar[tuple[str, ...]] = ("redis+cluster",)

    @staticmethod
    def make_client(url: str, options: dict[str, Any]) -> Any:
        from redis.backoff import NoBackoff
        from redis.cluster import ClusterNode, RedisCluster
        from redis.retry import Retry

        options, hosts, _ = parse_multi_host_url(url, options, 6379)
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
        return [self.text(v) for v in self.client.mget_nonatomic(keys)]

    def set_many(self, items: list[tuple[str, str]], ttl: int | None) -> None:
        if not items:
            return
        pipe = self.client.pipeline()  # grouped by node, not atomic across slots
        for key, value in items:
            pipe.set(key, value, ex=ttl)
        pipe.execute()

    def clear(self, prefix: str) -> int:
        keys = list(self.client.scan_iter(match=scan_pattern(prefix), count=1000))
        for key in keys:
            self.client.delete(key)
        return len(keys)

    def close(self) -> None:
        if self.owns_client:
            self.client.close()
