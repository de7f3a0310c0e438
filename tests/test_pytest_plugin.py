"""The ``ploy`` pytest plugin, run by pytest in a subprocess (so the
``pytest11`` entry point of the installed package must load it by itself)."""

from __future__ import annotations

import sqlite3

import pytest

from . import servers

CONFTEST = """
from pathlib import Path

import pytest
from flask import Flask, g

from flask_ploy import FlaskPloy

CONFIGURED = Path(__file__).parent / "configured.sqlite3"


@pytest.fixture
def app():
    app = Flask("inner", root_path=str(Path(__file__).parent))
    app.config.update(
        TESTING=True,
        PLOY_BINDINGS={"cache": {"CACHE": "default"}, "state": {"STATE": "default", "USERS": "u"}},
        PLOY_CACHE_URL="redis://127.0.0.1:1/0",  # nothing listens there
        PLOY_CACHE_ON_ERROR="raise",
        PLOY_STATE_URL=f"sqlite:///{CONFIGURED}",
    )
    ploy = FlaskPloy(app)

    @app.get("/get/<name>/<key>")
    def get(name, key):
        return {"value": getattr(g.env, name).get(key), "seen": g.get("seen")}

    @app.post("/set/<name>/<key>/<value>")
    def set_(name, key, value):
        getattr(g.env, name).set(key, value)
        g.seen = True
        return {}

    yield app
    ploy.app_bindings(app).close()
"""

TEST_PLUGIN = """
import pytest
from flask import g


def test_each_test_gets_empty_isolated_bindings(app, ploy, ploy_env):
    assert ploy_env.CACHE.backend.display_url.endswith("/cache.sqlite3?synchronous=off")
    url = ploy.state_store("STATE", app).display_url
    assert url.startswith("sqlite:///") and url.endswith("/state.sqlite3")
    assert "configured" not in url
    assert ploy_env.STATE.get("k") is None
    ploy_env.STATE.set("k", "first")
    ploy_env.CACHE.set("c", "first")  # the configured Redis is down, and would raise
    client = app.test_client()
    assert client.get("/get/STATE/k").json["value"] == "first"
    assert client.get("/get/CACHE/c").json["value"] == "first"
    client.post("/set/USERS/u/1")
    assert ploy_env.USERS.get("u") == "1"
    # ploy_env pushes no app context: g does not carry over between requests.
    assert client.get("/get/STATE/k").json["seen"] is None


def test_the_next_test_starts_empty(ploy_env):
    assert ploy_env.STATE.get("k") is None
    assert ploy_env.USERS.get("u") is None
    assert ploy_env.CACHE.get("c") is None


def test_requests_alone_are_isolated_too(app):
    client = app.test_client()
    client.post("/set/STATE/via/request")
    assert client.get("/get/STATE/via").json["value"] == "request"


@pytest.mark.ploy_real_backends
def test_the_marker_keeps_the_configured_backends(app, ploy):
    assert ploy.state_store("STATE", app).display_url.endswith("configured.sqlite3")
    with app.app_context():
        g.env.STATE.set("real", "yes")


def test_isolation_setting(request, app, ploy):
    isolated = request.config.getini("ploy_isolation")
    url = ploy.state_store("STATE", app).display_url
    assert ("configured" not in url) is isolated


def test_without_app():
    pass


def test_cli_sees_the_test_bindings(app, ploy_env):
    ploy_env.STATE.set("k", "v")
    result = app.test_cli_runner().invoke(args=["ploy", "state", "dump", "STATE"])
    assert result.stdout == '{"key": "k", "value": "v"}\\n'
"""

TEST_CONTEXTS = """
import pytest
from flask import g


@pytest.fixture
def app(app):
    with app.app_context():  # an app fixture that pushes a context before the swap
        yield app


def test_the_active_context_gets_the_isolated_env(app, ploy_env):
    assert ploy_env is g.env
    assert g.env.CACHE.backend.display_url.endswith("/cache.sqlite3?synchronous=off")
    g.env.STATE.set("x", "1")
    assert app.test_client().get("/get/STATE/x").json["value"] == "1"
"""

