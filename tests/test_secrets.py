"""Passwords in Redis and database URLs never leak.

Each surface where a URL could show up is tested with a password in it:
log records of failing backends, the messages and whole tracebacks of
CacheUnavailable, StateUnavailable and PloyConfigError, the reprs of every
object a user can reach (Cache, State, backends, stores, Env, the redis-py
client and SQLAlchemy engine behind them, the per-app state), the output of
``flask ploy config`` and ``flask ploy check``, and the example app's HTML
page and JSON errors. Real servers are used: a private Redis with
``requirepass`` (right and wrong passwords), MariaDB refusing a password,
and PostgreSQL (trust auth, so a URL with a password works).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, g
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from flask_ploy import CacheUnavailable, FlaskPloy, PloyConfigError, PloyError, StateUnavailable

from . import servers
from .conftest import AppFactory, worker_id

PW = "Tr0ub4dor-s3cr3t"
#: Forms a password takes in a URL; each must be masked.
REDIS_FORMS = [
    "redis://:{pw}@127.0.0.1:{port}/0",
    "redis://default:{pw}@127.0.0.1:{port}/0",
    "redis://127.0.0.1:{port}/0?password={pw}",
]


def assert_clean(*texts: Any) -> None:
    """Neither the password nor its URL-quoted form appears in any of *texts*."""
    for text in texts:
        s = text if isinstance(text, str) else str(text)
        assert PW not in s, f"the password leaked: {s[:500]}"
        assert PW.replace("-", "%2D") not in s


def everything_about(exc: BaseException) -> str:
    """The message, repr, args and the whole chained traceback of *exc*."""
    return "\n".join(
        [str(exc), repr(exc), repr(exc.args), "".join(traceback.format_exception(exc))]
    )


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[servers.RedisProc]:
    """A private Redis that requires the password PW."""
    servers.need(bool(servers.REDIS_SERVER), "redis-server")
    proc = servers.start_redis(["--requirepass", PW])
    yield proc
    proc.kill()


def _everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    out = [caplog.text]
    for record in caplog.records:
        out.append(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            out.append(everything_about(record.exc_info[1]))
    return "\n".join(out)


# -- logs and exceptions of failing backends --------------------------------------------


@pytest.mark.parametrize("form", REDIS_FORMS)
def test_a_down_redis_with_a_password(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, form: str
) -> None:
    url = form.format(pw=PW, port=servers.free_port())  # nothing listens there
    caplog.set_level(logging.DEBUG)
    miss = make_app({"cache": {"CACHE": "default"}}, PLOY_CACHE_URL=url)
    raising = make_app(
        {"cache": {"CACHE": "default"}}, PLOY_CACHE_URL=url, PLOY_CACHE_ON_ERROR="raise"
    )
    with miss.app_context():
        assert g.env.CACHE.get("k") is None  # logged, not raised
        with pytest.raises(CacheUnavailable) as incr:
            g.env.CACHE.incr("n")
        assert_clean(repr(g.env.CACHE), repr(g.env.CACHE.backend), repr(g.env.CACHE.backend.client))
    with raising.app_context(), pytest.raises(CacheUnavailable) as get:
        g.env.CACHE.get("k")
    logged = _everything_logged(caplog)
    assert "Cache backend redis://" in logged and "***" in logged, logged
    assert_clean(logged, everything_about(incr.value), everything_about(get.value))
    assert "***" in str(get.value)


def test_a_wrong_redis_password(
    make_app: AppFactory, locked_redis: servers.RedisProc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = f"redis://:{PW}-wrong@127.0.0.1:{locked_redis.port}/0"
    app = make_app({"cache": {"CACHE": "default"}}, PLOY_CACHE_URL=wrong)
    with app.app_context(), pytest.raises(CacheUnavailable, match="invalid|WRONGPASS|auth") as info:
        g.env.CACHE.add("k", "v")
    assert_clean(_everything_logged(caplog), everything_about(info.value))


def test_the_right_redis_password_works_and_stays_hidden(
    make_app: AppFactory, locked_redis: servers.RedisProc
) -> None:
    url = f"redis://:{PW}@127.0.0.1:{locked_redis.port}/0"
    app = make_app({"cache": {"CACHE": "default"}}, PLOY_CACHE_URL=url)
    ploy = app.extensions["ploy"]
    with app.app_context():
        g.env.CACHE.set("k", "v")
        assert g.env.CACHE.get("k") == "v"
        c = g.env.CACHE
        state = ploy.app_bindings(app)
        assert_clean(
            repr(c),
            repr(c.backend),
            repr(c.backend.client),
            repr(c.backend.client.connection_pool),
            repr(g.env),
            repr(state),
            repr(state.settings),
            repr(ploy.cache_stats()),
            repr(ploy.bindings()),
        )
        assert f"redis://:***@127.0.0.1:{locked_redis.port}/0" in repr(c)


def _state_down_url(kind: str) -> str:
    port = servers.free_port()
    return {
        "postgresql": f"postgresql+psycopg://root:{PW}@127.0.0.1:{port}/test",
        "mariadb": f"mariadb+pymysql://root:{PW}@127.0.0.1:{port}/test",
    }[kind]


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_down_database_with_a_password(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app({"state": {"STATE": "default"}}, PLOY_STATE_URL=_state_down_url(kind))
    with app.app_context():
        with pytest.raises(StateUnavailable) as info:
            g.env.STATE.set("k", "v")
        store = app.extensions["ploy"].state_store("STATE", app)
        assert_clean(repr(g.env.STATE), repr(store), repr(store.engine), repr(store.engine.url))
    assert "root:***@127.0.0.1" in str(info.value)
    assert_clean(everything_about(info.value), _everything_logged(caplog))


def test_mariadb_refusing_a_password(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A real authentication failure: MariaDB's root has no password."""
    servers.need(servers.sql_ok(servers.MARIADB_URL), f"MariaDB at {servers.MARIADB_URL}")
    caplog.set_level(logging.DEBUG)
    url = servers.MARIADB_URL.replace("root@", f"root:{PW}@")
    assert PW in url
    app = make_app({"state": {"STATE": "default"}}, PLOY_STATE_URL=url)
    with app.app_context(), pytest.raises(StateUnavailable, match="Access denied") as info:
        g.env.STATE.get("k")
    assert_clean(everything_about(info.value), _everything_logged(caplog))


