"""The Flask extension: :class:`FlaskPloy`."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from weakref import WeakKeyDictionary

from flask import current_app, g, has_app_context
from flask.sansio.app import App
from flask.signals import appcontext_pushed

from . import config as _config
from .app_bindings import AppBindings, build
from .cache import MemoryBackend
from .cache.cached import CachedFunction, P
from .cache.cached import cached as _cached
from .cache.flight import BETA, LOCK_TIMEOUT
from .env import Env
from .observe import make_observer
from .state import StateStore

log = logging.getLogger("flask_ploy")

#: What :meth:`FlaskPloy.isolated` replaces unless told otherwise: every URL,
#: pool and client option, so no configured backend is reached. (The cache
#: and State URLs name files in the block's temporary folder.)
ISOLATED: dict[str, Any] = {
    "PLOY_CACHE_RESOURCES": {},
    "PLOY_CACHE_OPTIONS": {},
    "PLOY_STATE_RESOURCES": {},
    "PLOY_STATE_ENGINE_OPTIONS": {},
    "PLOY_STATE_BIND": None,
    "PLOY_STATE_SQLITE_SYNCHRONOUS": "OFF",
}


class FlaskPloy:
    """Ploy's Cache and State bindings for Flask, as ``g.env.<BINDING>``.

    Reads ``ploy.yaml`` (or ``PLOY_BINDINGS``) at :meth:`init_app` and
    raises :class:`~flask_ploy.PloyConfigError` if it is invalid. Nothing
    connects until a binding is used.

    :param app: Call :meth:`init_app` on this app.
    :param db: A Flask-SQLAlchemy ``SQLAlchemy`` instance. State then uses
        its engine (the bind named by ``PLOY_STATE_BIND``, or the default)
        and puts the state table on its metadata, so migrations see it.
    :param cache_client: A ``redis.Redis`` or ``redis.cluster.RedisCluster``
        to use for cache resources without their own URL, so one pool can
        serve flask-ploy, Flask-Limiter and Flask-Session.
    """

    def __init__(self, app: App | None = None, *, db: Any = None, cache_client: Any = None) -> None:
        self._db = db
        self._cache_client = cache_client
        self._apps: WeakKeyDictionary[App, AppBindings] = WeakKeyDictionary()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: App) -> None:
        """Read the app's bindings and register the extension on it.

        Sets every ``PLOY_*`` default on ``app.config``, adds ``g.env`` to
        every app context, returns borrowed connections at teardown, and
        adds the ``flask ploy`` commands. Logs a warning (logger
        ``flask_ploy``) for each ``PLOY_*`` key of ``app.config`` and each
        ``PLOY_*`` or ``FLASK_PLOY_*`` environment variable that has no
        effect (:func:`flask_ploy.config.settings_warnings`), and, unless
        the app is in debug or testing mode, once for the cache bindings on
        ``memory://`` (each process would have a cache of its own).

        :raises PloyConfigError: ``ploy.yaml`` or a ``PLOY_*`` setting is invalid.
        :raises RuntimeError: A FlaskPloy is already registered on *app*.
        """
        if "ploy" in app.extensions:
            raise RuntimeError(
                "A 'FlaskPloy' extension is already initialized on this app."
                " Import and use that instead."
            )
        for key, default in _config.DEFAULTS.items():
            app.config.setdefault(key, default.copy() if isinstance(default, dict) else default)
        for warning in _config.settings_warnings(app.config, os.environ):
            log.warning("flask-ploy: %s", warning)
        self._apps[app] = bindings = self.build(app)
        if not (app.debug or app.testing):
            for warning in per_process_warnings(bindings):
                log.warning("flask-ploy: %s", warning)
        app.extensions["ploy"] = self
        appcontext_pushed.connect(self._push_env, app)
        app.teardown_appcontext(_teardown)
        from .cli import ploy_cli

        app.cli.add_command(ploy_cli)
        if _isolating:
            _isolating[-1].enter_context(self.isolated(app))

    def build(self, app: App, **overrides: Any) -> AppBindings:
        """Make new bindings from *app*'s config, with *overrides* (``PLOY_*``
        keys) on top; connect to nothing.

        The caller owns the result: :meth:`AppBindings.close
        <flask_ploy.app_bindings.AppBindings.close>` it when done.
        ``flask ploy config`` uses it to check an edited ``ploy.yaml``.

        :raises PloyConfigError: The bindings or a setting are invalid.
        """
        made = build(
            {**_config.DEFAULTS, **app.config, **overrides},
            root_path=app.root_path,
            instance_path=app.instance_path,
            debug=bool(app.debug or app.testing),
            db=self._db,
            cache_client=self._cache_client,
        )
        try:
            made.observe(make_observer(made.settings, bool(app.debug)))
        except Exception:
            made.close()
            raise
        return made

    def app_bindings(self, app: App | None = None) -> AppBindings:
        """The live bindings of *app* (default: the current app).

        :raises RuntimeError: *app* is not registered with this extension.
        """
        if app is None or hasattr(app, "_get_current_object"):  # current_app, a proxy
            app = (app or current_app)._get_current_object()  # type: ignore[attr-defined]
        try:
            return self._apps[app]
        except KeyError:
            raise RuntimeError(
                "The current Flask app is not registered with this 'FlaskPloy'"
                " instance. Did you forget to call 'init_app', or did you"
                " create multiple 'FlaskPloy' instances?"
            ) from None

    def bindings(self, app: App | None = None) -> _config.Bindings:
        """The validated bindings of *app* (default: the current app)."""
        return self.app_bindings(app).bindings

    def cache_stats(self, app: App | None = None) -> dict[str, dict[str, int]]:
        """Failure counts per cache backend URL (passwords masked).

        ``failures``: operations that failed on the backend; ``skipped``:
        operations not tried while its circuit breaker was open; ``busy``:
        operations that found no free pooled connection in time (not failures).
        """
        return {
            b.display_url: {"failures": b.failures, "skipped": b.skipped, "busy": b.busy}
            for b in self.app_bindings(app).cache_backends()
        }

    def stats(self, app: App | None = None) -> dict[str, Any]:
        """This process's counters for *app* (default: the current app), as plain data.

        ``{"features": [...], "bindings": {name: {"resource": r, "ops":
        {op: counters}}}, "cache_backends": cache_stats()}``. The counters
        of an operation (:class:`flask_ploy.observe.stats.OpStats`):
        ``calls``, ``outcomes`` (``ok``, ``error``, ``skipped``,
        ``invalid``), ``errors`` by kind, ``hits`` and ``misses`` (cache
        reads), ``bytes_in``/``bytes_out`` (UTF-8), ``seconds`` and the
        cumulative latency ``buckets`` (upper bound in seconds -> count).
        ``bindings`` is empty unless ``PLOY_METRICS`` is on. Counts are
        of this process only, since it started; thread-safe.
        """
        bindings = self.app_bindings(app)
        observer = bindings.observer
        return {
            "features": [] if observer is None else observer.features(),
            "bindings": {} if observer is None else observer.snapshot(),
            "cache_backends": self.cache_stats(app),
        }

    def cached(
        self,
        binding: str,
        ttl: int | timedelta | None = None,
        *,
        lock_timeout: float = LOCK_TIMEOUT,
        beta: float = BETA,
        name: str | None = None,
    ) -> Callable[[Callable[P, str]], CachedFunction[P]]:
        """Keep a function's results in the cache binding *binding*.

        .. code-block:: python

            @ploy.cached("CACHE", ttl=600)
            def report(report_id: int) -> str:
                return json.dumps(compute_report(report_id))

        A call returns the cached result for its arguments, or computes it
        with :meth:`Cache.get_or_set <flask_ploy.Cache.get_or_set>` (one
        computation at a time across processes, early recomputation; *ttl*,
        *lock_timeout* and *beta* are its). The key is the function's module
        and qualified name with its arguments as JSON, bound to its
        parameters (``report(1)`` and ``report(report_id=1)`` are one key):
        the same in every process, never pickled. Arguments must be
        ``str``, ``int``, ``float``, ``bool``, ``None`` or tuples of them;
        others (subclasses such as enums too) raise :class:`TypeError`. The
        function must return a ``str``, and be a plain function, not an
        ``async def``.

        A lambda, or a function defined inside another (a closure a factory
        makes), has no name of its own: give it one with *name*, the key's
        first part, or the decorator raises :class:`TypeError` (every
        closure of one factory would otherwise share its keys).

        The decorated function has ``uncached(...)`` (call it without the
        cache), ``invalidate(...)`` (delete the result for these arguments)
        and ``key(...)``. Calls need an app context: the binding is
        ``g.env.<binding>`` of the current app.
        """
        return _cached(binding, ttl, lock_timeout=lock_timeout, beta=beta, name=name)

    def state_store(self, binding: str, app: App | None = None) -> StateStore:
        """The :class:`~flask_ploy.state.StateStore` behind a State binding."""
        return self.app_bindings(app).state_store(binding)

    @contextlib.contextmanager
    def isolated(self, app: App, **overrides: Any) -> Iterator[Env]:
        """Give *app* temporary, empty bindings inside the ``with`` block.

        Every cache resource shares one new SQLite cache file and every
        State resource one new SQLite database, in a temporary folder,
        whatever the app configures (``db=`` and ``cache_client=`` too), so
        a process forked in the block (pytest-flask's ``live_server``) sees
        the same data; both files skip ``fsync``. The other
        ``PLOY_*`` settings stay. *overrides* (``PLOY_*`` keys) replace
        either, e.g. ``PLOY_STATE_URL="postgresql+psycopg:///test"`` (a real
        store: neither new nor emptied). App
        contexts pushed in the block, and one active when it starts, see
        the temporary bindings; the app's own come back at the end.

        Yields an :class:`Env` of the temporary bindings (for seeding data
        outside a context). The pytest plugin wraps this for each test.

        :raises PloyConfigError: An override is invalid.
        """
        folder = tempfile.mkdtemp(prefix="flask-ploy-")
        try:
            temporary = FlaskPloy().build(
                app,
                **{
                    **ISOLATED,
                    "PLOY_CACHE_URL": f"sqlite:///{folder}/cache.sqlite3?synchronous=off",
                    "PLOY_STATE_URL": f"sqlite:///{folder}/state.sqlite3",
                    **overrides,
                },
            )
            temporary.temporary = True
            old = self._swap(app, temporary)
            env = Env(temporary)
            try:
                yield env
            finally:
                env.release()
                self._swap(app, old)
                temporary.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    @contextlib.contextmanager
    def isolating(until: contextlib.ExitStack | None = None) -> Iterator[None]:
        """Give every app initialised inside the ``with`` block temporary,
        empty bindings, as :meth:`isolated` does, from ``init_app`` on.

        So data an app factory or fixture seeds right after
        ``FlaskPloy(app)`` goes to the temporary bindings too, never to the
        configured backends. The apps get their configured bindings back
        when the block ends, or, given *until*, when that
        :class:`~contextlib.ExitStack` closes. The pytest plugin wraps the
        creation of the ``app`` fixture (until its teardown) and each test's
        body in it.
        """
        with contextlib.ExitStack() as own:
            stack = own if until is None else until
            _isolating.append(stack)
            try:
                yield
            finally:
                _isolating.remove(stack)

    def _swap(self, app: App, bindings: AppBindings) -> AppBindings:
        """Make *bindings* the app's; an active context of *app* gets them too."""
        old = self.app_bindings(app)
        self._apps[app] = bindings
        if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
            env = g.pop("_ploy_env", None)
            if env is not None:
                env.release()
            _set_env(Env(bindings))
        return old

    def _push_env(self, sender: App, **kwargs: Any) -> None:
        """``appcontext_pushed``: give the new context its ``g.env``."""
        bindings = self._apps.get(sender)
        if bindings is not None:
            _set_env(Env(bindings))


#: The exit stacks of the active :meth:`FlaskPloy.isolating` blocks.
_isolating: list[contextlib.ExitStack] = []


def per_process_warnings(bindings: AppBindings) -> list[str]:
    """One line per ``memory://`` backend of *bindings*: a cache each process
    keeps to itself, so gunicorn workers, the reloader and ``flask ploy
    cache`` each see a different one (logged by :meth:`FlaskPloy.init_app`,
    listed by ``flask ploy check``)."""
    lines = []
    for backend in bindings.cache_backends():
        if isinstance(backend, MemoryBackend):
            names = ", ".join(n for n, c in bindings.caches.items() if c.backend is backend)
            lines.append(
                f"{names} {'use' if ',' in names else 'uses'} {backend.display_url},"
                " a cache in each process's own memory:"
                " gunicorn workers, the reloader and 'flask ploy cache' each see a different"
                " one. Leave PLOY_CACHE_URL unset for a SQLite file in the instance folder,"
                " shared by the app's processes on this machine, or use redis://"
            )
    return lines


def _set_env(env: Env) -> None:
    d = g._get_current_object().__dict__
    d["env"] = env
    d["_ploy_env"] = env  # what teardown returns, even if the app rebinds g.env


def _teardown(exc: BaseException | None) -> None:
    env: Env | None = g.pop("_ploy_env", None)
    if env is not None:
        env.release()
