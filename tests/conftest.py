"""Shared fixtures: apps, and the backends every contract test runs on.

``cache_url`` runs a test on memory://, a SQLite cache file, a standalone
Redis, a 3-master Redis Cluster and Redis behind Sentinel; ``state_url`` on SQLite, PostgreSQL and
MariaDB. Missing services skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, g

from flask_ploy import FlaskPloy

from . import servers

pytest_plugins = ["pytester", "tests.figures"]

BINDINGS: dict[str, Any] = {
    "kind": "dynamic",
    "cache": {"CACHE": "default", "SESSION_CACHE": "sessions", "ALIAS_CACHE": "default"},
    "state": {"STATE": "default", "USER_STATE": "users", "ALIAS_STATE": "default"},
}

CACHE_KINDS = ["memory", "sqlite", "redis", "cluster", "sentinel"]
STATE_KINDS = ["sqlite", "postgresql", "mariadb"]


def worker_id() -> str:
    """This test process's name, unique among concurrent runs on one machine.

    ``PLOY_TEST_TAG`` tells apart several checkouts testing against the same
    shared servers at once (it goes into table names).
    """
    return os.environ.get("PLOY_TEST_TAG", "") + os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    servers.need(bool(servers.REDIS_SERVER and servers.REDIS_CLI), "redis-server and redis-cli")
    with servers.redis_cluster() as cluster:
        yield cluster.url


@pytest.fixture(scope="session")
def sentinel_url() -> Iterator[str]:
    servers.need(bool(servers.REDIS_SERVER), "redis-server")
    with servers.redis_sentinel() as url:
        yield url


@pytest.fixture
def own_redis() -> Iterator[servers.RedisProc]:
    """A redis-server of the test's own, on a free port, which it may kill and restart."""
    servers.need(servers.REDIS_SERVER is not None, "redis-server")
    proc = servers.start_redis()
    yield proc
    proc.kill()


@pytest.fixture
def hung() -> Iterator[servers.HungServer]:
    """A TCP server that accepts connections and never replies (a hung Redis)."""
    server = servers.HungServer()
    yield server
    server.close()


@pytest.fixture
def own_cluster() -> Iterator[servers.Cluster]:
    """A private 3-master Redis Cluster, which the test may kill or stop nodes of.

    ``cluster-require-full-coverage no``: the shards left keep serving their
    slots when one master is lost (Redis refuses every key otherwise).
    """
    servers.need(bool(servers.REDIS_SERVER and servers.REDIS_CLI), "redis-server and redis-cli")
    with servers.redis_cluster(extra=["--cluster-require-full-coverage", "no"]) as cluster:
        yield cluster


def _cache_url(kind: str, request: pytest.FixtureRequest) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        tmp = request.getfixturevalue("tmp_path")
        return f"sqlite:///{tmp}/cache.sqlite3"
    if kind == "redis":
        servers.need(servers.redis_ok(), f"Redis at {servers.REDIS_URL}")
        return servers.REDIS_URL
    if kind == "cluster":
        return str(request.getfixturevalue("cluster_url"))
    if kind == "sentinel":
        return str(request.getfixturevalue("sentinel_url"))
    raise AssertionError(kind)


def _state_url(kind: str, tmp_path: Any) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/state.sqlite3"
    url = {"postgresql": servers.POSTGRES_URL, "mariadb": servers.MARIADB_URL}[kind]
    servers.need(servers.sql_ok(url), f"{kind} at {url}")
    return url


@pytest.fixture(params=CACHE_KINDS)
def cache_url(request: pytest.FixtureRequest) -> str:
    """Each cache backend in turn."""
    return _cache_url(request.param, request)


@pytest.fixture(params=[k for k in CACHE_KINDS if k != "memory"])
def shared_cache_url(request: pytest.FixtureRequest) -> str:
    """Each cache backend that several processes share (not memory://)."""
    return _cache_url(request.param, request)


