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


#: Where :func:`ploy_isolation` keeps the test's temporary :class:`~flask_ploy.Env`.
_ENV = pytest.StashKey["Env"]()


@pytest.fixture(autouse=True)
def ploy_isolation(request: pytest.FixtureRequest) -> Iterator[None]:
    """Give the ``app`` fixture's app empty bindings of its own for this test.

    Only for tests that use ``app`` and whose app has a FlaskPloy, and not
    for tests marked ``ploy_real_backends``. Wraps
    :meth:`FlaskPloy.isolated <flask_ploy.FlaskPloy.isolated>`: cache
    resources share one new ``memory://`` store; State resources share one
    new SQLite file in a temporary folder, also when the app was given
    ``db=`` (Flask-SQLAlchemy) or ``cache_client=``. Every other ``PLOY_*``
    setting (key prefix, size limits, ``PLOY_CACHE_ON_ERROR``, table name)
    stays as configured.
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
    with ext.isolated(app) as env:
        request.node.stash[_ENV] = env
        try:
            yield
        finally:
            del request.node.stash[_ENV]


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
def ploy_env(request: pytest.FixtureRequest, app: Any, ploy: FlaskPloy) -> Iterator[Env]:
    """The bindings of the ``app`` fixture's app for this test: ``ploy_env.STATE``.

    If an app context of the app is active (pytest-flask pushes one for the
    whole test), this is its ``g.env``. Otherwise it is an
    :class:`~flask_ploy.Env` of the same bindings, and no app context is
    pushed, so each test-client request still gets a context (and a ``g``)
    of its own. Writes commit at once and are seen by the app.
    """
    from flask import current_app, g, has_app_context

    from flask_ploy import Env

    if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
        env = g.get("env")
        if isinstance(env, Env):
            yield env
            return
    isolated = request.node.stash.get(_ENV, None)
    if isolated is not None:
        yield isolated
        return
    env = Env(ploy.app_bindings(app))
    try:
        yield env
    finally:
        env.release()