TEST_PYTEST_FLASK = """
import pytest
from flask import g


@pytest.fixture(autouse=True)
def _push_request_context(request):
    # What pytest-flask does: one request context for the whole test.
    if "app" not in request.fixturenames:
        yield
        return
    ctx = request.getfixturevalue("app").test_request_context()
    ctx.push()
    yield
    ctx.pop()


def test_pytest_flask_style_context(app, ploy_env):
    assert ploy_env is g.env
    assert g.env.CACHE.backend.display_url.endswith("/cache.sqlite3?synchronous=off")
    ploy_env.STATE.set("y", "2")
    client = app.test_client()
    client.post("/set/STATE/z/3")
    assert client.get("/get/STATE/y").json == {"value": "2", "seen": True}  # g carried over
    assert g.env.STATE.get("z") == "3"
"""

TEST_DB = """
import pytest
import redis
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_ploy import FlaskPloy


@pytest.fixture
def app(tmp_path):
    app = Flask("withdb")
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path}/app.sqlite3"
    app.config["PLOY_BINDINGS"] = {"cache": {"CACHE": "default"}, "state": {"STATE": "default"}}
    db = SQLAlchemy(app)
    FlaskPloy(app, db=db, cache_client=redis.Redis(port=1))
    return app


def test_db_and_cache_client_are_replaced_too(app, ploy, ploy_env):
    assert ploy.state_store("STATE", app).display_url.startswith("sqlite:///")
    assert ploy_env.CACHE.backend.display_url.endswith("/cache.sqlite3?synchronous=off")
    ploy_env.STATE.set("a", "b")
    assert ploy_env.STATE.get("a") == "b"


@pytest.mark.ploy_real_backends
def test_db_with_the_marker(app, ploy):
    assert ploy.state_store("STATE", app).display_url == "Flask-SQLAlchemy bind 'default'"
"""

TEST_NO_EXTENSION = """
import pytest
from flask import Flask


@pytest.fixture
def app():
    return Flask("plain")


def test_an_app_without_flask_ploy_is_left_alone(app):
    assert "ploy" not in app.extensions


def test_the_ploy_fixture_needs_flask_ploy(ploy):
    pass
"""


def test_plugin_isolates_each_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_plugin=TEST_PLUGIN,
        test_contexts=TEST_CONTEXTS,
        test_pytest_flask=TEST_PYTEST_FLASK,
        test_db=TEST_DB,
        test_no_extension=TEST_NO_EXTENSION,
    )
    # Without pytest-flask (installed with the test extra): these tests bring
    # their own client and context fixtures; test_with_pytest_flask uses its.
    result = pytester.runpytest_subprocess(
        "--strict-markers", "-p", "no:cacheprovider", "-p", "no:flask"
    )
    result.assert_outcomes(passed=12, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR test_no_extension.py::test_the_ploy_fixture_needs_flask_ploy*",
        ]
    )
    result.stdout.fnmatch_lines(["*the 'app' fixture returned <Flask 'plain'>, which has no*"])
    # Only the marked test wrote to the configured database.
    with sqlite3.connect(pytester.path / "configured.sqlite3") as conn:
        rows = conn.execute("SELECT resource, key, value FROM ploy_state").fetchall()
    assert rows == [("default", "real", "yes")]

    # ploy_isolation = false in the ini file turns it off for every test.
    off = pytester.runpytest_subprocess(
        "-o",
        "ploy_isolation=false",
        "-k",
        "isolation_setting",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:flask",
    )
    off.assert_outcomes(passed=1)


# -- with pytest-flask's own fixtures ------------------------------------------------

