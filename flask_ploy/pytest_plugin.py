"""pytest fixtures for apps using flask-ploy (registered as the ``ploy`` plugin).

pytest loads it by itself once flask-ploy is installed. For every test that
uses a fixture called ``app`` (the pytest-flask convention) whose app has a
:class:`~flask_ploy.FlaskPloy`, the app's bindings are replaced, for that
test only, by empty ones: a ``memory://`` cache and a State in a temporary
SQLite file. The app's own configuration is untouched, and restored after
the test.

- ``ploy_env``: the bindings (``g.env`` of the active app context, or an
  :class:`~flask_ploy.Env` of the test's bindings if none is active).
- ``ploy``: the app's :class:`~flask_ploy.FlaskPloy`.
- ``@pytest.mark.ploy_real_backends``: keep the configured backends in a
  test; ``ploy_isolation = false`` in the pytest ini file: in every test.

Disable the plugin, fixtures included, with ``pytest -p no:ploy``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flask_ploy import Env, FlaskPloy

#: The marker that keeps a test on the app's configured backends.
REAL_BACKENDS = "ploy_real_backends"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "ploy_isolation",
        type="bool",
        default=True,
        help="flask-ploy: give each test that uses the 'app' fixture empty memory:// and"
        " temporary SQLite bindings (default: true)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{REAL_BACKENDS}: use the app's configured Ploy cache and state backends in"
        " this test, instead of the empty memory:// cache and temporary SQLite state"
        " the ploy plugin gives each test",
    )


def _ploy_of(app: Any) -> FlaskPloy | None:
    extensions = getattr(app, "extensions", None)
    if not isinstance(extensions, dict):
        return None
    return extensions.get("ploy")


@pytest.fixture(autouse=True)
def ploy_isolation(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Give the ``app`` fixture's app empty bindings of its own for this test.

    Only for tests that use ``app`` and whose app has a FlaskPloy, and not
    for tests marked ``ploy_real_backends``. Cache resources share one new
    ``memory://`` store; State resources share one new SQLite file in a
    temporary folder, also when the app was given ``db=`` (Flask-SQLAlchemy)
    or ``cache_client=``. Every other ``PLOY_*`` setting (key prefix, size
    limits, ``PLOY_CACHE_ON_ERROR``, table name) stays as configured.
    """
    if (
        "app" not in request.fixturenames
        or request.node.get_closest_marker(REAL_BACKENDS)
        or not request.config.getini("ploy_isolation")
    ):
        yield
        return
    app = request.getfixturevalue("app")
    ext = _ploy_of(app)
    if ext is None:
        yield
        return
    from flask_ploy import FlaskPloy

    folder = tmp_path_factory.mktemp("ploy")
    # A new FlaskPloy without db= and cache_client=, so both are replaced too.
    new = FlaskPloy()._build(
        app,
        PLOY_CACHE_URL="memory://",
        PLOY_CACHE_RESOURCES={},
        PLOY_CACHE_OPTIONS={},
        PLOY_STATE_URL=f"sqlite:///{folder / 'state.sqlite3'}",
        PLOY_STATE_RESOURCES={},
        PLOY_STATE_ENGINE_OPTIONS={},
        PLOY_STATE_BIND=None,
        PLOY_STATE_SQLITE_SYNCHRONOUS="OFF",
    )
    old = ext._swap(app, new)
    try:
        yield
    finally:
        ext._swap(app, old)
        new.close()


@pytest.fixture
def ploy(app: Any, ploy_isolation: None) -> FlaskPloy:
    """The :class:`~flask_ploy.FlaskPloy` of the ``app`` fixture's app."""
    ext = _ploy_of(app)
    if ext is None:
        pytest.fail(
            f"the 'app' fixture returned {app!r}, which has no FlaskPloy; call"
            " FlaskPloy(app) or ploy.init_app(app) in it",
            pytrace=False,
        )
    return ext


@pytest.fixture
def ploy_env(app: Any, ploy: FlaskPloy) -> Iterator[Env]:
    """The bindings of the ``app`` fixture's app for this test: ``ploy_env.STATE``.

    If an app context of the app is active (pytest-flask pushes one for the
    whole test), this is its ``g.env``. Otherwise it is an
    :class:`~flask_ploy.Env` of the same bindings, and no app context is
    pushed, so each test-client request still gets a context (and a ``g``)
    of its own. Writes commit at once and are seen by the app.
    """
    from flask.globals import _cv_app

    from flask_ploy import Env

    ctx = _cv_app.get(None)
    if ctx is not None and ctx.app is app and isinstance(ctx.g.__dict__.get("env"), Env):
        yield ctx.g.env
        return
    env = Env(ploy._get_state(app))
    try:
        yield env
    finally:
        env._release()