def test_postgres_with_a_password_works_and_stays_hidden(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    servers.need(servers.sql_ok(servers.POSTGRES_URL), f"PostgreSQL at {servers.POSTGRES_URL}")
    caplog.set_level(logging.DEBUG)
    url = servers.POSTGRES_URL.replace("root@", f"root:{PW}@")  # trust auth ignores it
    app = make_app(
        {"state": {"STATE": "default"}},
        PLOY_STATE_URL=url,
        PLOY_STATE_TABLE=f"ploy_secrets_{worker_id()}",
    )
    with app.app_context():
        g.env.STATE.set("k", "v")
        assert g.env.STATE.get("k") == "v"
        store = app.extensions["ploy"].state_store("STATE", app)
        assert_clean(
            repr(g.env.STATE),
            repr(store),
            repr(store.engine),
            repr(g.env),
            repr(app.extensions["ploy"].app_bindings(app)),
            _everything_logged(caplog),
        )
        g.env.STATE.clear()


BAD_CONFIGS: list[dict[str, Any]] = [
    {"PLOY_CACHE_URL": f"memcached://:{PW}@127.0.0.1"},
    {"PLOY_CACHE_URL": f"redis://:{PW}@127.0.0.1:notaport/0"},
    {"PLOY_CACHE_URL": f"redis://:{PW}@127.0.0.1/0?socket_timeout=soon"},
    {"PLOY_CACHE_URL": f"redis+sentinel://:{PW}@127.0.0.1:26379"},
    {"PLOY_CACHE_URL": f"redis+cluster://:{PW}@"},
    {"PLOY_STATE_URL": f"oracle://scott:{PW}@127.0.0.1/orcl"},
    {"PLOY_STATE_URL": f"postgresql+psycopg://root:{PW}@127.0.0.1:notaport/test"},
    {"PLOY_STATE_URL": f"postgresql+nodriver://root:{PW}@127.0.0.1/test"},
    {"PLOY_STATE_URL": f"mysql+mysqldb://root:{PW}@127.0.0.1/test"},
    {"PLOY_STATE_RESOURCES": {"nope": f"postgresql+psycopg://root:{PW}@127.0.0.1/test"}},
    {"PLOY_CACHE_RESOURCES": {"nope": f"redis://:{PW}@127.0.0.1/0"}},
]


@pytest.mark.parametrize("config", BAD_CONFIGS, ids=lambda c: str(next(iter(c.values())))[:40])
def test_config_errors_hide_passwords(tmp_path: Path, config: dict[str, Any]) -> None:
    app = Flask("secrets", root_path=str(tmp_path))
    app.config["PLOY_BINDINGS"] = {"cache": {"CACHE": "default"}, "state": {"STATE": "default"}}
    app.config.update(config)
    with pytest.raises(PloyConfigError) as info:
        FlaskPloy(app)
    assert_clean(everything_about(info.value))


# -- the CLI -------------------------------------------------------------------------------


def test_flask_ploy_config_and_check_mask_passwords(
    make_app: AppFactory, locked_redis: servers.RedisProc, tmp_path: Path
) -> None:
    good = f"redis://:{PW}@127.0.0.1:{locked_redis.port}/0"
    down = f"redis://user:{PW}@127.0.0.1:{servers.free_port()}/0"
    app = make_app(
        {"cache": {"CACHE": "default", "DOWN": "down"}, "state": {"STATE": "default"}},
        PLOY_CACHE_URL=good,
        PLOY_CACHE_RESOURCES={"down": down},
        PLOY_STATE_URL=f"sqlite:///{tmp_path}/s.db",
    )
    runner = app.test_cli_runner()
    config = runner.invoke(args=["ploy", "config"])
    assert config.exit_code == 0, config.output
    assert f"redis://:***@127.0.0.1:{locked_redis.port}/0" in config.output
    assert "redis://user:***@127.0.0.1:" in config.output
    check = runner.invoke(args=["ploy", "check"])
    assert check.exit_code == 1  # DOWN is down
    get = runner.invoke(args=["ploy", "cache", "get", "DOWN", "k"])
    assert get.exit_code == 1
    assert_clean(config.output, check.output, get.output)
    for result in (config, check, get):
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            assert_clean(everything_about(result.exception))


# -- the example app -------------------------------------------------------------------------


def test_example_app_page_and_errors_hide_passwords(
    locked_redis: servers.RedisProc, caplog: pytest.LogCaptureFixture
) -> None:
    servers.need(servers.sql_ok(servers.POSTGRES_URL), f"PostgreSQL at {servers.POSTGRES_URL}")
    from example_app import create_app, ploy

    caplog.set_level(logging.DEBUG)
    cache_url = f"redis://:{PW}@127.0.0.1:{locked_redis.port}/0"
    state_url = servers.POSTGRES_URL.replace("root@", f"root:{PW}@")
    table = f"ploy_secrets_page_{worker_id()}"
    app = create_app(
        {
            "TESTING": True,
            "PLOY_CACHE_URL": cache_url,
            "PLOY_STATE_URL": state_url,
            "PLOY_STATE_TABLE": table,
        }
    )
    down = create_app(
        {
            "TESTING": True,
            "PLOY_CACHE_URL": f"redis://:{PW}@127.0.0.1:{servers.free_port()}/0",
            "PLOY_STATE_URL": _state_down_url("postgresql"),
        }
    )
    try:
        client = app.test_client()
        assert client.post("/counters/visits").status_code == 200
        page = client.get("/")
        assert page.status_code == 200
        assert "redis://:***@127.0.0.1" in page.text and "root:***@127.0.0.1" in page.text
        assert_clean(page.text)

        down_client = down.test_client()
        answers = [
            down_client.get("/"),
            down_client.get("/state/get?key=k"),
            down_client.post("/state/set", data={"key": "k", "value": "v"}),
            down_client.get("/cache/get?key=k"),
        ]
        assert [a.status_code for a in answers] == [503, 503, 503, 200]
        assert_clean(*(a.text for a in answers), _everything_logged(caplog))
        assert "unavailable" in caplog.text
    finally:
        with app.app_context():
            g.env.STATE.clear()
            g.env.USER_STATE.clear()
        for a in (app, down):
            ploy.app_bindings(a).close()


def test_ploy_errors_all_mask(make_app: AppFactory) -> None:
    """Every PloyError subclass raised above had a message: a sanity check of the helper."""
    with pytest.raises(AssertionError, match="leaked"):
        assert_clean(f"redis://:{PW}@h")
    assert issubclass(CacheUnavailable, PloyError) and issubclass(StateUnavailable, PloyError)


# -- passwords with any character ------------------------------------------------------------

#: Passwords URL parsers trip on: base64 (``/``, ``+``, ``=``), ``#``, ``?``, ``@``, ``:``.
ODD_PASSWORDS = ["s3cr3t/Ab+cd==", "pa#ss?w/rd", "p:ss;w0rd/x", "%2Fenc0ded%3F"]


@given(
    password=st.text(
        st.characters(blacklist_categories=["Cs", "Cc"]), min_size=6, max_size=30
    ).filter(lambda p: "@" not in p),
    scheme=st.sampled_from(
        ["redis", "rediss", "redis+sentinel", "postgresql+psycopg", "mysql+pymysql", "sqlite"]
    ),
    user=st.sampled_from(["", "root", "default"]),
)
@settings(max_examples=500, deadline=None)
def test_redact_url_never_shows_a_password(password: str, scheme: str, user: str) -> None:
    from flask_ploy._urls import redact_url

    url = f"{scheme}://{user}:{password}@h1.example:1234,h2:5/db?timeout=1"
    assume(password not in url.replace(password, "", 1))  # not also a host, say
    shown = redact_url(url)
    assert password not in shown, shown
    assert "h1.example" in shown or "/" in password or "?" in password or "#" in password


@pytest.mark.parametrize("password", ODD_PASSWORDS)
def test_odd_passwords_are_masked_on_every_state_surface(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, password: str
) -> None:
    """SQLAlchemy connects with such URLs; every place that shows the URL masks it."""
    servers.need(servers.sql_ok(servers.POSTGRES_URL), f"PostgreSQL at {servers.POSTGRES_URL}")
    caplog.set_level(logging.DEBUG)
    good = servers.POSTGRES_URL.replace("root@", f"root:{password}@")  # trust auth ignores it
    down = f"postgresql+psycopg://root:{password}@127.0.0.1:{servers.free_port()}/test"
    app = make_app(
        {"state": {"STATE": "default", "DOWN": "down"}},
        PLOY_STATE_URL=good,
        PLOY_STATE_RESOURCES={"down": down},
        PLOY_STATE_TABLE=f"ploy_secrets_{worker_id()}",
    )
    with app.app_context():
        g.env.STATE.set("k", "v")  # the URL works
        with pytest.raises(StateUnavailable) as info:
            g.env.DOWN.get("k")
        surfaces = [
            repr(g.env.STATE),
            repr(g.env.DOWN),
            everything_about(info.value),
            repr(app.extensions["ploy"].app_bindings(app)),
        ]
        g.env.STATE.clear()
    runner = app.test_cli_runner()
    config = runner.invoke(args=["ploy", "config"])
    check = runner.invoke(args=["ploy", "check"])
    assert config.exit_code == 0 and check.exit_code == 1
    assert "root:***@127.0.0.1" in config.output
    for text in [*surfaces, config.output, check.output, _everything_logged(caplog)]:
        assert password not in text, text[:500]


def test_a_raw_at_sign_in_a_password_is_refused_without_showing_it(tmp_path: Path) -> None:
    """SQLAlchemy ends the password at the first ``@``: the error must not quote the rest."""
    password = "p@ss:w0rd"
    app = Flask("secrets", root_path=str(tmp_path))
    app.config.update(
        PLOY_BINDINGS={"state": {"STATE": "default"}},
        PLOY_STATE_URL=f"postgresql+psycopg://root:{password}@127.0.0.1:5432/test",
    )
    with pytest.raises(PloyConfigError, match="percent-encode") as info:
        FlaskPloy(app)
    shown = everything_about(info.value)
    assert "ss:w0rd" not in shown and "w0rd" not in shown, shown
@pytest.mark.parametrize("password", ODD_PASSWORDS)
def test_odd_passwords_are_masked_in_cache_url_errors(tmp_path: Path, password: str) -> None:
    for url in (
        f"redis://:{password}@127.0.0.1:6379/0",
        f"redis+sentinel://:{password}@127.0.0.1:26379",
        f"redis+cluster://:{password}@",
        f"memcached://:{password}@127.0.0.1",
    ):
        app = Flask("secrets", root_path=str(tmp_path))
        app.config.update(PLOY_BINDINGS={"cache": {"CACHE": "default"}}, PLOY_CACHE_URL=url)
        try:
            FlaskPloy(app)
        except PloyConfigError as exc:
            shown = everything_about(exc)
        else:  # a URL redis-py accepts: shown masked
            shown = app.test_cli_runner().invoke(args=["ploy", "config"]).output
            app.extensions["ploy"].app_bindings(app).close()
            assert "***" in shown, shown
        assert password not in shown, shown


@pytest.mark.parametrize("password", ["hunter2@corp/xK9", "8642/xK9", "a?b", "a#b"])
def test_a_redis_url_redis_py_would_misread_is_refused(tmp_path: Path, password: str) -> None:
    """redis-py ends the host at the first '/': such a URL dialled a host made
    of the password's pieces, and logged them."""
    app = Flask("secrets", root_path=str(tmp_path))
    app.config.update(
        PLOY_BINDINGS={"cache": {"CACHE": "default"}},
        PLOY_CACHE_URL=f"redis://default:{password}@127.0.0.1:6379/0",
    )
    with pytest.raises(PloyConfigError, match="percent-encode") as info:
        FlaskPloy(app)
    assert password not in everything_about(info.value)