REAL_PYTEST_FLASK_CONFTEST = """
from pathlib import Path

import pytest
from flask import Flask, g

from flask_ploy import FlaskPloy

CONFIGURED = Path(__file__).parent / "configured.sqlite3"


def create_app():
    app = Flask("real_pytest_flask", root_path=str(Path(__file__).parent))
    app.config.update(
        TESTING=True,
        PLOY_BINDINGS={"cache": {"CACHE": "default"}, "state": {"STATE": "default"}},
        PLOY_CACHE_URL="redis://127.0.0.1:1/0",  # nothing listens there
        PLOY_STATE_URL=f"sqlite:///{CONFIGURED}",
    )
    FlaskPloy(app)

    @app.get("/get/<key>")
    def get(key):
        return {"value": g.env.STATE.get(key)}

    @app.post("/set/<key>/<value>")
    def set_(key, value):
        g.env.STATE.set(key, value)
        return {}

    return app


@pytest.fixture
def app():
    app = create_app()
    with app.app_context():  # seed the app, as fixtures do
        g.env.STATE.set("seeded", "by the fixture")
    yield app
    with app.app_context():  # a teardown that cleans up still sees the test's bindings
        g.env.STATE.delete("seeded")
"""

REAL_PYTEST_FLASK_TESTS = """
import json
import urllib.request

import pytest
from flask import g

from conftest import create_app
from flask_ploy.pytest_plugin import PloyRealBackendsWarning


def test_client_sees_what_the_fixture_seeded(client):
    assert client.get("/get/seeded").json == {"value": "by the fixture"}


def test_config_fixture(config, ploy):
    assert config["PLOY_STATE_URL"].endswith("configured.sqlite3")  # configured, not used
    assert "configured" not in ploy.state_store("STATE").display_url


def test_live_server_uses_the_test_bindings(live_server, ploy_env):
    ploy_env.STATE.set("from_test", "hello")
    base = live_server.url()
    with urllib.request.urlopen(f"{base}/get/from_test", timeout=10) as r:
        assert json.load(r) == {"value": "hello"}
    with urllib.request.urlopen(f"{base}/get/seeded", timeout=10) as r:
        assert json.load(r) == {"value": "by the fixture"}
    req = urllib.request.Request(f"{base}/set/from_server/yes", method="POST")
    urllib.request.urlopen(req, timeout=10).close()
    assert ploy_env.STATE.get("from_server") == "yes"


def test_an_app_built_in_the_test_is_isolated_too(app):
    other = create_app()
    with other.app_context():
        g.env.STATE.set("built", "in the test")
        assert "configured" not in repr(g.env.STATE)


def test_an_app_built_in_a_test_without_the_app_fixture_is_isolated():
    other = create_app()
    with other.app_context():
        g.env.STATE.set("built", "in the test body")
        assert "configured" not in repr(g.env.STATE)


AT_IMPORT = create_app()  # made before any test: only a warning can help


def test_an_app_made_at_import_warns():
    with pytest.warns(PloyRealBackendsWarning, match="uses its configured cache and state"):
        with AT_IMPORT.app_context():
            pass


@pytest.mark.ploy_real_backends
def test_marked_real_backends_get_no_warning(recwarn):
    other = create_app()
    with other.app_context():
        g.env.STATE.set("real", "yes")
    assert not [w for w in recwarn if w.category is PloyRealBackendsWarning]
"""


def test_with_pytest_flask(pytester: pytest.Pytester) -> None:
    """pytest-flask's real client, config and live_server fixtures (a forked server)."""
    servers.need_module("pytest_flask")
    pytester.makeconftest(REAL_PYTEST_FLASK_CONFTEST)
    pytester.makepyfile(test_real_pytest_flask=REAL_PYTEST_FLASK_TESTS)
    # live_server is session-scoped unless told otherwise; the app fixture is not.
    result = pytester.runpytest_subprocess(
        "--strict-markers", "-p", "no:cacheprovider", "-v", "-o", "live_server_scope=function"
    )
    result.assert_outcomes(passed=7)
    # Only the marked test wrote to the configured database: not the fixture's
    # seeding, not the app built inside a test, not the live server.
    with sqlite3.connect(pytester.path / "configured.sqlite3") as conn:
        rows = conn.execute("SELECT resource, key, value FROM ploy_state").fetchall()
    assert rows == [("default", "real", "yes")]
