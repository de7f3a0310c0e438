"""The cache failure policy: misses instead of errors, bounded latency on a
hung or dead Redis, a circuit breaker, and recovery without a restart."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, g

from flask_ploy import CacheUnavailable, PloyError

from . import servers


@pytest.fixture
def hung() -> Iterator[servers.HungServer]:
    server = servers.HungServer()
    yield server
    server.close()


def cache_view_app(make_app: Any, url: str, **config: Any) -> Flask:
    app = make_app(PLOY_CACHE_URL=url, PLOY_CACHE_KEY_PREFIX=f"f{uuid.uuid4().hex[:8]}", **config)

    @app.get("/page")
    def page() -> Any:
        cached = g.env.CACHE.get("page")
        if cached is None:
            cached = "rendered"
            g.env.CACHE.set("page", cached, ttl=30)
        return {"page": cached}

    return app


def test_refused_connections_serve_misses(make_app: Any, caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="flask_ploy")
    app = make_app(PLOY_CACHE_URL=f"redis://127.0.0.1:{servers.free_port()}/0")
    with app.app_context():
        c = g.env.CACHE
        assert c.get("k") is None
        c.set("k", "v")
        assert c.delete("k") is False
        assert c.get_many(["a", "b"]) == {"a": None, "b": None}
        c.set_many({"a": "1"})
        with pytest.raises(CacheUnavailable, match="incr"):
            c.incr("n")
        with pytest.raises(CacheUnavailable, match="add"):
            c.add("lock", "me")
    stats = app.extensions["ploy"].cache_stats(app)
    (counts,) = stats.values()
    assert counts["failures"] >= 1
    assert counts["failures"] + counts["skipped"] == 7
    warnings = [r for r in caplog.records if r.name == "flask_ploy.cache"]
    assert len(warnings) == 1  # rate-limited: one line, not one per operation
    assert "ConnectionError" in warnings[0].getMessage()


def test_raise_policy(make_app: Any) -> None:
    app = make_app(
        PLOY_CACHE_URL=f"redis://127.0.0.1:{servers.free_port()}/0", PLOY_CACHE_ON_ERROR="raise"
    )
    with app.app_context():
        c = g.env.CACHE
        for op, args in [
            ("get", ("k",)),
            ("set", ("k", "v")),
            ("delete", ("k",)),
            ("get_many", (["k"],)),
            ("set_many", ({"k": "v"},)),
            ("incr", ("k",)),
            ("add", ("k", "v")),
        ]:
            with pytest.raises(CacheUnavailable) as info:
                getattr(c, op)(*args)
            assert isinstance(info.value, PloyError)
            assert op in str(info.value)


def test_requests_never_fail_on_a_dead_redis(make_app: Any, own_redis: servers.RedisProc) -> None:
    app = cache_view_app(make_app, own_redis.url)
    client = app.test_client()
    assert client.get("/page").json == {"page": "rendered"}
    own_redis.kill()
    statuses = [client.get("/page").status_code for _ in range(20)]
    assert statuses == [200] * 20


def test_hung_redis_bounds_latency_and_recovers(make_app: Any, hung: servers.HungServer) -> None:
    """A Redis that accepts and never answers: only the first request pays the
    timeout; when a real Redis takes the port, the cache works within 2 s."""
    app = cache_view_app(make_app, hung.url)
    client = app.test_client()
    start = time.monotonic()
    for _ in range(50):
        assert client.get("/page").status_code == 200
    total = time.monotonic() - start
    print(f"\n50 requests on a hung Redis: {total:.3f} s")
    assert total < 2.0
    port = hung.port
    hung.close()
    redis_proc = servers.start_redis(port=port)
    try:
        back = time.monotonic()
        while time.monotonic() - back < 5:
            with app.app_context():
                g.env.CACHE.set("probe", "ok")
                if g.env.CACHE.get("probe") == "ok":
                    break
            time.sleep(0.02)
        recovered = time.monotonic() - back
        print(f"cache working again {recovered:.3f} s after Redis returned")
        assert recovered < 2.0
    finally:
        redis_proc.kill()


def test_only_the_first_request_pays_the_timeout(make_app: Any, hung: servers.HungServer) -> None:
    app = cache_view_app(make_app, hung.url)
    client = app.test_client()
    times = []
    for _ in range(10):
        t = time.monotonic()
        client.get("/page")
        times.append(time.monotonic() - t)
    assert times[0] >= 0.4  # the socket timeout (0.5 s by default)
    assert max(times[1:]) < 0.25  # the breaker is open: no waiting for the 0.5 s timeout
    stats = app.extensions["ploy"].cache_stats(app)
    (counts,) = stats.values()
    assert counts["skipped"] >= 18


def test_recovers_after_redis_restarts(make_app: Any, own_redis: servers.RedisProc) -> None:
    app = cache_view_app(make_app, own_redis.url, PLOY_CACHE_COOLDOWN=0.5)
    with app.app_context():
        g.env.CACHE.set("k", "v")
        own_redis.kill()
        assert g.env.CACHE.get("k") is None
        own_redis.restart()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            g.env.CACHE.set("k", "again")
            if g.env.CACHE.get("k") == "again":
                break
            time.sleep(0.05)
        assert g.env.CACHE.get("k") == "again"
        assert g.env.CACHE.incr("n") == 1


def test_timeouts_are_configurable(make_app: Any, hung: servers.HungServer) -> None:
    app = make_app(PLOY_CACHE_URL=hung.url, PLOY_CACHE_OPTIONS={"socket_timeout": 0.1})
    with app.app_context():
        t = time.monotonic()
        assert g.env.CACHE.get("k") is None
        assert time.monotonic() - t < 0.4


def test_a_bad_value_is_not_an_outage(make_app: Any) -> None:
    servers.need(servers.redis_ok(), "Redis")
    app = make_app(
        PLOY_CACHE_URL=servers.REDIS_URL, PLOY_CACHE_KEY_PREFIX=f"f{uuid.uuid4().hex[:8]}"
    )
    with app.app_context():
        g.env.CACHE.set("word", "abc")
        with pytest.raises(ValueError, match="not an integer"):
            g.env.CACHE.incr("word")
        assert g.env.CACHE.backend.breaker.open_until == 0.0
        assert g.env.CACHE.get("word") == "abc"
        g.env.CACHE.clear()