@pytest.fixture(params=["redis", "cluster", "sentinel"])
def redis_cache_url(request: pytest.FixtureRequest) -> str:
    """Each Redis scheme in turn (the backends with a connection pool)."""
    return _cache_url(request.param, request)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def seed_cache_url(request: pytest.FixtureRequest) -> str:
    """memory://, the SQLite default and a real Redis: what the seed examples run on."""
    return _cache_url(request.param, request)


@pytest.fixture(params=STATE_KINDS)
def state_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """Each state database in turn."""
    return _state_url(request.param, tmp_path)


@pytest.fixture(params=["postgresql", "mariadb"])
def server_state_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """Each database server in turn (row locks, sessions that can be killed)."""
    return _state_url(request.param, tmp_path)


@pytest.fixture
def state_table() -> str:
    """A table per test worker, so parallel runs never share rows."""
    return f"ploy_test_{worker_id()}"


AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(tmp_path: Any) -> Iterator[AppFactory]:
    """Build an app with FlaskPloy; keyword arguments go to ``app.config``.

    ``bindings=`` replaces the default bindings; ``db=`` and
    ``cache_client=`` go to FlaskPloy.
    """
    made: list[tuple[Flask, FlaskPloy]] = []

    def factory(
        bindings: Any = None, *, db: Any = None, cache_client: Any = None, **config: Any
    ) -> Flask:
        app = Flask("ploytest", root_path=str(tmp_path), instance_path=str(tmp_path / "instance"))
        app.config["TESTING"] = True
        app.config["PLOY_BINDINGS"] = BINDINGS if bindings is None else bindings
        app.config.update(config)
        ext = FlaskPloy(db=db, cache_client=cache_client)
        ext.init_app(app)
        made.append((app, ext))
        return app

    yield factory
    for app, ext in made:
        ext.app_bindings(app).close()
        _forget_shared_redis_keys(app.config)


def _forget_shared_redis_keys(config: Any) -> None:
    """Delete what a test left on the shared Redis under its own key prefix,
    passed or failed (the default prefix ``ploy`` is left alone: other
    sessions may be using it)."""
    prefix = config.get("PLOY_CACHE_KEY_PREFIX")
    if config.get("PLOY_CACHE_URL") != servers.REDIS_URL or prefix in (None, "ploy"):
        return
    import redis

    try:
        client = redis.Redis.from_url(servers.REDIS_URL, socket_timeout=2)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        client.close()
    except redis.RedisError:
        pass  # the shared Redis is down: nothing to clean


def clear_bindings(app: Flask) -> None:
    """Empty every resource of *app* (cache and state)."""
    with app.app_context():
        for name in app.extensions["ploy"].bindings(app).bindings:
            getattr(g.env, name.name).clear()


@pytest.fixture
def cache_app(make_app: AppFactory, cache_url: str) -> Iterator[Flask]:
    """An app whose cache runs on each backend, with a key prefix of its own."""
    app = make_app(PLOY_CACHE_URL=cache_url, PLOY_CACHE_KEY_PREFIX=f"t{uuid.uuid4().hex[:12]}")
    yield app
    with app.app_context():
        for name in ("CACHE", "SESSION_CACHE"):
            getattr(g.env, name).clear()


@pytest.fixture
def cache_env(cache_app: Flask) -> Iterator[Any]:
    """``g.env`` of :func:`cache_app`, inside an app context."""
    with cache_app.app_context():
        yield g.env


@pytest.fixture
def state_app(make_app: AppFactory, state_url: str, state_table: str) -> Flask:
    """An app whose state runs on each database, emptied before the test."""
    app = make_app(PLOY_STATE_URL=state_url, PLOY_STATE_TABLE=state_table)
    with app.app_context():
        g.env.STATE.clear()
        g.env.USER_STATE.clear()
    return app


@pytest.fixture
def state_env(state_app: Flask) -> Iterator[Any]:
    """``g.env`` of :func:`state_app`, inside an app context."""
    with state_app.app_context():
        yield g.env
