"""What is particular to one cache backend: the memory LRU, the key layout on
Redis, slot spread on Cluster, TLS (rediss://), unix sockets, URL parsing
(the SQLite cache: test_cache_sqlite.py). Behaviour common to all backends
lives in test_cache_contract.py."""

from __future__ import annotations

import subprocess
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import g

from flask_ploy import PloyConfigError
from flask_ploy.cache import SCHEMES, Cache, MemoryBackend, RedisClusterBackend, make_backend
from flask_ploy.cache.pending import PendingDeletes

from . import servers


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_registry_knows_every_scheme() -> None:
    assert set(SCHEMES) == {
        "memory", "sqlite", "redis", "rediss", "unix", "redis+sentinel", "redis+cluster"
    }  # fmt: skip


def test_memory_lru_eviction() -> None:
    backend = MemoryBackend(max_entries=3)
    cache = Cache("CACHE", "default", backend)
    for k in "abc":
        cache.set(k, k)
    assert cache.get("a") == "a"  # a is now the most recently used
    cache.set("d", "d")  # evicts b, the least recently used
    assert cache.get_many(["a", "b", "c", "d"]) == {"a": "a", "b": None, "c": "c", "d": "d"}
    assert len(backend) == 3


def test_memory_bound_from_config(make_app: Any) -> None:
    app = make_app(PLOY_CACHE_URL="memory://", PLOY_CACHE_MAX_ENTRIES=100)
    with app.app_context():
        for i in range(250):
            g.env.CACHE.set(f"k{i}", "v")
        assert len(g.env.CACHE.backend) == 100
        assert g.env.CACHE.get("k249") == "v"
        assert g.env.CACHE.get("k0") is None


def test_memory_is_bounded_in_bytes(record_property: Any) -> None:
    """Issue 12 #16: 100 values of 1 MiB into a 10 MiB memory:// cache hold
    at most 10 MiB (as tracemalloc measures it), keeping the newest."""
    backend = MemoryBackend(max_bytes=10 * 2**20)
    cache = Cache("CACHE", "default", backend)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(100):
            cache.set(f"k{i}", f"{i:03d}" + "x" * (2**20 - 3))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    record_property(
        "ploy_figure",
        f"memory://, 100 values of 1 MiB under a 10 MiB bound: {held / 2**20:.1f} MiB held,"
        f" {len(backend)} entries kept",
    )
    assert held <= 10.5 * 2**20 and backend.bytes <= backend.max_bytes
    assert len(backend) == 9
    assert cache.get("k99") is not None and cache.get("k90") is None
    cache.set("k99", "x" * (11 * 2**20))  # larger than the whole bound: not kept
    assert cache.get("k99") is None and cache.get("k98") is not None


def test_memory_default_byte_bound(make_app: Any) -> None:
    app = make_app(PLOY_CACHE_URL="memory://")
    with app.app_context():
        assert g.env.CACHE.backend.max_bytes == 64 * 2**20


def test_pending_invalidations_survive_a_concurrent_failure() -> None:
    """A success forgets only the invalidations pending when it started: one
    that failed again meanwhile (another thread) is kept, and a resource
    clear covers only what was pending when it began."""
    pending = PendingDeletes(limit=3)
    pending.add(["ns:a", "ns:b"], "ns:")
    before = pending.snapshot(["ns:a", "ns:b", "ns:c"])
    assert set(before) == {"ns:a", "ns:b"}
    pending.add(["ns:a"], "ns:")  # failed again while the delete was in flight
    pending.discard(before)
    assert set(pending.snapshot(["ns:a", "ns:b"])) == {"ns:a"}
    pending.add(["ns:c", "ns:d", "ns:e"], "ns:")  # over the limit: the namespace is lost
    assert pending.lost("ns:") and len(pending) == 0
    since = pending.seq
    pending.add(["other:x"], "other:")
    pending.cleared("ns:", since)
    assert not pending.lost("ns:") and set(pending.snapshot(["other:x"])) == {"other:x"}


def test_memory_ttl_on_a_fake_clock() -> None:
    clock = FakeClock()
    cache = Cache("CACHE", "default", MemoryBackend(clock=clock))
    cache.set("k", "v", ttl=10)
    assert cache.incr("n", ttl=5) == 1
    assert cache.add("lock", "x", ttl=3)
    clock.now += 2.999
    assert cache.get_many(["k", "n", "lock"]) == {"k": "v", "n": "1", "lock": "x"}
    clock.now += 0.001
    assert cache.get("lock") is None  # expired exactly at its TTL
    assert cache.add("lock", "y")
    clock.now += 2
    assert cache.get("n") is None
    assert cache.incr("n") == 1  # a new counter, without TTL
    clock.now += 5
    assert cache.get("k") is None
    assert cache.get("n") == "1"
    assert cache.get("lock") == "y"


def test_memory_is_thread_safe() -> None:
    cache = Cache("CACHE", "default", MemoryBackend(max_entries=50))

    def work(i: int) -> None:
        for j in range(500):
            cache.set(f"{i}:{j % 80}", "v")
            cache.get(f"{(i + 1) % 8}:{j % 80}")
            cache.incr("shared")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get("shared") == "4000"
    assert len(cache.backend) <= 50  # type: ignore[arg-type]


