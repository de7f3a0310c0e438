"""FlaskPloy registration, g.env in every kind of context, and teardown."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import click
import pytest
from flask import Flask, g

from flask_ploy import Env, FlaskPloy, UnknownBinding

from .conftest import BINDINGS


def test_init_app_styles(tmp_path: Path) -> None:
    a = Flask("a", root_path=str(tmp_path), instance_path=str(tmp_path / "a"))
    b = Flask("b", root_path=str(tmp_path), instance_path=str(tmp_path / "b"))
    for app in (a, b):
        app.config.update(TESTING=True, PLOY_BINDINGS=BINDINGS)
    direct = FlaskPloy(a)
    factory = FlaskPloy()
    factory.init_app(b)
    assert a.extensions["ploy"] is direct
    assert b.extensions["ploy"] is factory
    with a.app_context():
        assert isinstance(g.env, Env)


def test_one_extension_serves_several_apps(tmp_path: Path) -> None:
    ext = FlaskPloy()
    apps = []
    for i in range(3):
        app = Flask(f"app{i}", root_path=str(tmp_path), instance_path=str(tmp_path / f"i{i}"))
        app.config.update(TESTING=True, PLOY_BINDINGS=BINDINGS)
        ext.init_app(app)
        apps.append(app)
    for i, app in enumerate(apps):
        with app.app_context():
            g.env.STATE.set("who", str(i))
            g.env.CACHE.set("who", str(i))
    for i, app in enumerate(apps):
        with app.app_context():
            assert g.env.STATE.get("who") == str(i)
            assert g.env.CACHE.get("who") == str(i)


def test_double_registration_is_refused(make_app: Any) -> None:
    app = make_app()
    with pytest.raises(RuntimeError, match="already initialized on this app"):
        FlaskPloy(app)


def test_forgotten_init_app_is_explained(make_app: Any, tmp_path: Path) -> None:
    make_app()
    other = Flask("other", root_path=str(tmp_path))
    ext = FlaskPloy()
    with (
        other.app_context(),
        pytest.raises(RuntimeError, match="Did you forget to call 'init_app'"),
    ):
        ext.bindings()
    with other.app_context():
        assert not hasattr(g, "env")


def test_init_app_connects_to_nothing(make_app: Any) -> None:
    start = time.monotonic()
    app = make_app(
        PLOY_CACHE_URL="redis://127.0.0.1:1/0",
        PLOY_STATE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none",
    )
    assert time.monotonic() - start < 1.0
    with app.app_context():
        assert g.env.CACHE.get("k") is None  # the cache fails soft
        assert isinstance(g.env, Env)


def test_env_in_request_cli_and_app_context(make_app: Any) -> None:
    app = make_app()
    seen: list[str] = []

    @app.get("/")
    def view() -> str:
        g.env.STATE.set("from", "request")
        return g.env.STATE.get("from") or ""

    @app.cli.command("touch")
    def touch() -> None:
        g.env.STATE.set("from", "cli")
        seen.append(g.env.STATE.get("from") or "")
        click.echo(repr(g.env))

    assert app.test_client().get("/").text == "request"
    result = app.test_cli_runner().invoke(args=["touch"])
    assert result.exit_code == 0, result.output
    assert seen == ["cli"]
    assert "<Env CACHE SESSION_CACHE ALIAS_CACHE STATE USER_STATE ALIAS_STATE>" in result.output
    with app.app_context():
        assert g.env.STATE.get("from") == "cli"


def test_each_context_gets_its_own_env(make_app: Any) -> None:
    app = make_app()
    with app.app_context():
        outer = g.env
        outer_state = g.env.STATE
        with app.app_context():
            assert g.env is not outer
            assert g.env.STATE is not outer_state
            assert g.env.CACHE is outer.CACHE  # cache bindings are shared, stateless
        assert g.env is outer


def test_unknown_binding_lists_the_valid_ones(make_app: Any) -> None:
    app = make_app()
    with app.app_context():
        with pytest.raises(UnknownBinding, match="no binding 'CACHEE'.*CACHE, SESSION_CACHE"):
            _ = g.env.CACHEE
        with pytest.raises(AttributeError):
            _ = g.env.cache
        assert not hasattr(g.env, "NOPE")
        assert getattr(g.env, "NOPE", None) is None
        assert "STATE" in g.env
        assert "NOPE" not in g.env
        assert list(g.env) == [
            "CACHE",
            "SESSION_CACHE",
            "ALIAS_CACHE",
            "STATE",
            "USER_STATE",
            "ALIAS_STATE",
        ]


def _pool(app: Flask) -> Any:
    return app.extensions["ploy"].state_store("STATE", app).engine.pool


def test_connection_borrowed_on_first_use_and_returned(make_app: Any, tmp_path: Path) -> None:
    app = make_app(PLOY_STATE_URL=f"sqlite:///{tmp_path}/t.db")
    with app.app_context():
        g.env.CACHE.get("x")
        assert _pool(app).checkedout() == 0  # cache use borrows no SQL connection
        g.env.STATE.get("x")
        g.env.USER_STATE.get("x")
        assert _pool(app).checkedout() == 1  # one connection per context and database
    assert _pool(app).checkedout() == 0


def test_connection_returned_when_the_view_raises(make_app: Any, tmp_path: Path) -> None:
    app = make_app(PLOY_STATE_URL=f"sqlite:///{tmp_path}/t.db")

    @app.get("/boom")
    def boom() -> str:
        g.env.STATE.set("k", "written before the error")
        raise RuntimeError("boom")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert app.test_client().get("/boom").status_code == 500
    assert _pool(app).checkedout() == 0
    with app.app_context():
        assert g.env.STATE.get("k") == "written before the error"  # committed on return


def test_teardown_rolls_back_an_open_transaction(make_app: Any, tmp_path: Path) -> None:
    app = make_app(PLOY_STATE_URL=f"sqlite:///{tmp_path}/t.db", PLOY_STATE_BUSY_TIMEOUT=0.5)
    with app.app_context():
        cur = g.env.STATE.connection().cursor()
        cur.execute("BEGIN IMMEDIATE")  # a write lock left open
        cur.execute("INSERT INTO ploy_state (resource, key, value) VALUES ('default', 'g', 'x')")
    with app.app_context():
        g.env.STATE.set("other", "ok")  # would wait for the lock and fail if it were held
        assert g.env.STATE.get("g") is None


def test_one_context_across_requests_keeps_one_connection(make_app: Any, tmp_path: Path) -> None:
    # pytest-flask on Flask 3.1 keeps one app context for a whole test: requests
    # reuse it, so g.env and its borrowed connection carry over, and teardown
    # runs once at the end.
    app = make_app(PLOY_STATE_URL=f"sqlite:///{tmp_path}/t.db")

    @app.get("/incr")
    def incr() -> str:
        return str(g.env.STATE.incr("n"))

    client = app.test_client()
    with app.app_context():
        env = g.env
        assert [client.get("/incr").text for _ in range(3)] == ["1", "2", "3"]
        assert g.env is env
        assert _pool(app).checkedout() == 1
    assert _pool(app).checkedout() == 0


def test_memory_cache_warns_once_outside_debug_and_testing(tmp_path: Path, caplog: Any) -> None:
    """Issue 13: a per-process cache outside debug and testing is a WARNING,
    once per app (it was an INFO line nobody saw); the default, a SQLite file
    the processes share, says nothing."""
    caplog.set_level(logging.INFO, logger="flask_ploy")

    def messages(**config: Any) -> list[tuple[int, str]]:
        caplog.clear()
        app = Flask("prod", root_path=str(tmp_path), instance_path=str(tmp_path / "i"))
        app.config.update(PLOY_BINDINGS=BINDINGS, **config)
        FlaskPloy(app).app_bindings(app).close()
        return [(r.levelno, r.getMessage()) for r in caplog.records if "memory" in r.getMessage()]

    found = messages(PLOY_CACHE_URL="memory://")
    assert found == [
        (
            logging.WARNING,
            "flask-ploy: CACHE, SESSION_CACHE, ALIAS_CACHE use memory://, a cache in each"
            " process's own memory: gunicorn workers, the reloader and 'flask ploy cache'"
            " each see a different one. Leave PLOY_CACHE_URL unset for a SQLite file in the"
            " instance folder, shared by the app's processes on this machine, or use redis://",
        )
    ]
    assert [m for _, m in messages(PLOY_CACHE_RESOURCES={"sessions": "memory://"})] == [
        found[0][1].replace("CACHE, SESSION_CACHE, ALIAS_CACHE use", "SESSION_CACHE uses")
    ]
    assert messages() == []  # the SQLite default
    assert messages(PLOY_CACHE_URL="memory://", TESTING=True) == []
    assert messages(PLOY_CACHE_URL="memory://", DEBUG=True) == []


def test_isolated_cache_is_shared_with_a_forked_server(make_app: Any) -> None:
    """isolated() puts the cache in a temporary SQLite file: a process forked
    in the block (pytest-flask's live_server) reads what the test seeded, and
    the test reads what the server wrote (memory:// kept them apart)."""
    app = make_app(PLOY_CACHE_URL="redis://127.0.0.1:1/0")  # configured, and unreachable
    ext: FlaskPloy = app.extensions["ploy"]
    with ext.isolated(app) as env:
        assert env.CACHE.backend.display_url.endswith("/cache.sqlite3?synchronous=off")
        env.CACHE.set("seeded", "by the test")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the forked server
            code = 1
            try:
                with app.app_context():
                    seen = g.env.CACHE.get("seeded")
                    g.env.CACHE.set("served", "by the server")
                    code = 0 if seen == "by the test" else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert env.CACHE.get("served") == "by the server"
    with app.app_context():
        assert g.env.CACHE.backend.display_url == "redis://127.0.0.1:1/0"


def test_cache_client_is_shared(make_app: Any) -> None:
    import redis

    from . import servers

    servers.need(servers.redis_ok(), "Redis")
    pool = redis.BlockingConnectionPool.from_url(
        servers.REDIS_URL, max_connections=4, decode_responses=True
    )
    client = redis.Redis(connection_pool=pool)
    app = make_app(cache_client=client, PLOY_CACHE_KEY_PREFIX="tshared")
    with app.app_context():
        g.env.CACHE.set("k", "v")
        assert g.env.CACHE.get("k") == "v"
        assert client.get("tshared:default:k") == "v"
        assert g.env.CACHE.backend.client is client
        g.env.CACHE.clear()
    raw = redis.Redis.from_url(servers.REDIS_URL)  # bytes responses: decoded by the binding
    app2 = make_app(cache_client=raw, PLOY_CACHE_KEY_PREFIX="tshared2")
    with app2.app_context():
        g.env.CACHE.set("k", "é")
        assert g.env.CACHE.get("k") == "é"
        assert g.env.CACHE.get_many(["k", "x"]) == {"k": "é", "x": None}
        g.env.CACHE.clear()


def test_connection_pool_option(make_app: Any) -> None:
    import redis

    from . import servers

    servers.need(servers.redis_ok(), "Redis")
    pool = redis.ConnectionPool.from_url(servers.REDIS_URL, decode_responses=True)
    app = make_app(
        PLOY_CACHE_URL=servers.REDIS_URL,
        PLOY_CACHE_OPTIONS={"connection_pool": pool},
        PLOY_CACHE_KEY_PREFIX="tpool",
    )
    with app.app_context():
        g.env.CACHE.set("k", "v")
        assert g.env.CACHE.backend.client.connection_pool is pool
        g.env.CACHE.clear()


def test_cache_client_and_url_together_is_an_error(make_app: Any) -> None:
    import redis

    from flask_ploy import PloyConfigError

    with pytest.raises(
        PloyConfigError, match="PLOY_CACHE_URL'] is set, but FlaskPloy was given cache_client"
    ):
        make_app(cache_client=redis.Redis(), PLOY_CACHE_URL="redis://127.0.0.1:6379/0")


def test_bad_cache_client(make_app: Any) -> None:
    with pytest.raises(TypeError, match="cache_client must be a redis.Redis"):
        make_app(cache_client=object())


def test_accessors_take_current_app(make_app: Any) -> None:
    """Flask users pass ``current_app``, a proxy: it was a TypeError (no weak reference)."""
    from flask import current_app

    app = make_app()
    ploy = app.extensions["ploy"]
    with app.app_context():
        assert ploy.app_bindings(current_app) is ploy.app_bindings(app)
        assert ploy.state_store("STATE", current_app) is ploy.state_store("STATE", app)
        assert ploy.cache_stats(current_app) == ploy.cache_stats(app)


def test_an_env_is_freed_without_the_cyclic_gc(make_app: Any) -> None:
    """Issue 11: 1,000 contexts that touch STATE left 1,000 Env objects for
    the cyclic garbage collector (Env and State referred to each other).
    With the collector off, none may stay."""
    import gc

    app = make_app()
    with app.app_context():
        g.env.STATE.set("k", "v")  # the store and its pool exist before counting
    gc.collect()
    gc.disable()
    try:
        before = sum(1 for o in gc.get_objects() if type(o) is Env)
        for _ in range(1000):
            with app.app_context():
                assert g.env.STATE.get("k") == "v"
                g.env.CACHE.get("k")
        after = sum(1 for o in gc.get_objects() if type(o) is Env)
    finally:
        gc.enable()
    assert after - before == 0, after - before
