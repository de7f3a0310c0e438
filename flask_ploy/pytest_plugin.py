"""pytest fixtures for apps using flask-ploy (registered as the ``ploy`` plugin).

pytest loads it by itself once flask-ploy is installed. It follows the
pytest-flask convention: your tests provide an ``app`` fixture.

- **Isolation.** The ``app`` fixture is created inside
  :meth:`FlaskPloy.isolating <flask_ploy.FlaskPloy.isolating>`: from
  ``FlaskPloy(app)`` on, the app has empty, temporary bindings of its own
  (every cache resource in one new store, every State resource in one new
  SQLite file in a temporary folder), so data the fixture seeds goes there
  too, until the fixture's teardown; so does every app the test's body
  builds itself, until the test ends. An app made before
  the test (a session-scoped fixture, a module-level app) gets temporary
  bindings for the test through :meth:`FlaskPloy.isolated
  <flask_ploy.FlaskPloy.isolated>`. A server forked from the test process
  (pytest-flask's ``live_server``) uses the same temporary files. The
  configured bindings come back after the test.
- **A warning** (:class:`PloyRealBackendsWarning`) when a test pushes an app
  context of an app on its configured backends (a test without the ``app``
  fixture, say), once per app; ``ploy_warn_real_backends = false`` in the
  ini file turns it off.
- ``ploy_env``: the bindings (``g.env`` of the active app context, or an
  :class:`~flask_ploy.Env` of the test's bindings if none is active).
- ``ploy``: the app's :class:`~flask_ploy.FlaskPloy`.
- ``@pytest.mark.ploy_real_backends``: keep the configured backends in a
  test (and no warning); ``ploy_isolation = false`` in the ini file: in
  every test.

Disable the plugin, fixtures included, with ``pytest -p no:ploy``.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flask_ploy import Env, FlaskPloy

#: The marker that keeps a test on the app's configured backends.
REAL_BACKENDS = "ploy_real_backends"


class PloyRealBackendsWarning(UserWarning):
    """A test used an app on its configured (real) cache and state backends."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "ploy_isolation",
        type="bool",
        default=True,
        help="flask-ploy: give the 'app' fixture's app, and every app a test builds,"
        " empty temporary bindings (default: true)",
    )
    parser.addini(
        "ploy_warn_real_backends",
        type="bool",
        default=True,
        help="flask-ploy: warn when a test uses an app on its configured backends (default: true)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{REAL_BACKENDS}: use the app's configured Ploy cache and state backends in"
        " this test, instead of the empty temporary ones the ploy plugin gives each test",
    )
    if config.getini("ploy_warn_real_backends"):
        from flask.signals import appcontext_pushed

        appcontext_pushed.connect(_watch, weak=False)
        config.add_cleanup(lambda: appcontext_pushed.disconnect(_watch))


def _ploy_of(app: Any) -> FlaskPloy | None:
    extensions = getattr(app, "extensions", None)
    if not isinstance(extensions, dict):
        return None
    return extensions.get("ploy")


def _isolates(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getini("ploy_isolation")) and not (
        request.node.get_closest_marker(REAL_BACKENDS)
    )


# -- isolation ---------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, None]:
    """Create the ``app`` fixture inside :meth:`FlaskPloy.isolating`, until
    the fixture is torn down (its own teardown still sees the temporary
    bindings)."""
    if fixturedef.argname != "app" or not _isolates(request):
        yield
        return
    from flask_ploy import FlaskPloy

    isolation = contextlib.ExitStack()
    # Registered before the fixture runs, so it runs after the fixture's teardown.
    fixturedef.addfinalizer(isolation.close)
    with FlaskPloy.isolating(until=isolation):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, None]:
    """Run the test's body inside :meth:`FlaskPloy.isolating`: an app it
    builds itself gets temporary bindings too."""
    if not item.config.getini("ploy_isolation") or item.get_closest_marker(REAL_BACKENDS):
        yield
        return
    from flask_ploy import FlaskPloy

    with FlaskPloy.isolating():
        yield


@pytest.fixture(autouse=True)
def ploy_isolation(request: pytest.FixtureRequest) -> Iterator[None]:
    """Give the ``app`` fixture's app empty bindings of its own for this test.

    Only for tests that use ``app`` and whose app has a FlaskPloy, and not
    for tests marked ``ploy_real_backends``. An app created by the fixture
    for this test already has them (see :func:`pytest_fixture_setup`); one
    made earlier gets them for the test. Every other ``PLOY_*`` setting
    (key prefix, size limits, ``PLOY_CACHE_ON_ERROR``, table name) stays as
    configured.
    """
    _active.clear()
    if REAL_BACKENDS not in (m.name for m in request.node.iter_markers()):
        _active.append(request.node)
    try:
        if "app" not in request.fixturenames or not _isolates(request):
            yield
            return
        app = request.getfixturevalue("app")
        ext = _ploy_of(app)
        if ext is None or ext.app_bindings(app).temporary:
            yield
            return
        with ext.isolated(app):
            yield
    finally:
        _active.clear()


#: The test item running now, unless it is marked ``ploy_real_backends``.
_active: list[pytest.Item] = []
#: Apps already warned about, once each.
_warned: weakref.WeakSet[Any] = weakref.WeakSet()


def _watch(sender: Any, **kwargs: Any) -> None:
    """``appcontext_pushed`` during a test: warn about an app on real backends."""
    if not _active:
        return
    ext = _ploy_of(sender)
    if ext is None or sender in _warned:
        return
    with contextlib.suppress(RuntimeError):  # not registered with this extension
        if ext.app_bindings(sender).temporary:
            return
        _warned.add(sender)
        warnings.warn(
            PloyRealBackendsWarning(
                f"the app {sender.import_name!r} uses its configured cache and state"
                " backends in this test: what the test writes reaches them. Make the app"
                " in an 'app' fixture (the ploy plugin gives it temporary bindings), use"
                " 'with ploy.isolated(app):', or mark the test"
                f" @pytest.mark.{REAL_BACKENDS}"
            ),
            stacklevel=2,
        )


# -- fixtures ----------------------------------------------------------------------


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
    from flask import current_app, g, has_app_context

    from flask_ploy import Env

    if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
        env = g.get("env")
        if isinstance(env, Env):
            yield env
            return
    env = Env(ploy.app_bindings(app))
    try:
        yield env
    finally:
        env.release()