def test_key_layout_on_redis(make_app: Any) -> None:
    servers.need(servers.redis_ok(), "Redis")
    prefix = f"lay{uuid.uuid4().hex[:8]}"
    app = make_app(PLOY_CACHE_URL=servers.REDIS_URL, PLOY_CACHE_KEY_PREFIX=prefix)
    raw = redis.Redis.from_url(servers.REDIS_URL, decode_responses=True)
    with app.app_context():
        g.env.SESSION_CACHE.set("user:1", "v", ttl=100)
        assert raw.get(f"{prefix}:sessions:user:1") == "v"
        assert 0 < raw.ttl(f"{prefix}:sessions:user:1") <= 100
        g.env.SESSION_CACHE.clear()


def test_cluster_spreads_a_resource_over_every_node(make_app: Any, cluster_url: str) -> None:
    app = make_app(PLOY_CACHE_URL=cluster_url, PLOY_CACHE_KEY_PREFIX=f"sp{uuid.uuid4().hex[:8]}")
    with app.app_context():
        c = g.env.CACHE
        data = {f"item:{i}": str(i) for i in range(300)}
        c.set_many(data, ttl=60)
        assert c.get_many(list(data)) == data  # across slots and nodes
        backend = c.backend
        assert isinstance(backend, RedisClusterBackend)
        per_node = [
            node.redis_connection.dbsize()  # type: ignore[union-attr]
            for node in backend.client.get_primaries()
        ]
        assert len(per_node) == 3
        assert all(n >= 50 for n in per_node), per_node  # no hash tag pins a resource to one slot
        assert c.clear() == 300


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: Any) -> Iterator[tuple[str, str]]:
    servers.need(servers.REDIS_SERVER is not None, "redis-server")
    d: Path = tmp_path_factory.mktemp("tls")
    ca_key, ca, key, csr, cert = (
        d / n for n in ("ca.key", "ca.crt", "srv.key", "srv.csr", "srv.crt")
    )
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        "/CN=ploy-test-ca",
    )
    run(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        "/CN=127.0.0.1",
    )
    run(
        "openssl",
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    port = servers.free_port()
    proc = servers.start_redis(
        [
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
        ],
        port=port,
    )
    yield f"rediss://127.0.0.1:{port}/0", str(ca)
    proc.kill()


def test_rediss_tls(make_app: Any, tls_redis: tuple[str, str]) -> None:
    url, ca = tls_redis
    app = make_app(PLOY_CACHE_URL=url, PLOY_CACHE_OPTIONS={"ssl_ca_certs": ca})
    with app.app_context():
        g.env.CACHE.set("secure", "yes", ttl=5)
        assert g.env.CACHE.get("secure") == "yes"
        assert g.env.CACHE.incr("n") == 1
    untrusted = make_app(PLOY_CACHE_URL=url, PLOY_CACHE_ON_ERROR="raise")
    from flask_ploy import CacheUnavailable

    with untrusted.app_context(), pytest.raises(CacheUnavailable, match="certificate"):
        g.env.CACHE.get("secure")  # the server's certificate is not trusted by default


def test_unix_socket(make_app: Any, tmp_path: Path) -> None:
    servers.need(servers.REDIS_SERVER is not None, "redis-server")
    sock = tmp_path / "redis.sock"
    proc = servers.start_redis(["--unixsocket", str(sock), "--unixsocketperm", "700"])
    try:
        app = make_app(PLOY_CACHE_URL=f"unix://{sock}?db=0")
        with app.app_context():
            g.env.CACHE.set("k", "over a unix socket")
            assert g.env.CACHE.get("k") == "over a unix socket"
        assert redis.Redis(unix_socket_path=str(sock)).dbsize() == 1
    finally:
        proc.kill()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis+sentinel://127.0.0.1:26379", "expected redis\\+sentinel://host:port"),
        ("redis+sentinel:///mymaster", "expected redis\\+sentinel://host:port"),
        ("redis+cluster://", "expected redis\\+cluster://host:port"),
        ("redis://127.0.0.1:6379/0?socket_timeout=abc", "cache URL redis://127.0.0.1:6379/0"),
        ("ftp://x", "unknown scheme 'ftp'"),
    ],
)
def test_bad_cache_urls(url: str, match: str) -> None:
    with pytest.raises(PloyConfigError, match=match):
        make_backend(url)


def test_url_password_goes_to_the_client_not_the_repr() -> None:
    backend = make_backend(
        "redis+sentinel://:s3cret@127.0.0.1:26379,127.0.0.2:26380/mymaster/2?socket_timeout=2"
    )
    assert "s3cret" not in repr(backend)
    kwargs = backend.client.connection_pool.connection_kwargs  # type: ignore[attr-defined]
    assert kwargs["password"] == "s3cret"
    assert kwargs["db"] == 2
    assert kwargs["socket_timeout"] == 2.0
    backend.close()
