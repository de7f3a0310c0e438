"""``redis+cluster://``: Redis Cluster, with a circuit breaker per node."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import redis
import redis.exceptions

from .._urls import redact_url
from ..errors import PloyConfigError
from .base import Breaker, CacheBackend, Unavailable
from .redis import (
    REDIS_DEFAULTS,
    REDIS_ERRORS,
    RedisBackend,
    classify,
    parse_multi_host_url,
    scan_pattern,
)


class PoolTimeout(redis.exceptions.MaxConnectionsError):
    """No connection of the pool came free within its ``timeout``."""


class WaitingPool(redis.BlockingConnectionPool):
    """The pool of each Cluster node: a :class:`redis.BlockingConnectionPool`
    whose wait for a free connection ends in :class:`PoolTimeout`, a
    :class:`~redis.exceptions.MaxConnectionsError`, instead of a plain
    ``ConnectionError``: redis-py's Cluster client takes the latter for a
    failing node, and refreshes its topology and reconnects the node's
    connections on it. (redis:// and Sentinel keep redis-py's pool: this
    override costs about 0.2 us per command.)"""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except redis.exceptions.ConnectionError as exc:
            if isinstance(exc.__context__, queue.Empty):
                raise PoolTimeout(
                    f"all {self.max_connections} connections busy for {self.timeout:g} s"
                ) from None
            raise

    def disconnect_free_connections(self, moving_address_src: str | None = None) -> None:
        """Disconnect the idle connections, taking them out of the queue first.

        redis-py's version disconnects a snapshot of the queue while
        ``get_connection`` keeps handing connections out, so a thread could
        get one that is being disconnected (``AttributeError`` in the reply
        parser). The Cluster client calls this on every topology refresh,
        which follows any failing node.
        """
        if moving_address_src is not None:  # maintenance notifications: not used here
            super().disconnect_free_connections(moving_address_src)
            return
        taken: list[Any] = []
        try:
            while True:
                taken.append(self.pool.get_nowait())
        except queue.Empty:
            pass
        try:
            for connection in taken:
                if connection is not None:
                    connection.disconnect()
        finally:
            for connection in taken:
                self.pool.put_nowait(connection)


def cluster_factory(url: str, options: dict[str, Any]) -> Callable[[], Any]:
    """Check *url* and *options* now; return what makes the client later.

    The client waits for a free pooled connection (``timeout``), does not
    retry a command that timed out (so a hung node costs one
    ``socket_timeout``), and does not require every slot to be served (so
    one lost shard leaves the others working).

    :raises PloyConfigError: The URL names no host.
    """
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.retry import Retry

    options, hosts, _ = parse_multi_host_url(url, options, 6379)
    if not hosts:
        raise PloyConfigError(
            f"cache URL {redact_url(url)}: expected redis+cluster://host:port[,host:port]"
        )
    options.pop("health_check_interval", None)
    options.setdefault("retry", Retry(NoBackoff(), 0))
    options.setdefault("timeout", options.get("socket_timeout") or 1.0)
    options.setdefault("connection_pool_class", WaitingPool)
    options.setdefault("require_full_coverage", False)
    (host, port), rest = hosts[0], hosts[1:]
    # redis-py builds node pools from connection_pool_class only for a client
    # made from a URL; the other hosts are further startup nodes.
    first = f"redis://[{host}]:{port}" if ":" in host else f"redis://{host}:{port}"

    def connect() -> Any:
        nodes = [ClusterNode(h, p) for h, p in rest]  # type: ignore[no-untyped-call]
        return RedisCluster(url=first, startup_nodes=nodes, **options)

    return connect


class RedisClusterBackend(RedisBackend):
    """Redis Cluster: ``redis+cluster://[:pw@]h1:p1[,h2:p2]``.

    Connects on first use, not when the app starts. Keys are not
    hash-tagged, so a resource spreads over every slot. Each node has its
    own :class:`~flask_ploy.cache.base.Breaker`: a lost or hung shard costs
    its keys misses, and the keys of the other shards keep working.
    ``get_many``, ``set_many`` and pending deletes go node by node (one round
    trip per node); a failing node fails only its own keys.
    """

    schemes: ClassVar[tuple[str, ...]] = ("redis+cluster",)

    def __init__(
        self,
        url: str,
        cooldown: float = 1.0,
        *,
        options: Mapping[str, Any] | None = None,
        client: Any = None,
    ) -> None:
        CacheBackend.__init__(self, url, cooldown)  # RedisBackend's would connect
        merged = {**REDIS_DEFAULTS, **(options or {})}
        self.owns_client = client is None
        self._connect: Callable[[], Any] | None = None
        if client is None:
            self._connect = cluster_factory(url, merged)
            self.decoded = bool(merged.get("decode_responses", True))
        else:
            self.decoded = bool(client.get_encoder().decode_responses)
        self._client = client
        # Another thread's first use waits for the one connecting, as long as
        # that may take: a connect and a reply per startup node (redis-py's
        # own bounds), so a slow start is not "busy" for every other thread.
        per_node = float(merged.get("socket_connect_timeout") or 1.0) + float(
            merged.get("socket_timeout") or 1.0
        )
        self._connect_wait = per_node * max(1, url.count(",") + 1)
        self._connect_lock = threading.Lock()
        #: (when, error) of the last failed connect, for the threads that waited on it.
        self._connect_failure: tuple[float, BaseException] | None = None
        self._node_breakers: dict[str, Breaker] = {}
        if client is not None:
            self.register_scripts(client)

    @property
    def client(self) -> Any:
        """The ``RedisCluster`` client, made (and connected) on first use.

        :raises redis.exceptions.RedisClusterException: No startup node answered.
        """
        client = self._client
        if client is None:
            asked = time.monotonic()
            if not self._connect_lock.acquire(timeout=self._connect_wait):
                raise PoolTimeout("another thread is still connecting to the cluster")
            try:
                client = self._client
                if client is None:
                    failed = self._connect_failure
                    if failed is not None and failed[0] >= asked:
                        # The thread we waited for could not connect: its
                        # error, without a second wait on a dead cluster.
                        raise type(failed[1])(*failed[1].args)
                    assert self._connect is not None
                    try:
                        client = self._connect()
                    except BaseException as exc:
                        self._connect_failure = (time.monotonic(), exc)
                        raise
                    self.register_scripts(client)
                    self._client = client
            finally:
                self._connect_lock.release()
        return client

    @client.setter
    def client(self, value: Any) -> None:
        self._client = value

    def reset_locks(self) -> None:
        super().reset_locks()
        self._connect_lock = threading.Lock()

    def node_breaker(self, name: str) -> Breaker:
        """The breaker of the node ``host:port``."""
        breaker = self._node_breakers.get(name)
        if breaker is None:
            fresh = Breaker(f"{self.display_url} node {name}", self.cooldown)
            breaker = self._node_breakers.setdefault(name, fresh)
        return breaker

    def breakers(self) -> list[Breaker]:
        return [self.breaker, *self._node_breakers.values()]

    def _on_node(self, op: str, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` under the breaker of the node serving *key*."""
        node = self.client.get_node_from_key(key)
        return self.node_breaker(node.name).call(op, classify, REDIS_ERRORS, fn, *args)

    def _by_node(self, keys: list[str]) -> dict[str, list[str]]:
        client = self.client
        groups: dict[str, list[str]] = {}
        for key in keys:
            groups.setdefault(client.get_node_from_key(key).name, []).append(key)
        return groups

    def get(self, key: str) -> str | None:
        return self.text(self._on_node("get", key, self.client.get, key))

    def set(self, key: str, value: str, ttl: int | None) -> None:
        self._on_node("set", key, super().set, key, value, ttl)

    def delete(self, key: str) -> bool:
        return bool(self._on_node("delete", key, super().delete, key))

    def incr(self, key: str, amount: int, ttl: int | None) -> int:
        return int(self._on_node("incr", key, super().incr, key, amount, ttl))

    def add(self, key: str, value: str, ttl: int | None) -> bool:
        return bool(self._on_node("add", key, super().add, key, value, ttl))

    def has(self, key: str) -> bool:
        return bool(self._on_node("has", key, super().has, key))

    def ttl(self, key: str) -> float | None:
        left: float | None = self._on_node("ttl", key, super().ttl, key)
        return left

    def touch(self, key: str, ttl: int | None) -> bool:
        return bool(self._on_node("touch", key, super().touch, key, ttl))

    def lock(self, key: str, token: str, seconds: float) -> bool:
        return bool(self._on_node("lock", key, super().lock, key, token, seconds))

    def unlock(self, key: str, token: str) -> bool:
        return bool(self._on_node("unlock", key, super().unlock, key, token))

    def delete_many(self, keys: list[str]) -> int:
        """Node by node; keys of a failing node are not deleted (and remembered).

        :raises Unavailable: A node failed (naming its keys).
        """
        deleted = 0
        failed: list[str] = []
        error: Unavailable | None = None
        for name, group in self._by_node(keys).items():
            commands = [("delete", k) for k in group]
            try:
                done = self.node_breaker(name).call(
                    "delete_many", classify, REDIS_ERRORS, self._pipeline, commands
                )
            except Unavailable as exc:
                failed += group
                error = exc
                continue
            deleted += sum(int(n) for n in done)
        if error is not None:
            raise Unavailable(error.reason, keys=failed) from error
        return deleted

    def count(self, prefix: str) -> int:
        """Scan every node; not tried while a node's breaker is open.

        :raises Unavailable: A node's breaker is open.
        """
        down = [b.name for b in self._node_breakers.values() if b.open_until]
        if down:
            raise Unavailable(f"cache backend {', '.join(down)} unavailable; count not tried")
        return len(set(self.client.scan_iter(match=scan_pattern(prefix), count=1000)))

    def get_many(self, keys: list[str]) -> list[str | None]:
        if not keys:
            return []
        found: dict[str, Any] = {}
        failed: Unavailable | None = None
        for name, group in self._by_node(keys).items():
            breaker = self.node_breaker(name)
            try:
                values = breaker.call("get_many", classify, REDIS_ERRORS, self._mget, group)
            except Unavailable as exc:
                failed = exc
                continue
            found.update(zip(group, values))
        result = [self.text(found.get(k)) for k in keys]
        if failed is not None:
            raise Unavailable(failed.reason, values=result) from failed
        return result

    def _mget(self, keys: list[str]) -> list[Any]:
        return list(self.client.mget_nonatomic(keys))

    def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        pipe = self.client.pipeline()
        for name, *args in commands:
            getattr(pipe, name)(*args)
        return list(pipe.execute())

    def set_many(self, items: list[tuple[str, str]], ttl: int | None) -> None:
        if not items:
            return
        values = dict(items)
        failed: list[str] = []
        error: Unavailable | None = None
        for name, group in self._by_node([k for k, _ in items]).items():
            commands = [("set", k, values[k], ttl) for k in group]
            try:
                self.node_breaker(name).call(
                    "set_many", classify, REDIS_ERRORS, self._pipeline, commands
                )
            except Unavailable as exc:
                failed += group
                error = exc
        if error is not None:
            raise Unavailable(error.reason, keys=failed) from error

    def delete_keys(self, keys: list[str]) -> list[str]:
        """Delete *keys* node by node; keys of a failing node stay undeleted."""
        done: list[str] = []
        for name, group in self._by_node(keys).items():
            commands = [("delete", k) for k in group]
            try:
                self.node_breaker(name).call(
                    "delete", classify, REDIS_ERRORS, self._pipeline, commands
                )
            except Unavailable:
                continue
            done += group
        return done

    def clear_step(self, prefix: str, cursor: int) -> int:
        """The whole clear in one step: a cluster's SCAN has a cursor per node."""
        self.clear(prefix)
        return 0

    def clear(self, prefix: str) -> int:
        """Scan every node; not tried while a node's breaker is open.

        :raises Unavailable: A node's breaker is open.
        """
        down = [b.name for b in self._node_breakers.values() if b.open_until]
        if down:
            raise Unavailable(f"cache backend {', '.join(down)} unavailable; clear not tried")
        keys = list(self.client.scan_iter(match=scan_pattern(prefix), count=1000))
        for key in keys:
            self.client.delete(key)
        return len(keys)

    def close(self) -> None:
        if self.owns_client and self._client is not None:
            self._client.close()
