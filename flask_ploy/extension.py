"""The Flask extension: :class:`FlaskPloy` and the per-context :class:`Env`."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from flask import current_app, g
from flask.globals import _cv_app
from flask.sansio.app import App
from flask.signals import appcontext_pushed

from . import config as _config
from .cache import Cache, CacheBackend, backend_for_client, make_backend
from .errors import PloyConfigError, UnknownBinding
from .state import State, StateSettings, StateStore, _Lease

log = logging.getLogger("flask_ploy")

DEFAULT_STATE_FILE = "ploy-state.sqlite3"


@dataclass
class _AppState:
    """Everything flask-ploy keeps for one app."""

    bindings: _config.Bindings
    settings: _config.Settings
    caches: dict[str, Cache]
    states: dict[str, tuple[StateStore, str]]
    # Keyed by URL, which may hold a password: not in the repr.
    cache_backends: dict[str, CacheBackend] = field(default_factory=dict, repr=False)
    state_stores: dict[str, StateStore] = field(default_factory=dict, repr=False)

    def close(self) -> None:
        """Close every pool flask-ploy created for this app."""
        for backend in self.cache_backends.values():
            backend.close()
        for store in self.state_stores.values():
            store.dispose()


class Env:
    """The bindings of one app context: ``g.env``.

    ``g.env.CACHE`` is a :class:`~flask_ploy.cache.Cache` shared by the app;
    ``g.env.STATE`` is a :class:`~flask_ploy.state.State` made on first
    access in this context. An unknown name raises
    :class:`~flask_ploy.errors.UnknownBinding` listing the valid ones.
    """

    def __init__(self, state: _AppState) -> None:
        d = self.__dict__
        d.update(state.caches)
        d["_ploy"] = state
        d["_leases"] = {}

    def __getattr__(self, name: str) -> Any:
        spec = self._ploy.states.get(name)
        if spec is None:
            if name.startswith("__"):
                raise AttributeError(name)
            names = ", ".join(b.name for b in self._ploy.bindings.bindings) or "(none)"
            raise UnknownBinding(
                f"g.env has no binding {name!r}; the bindings in"
                f" {self._ploy.bindings.source} are: {names}"
            )
        binding = State(name, spec[1], spec[0], self)
        self.__dict__[name] = binding
        return binding

    def __dir__(self) -> list[str]:
        return [b.name for b in self._ploy.bindings.bindings]

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dir__())

    def __contains__(self, name: object) -> bool:
        return name in self._ploy.caches or name in self._ploy.states

    def __repr__(self) -> str:
        return f"<Env {' '.join(self.__dir__())}>"

    def _lease(self, store: StateStore) -> _Lease:
        lease: _Lease | None = self._leases.get(store)
        if lease is None:
            lease = self._leases[store] = store.checkout()
        return lease

    def _forget(self, store: StateStore | None) -> None:
        for value in self.__dict__.values():
            if isinstance(value, State) and (store is None or value._store is store):
                value._cur = None

    def _drop(self, store: StateStore, exc: BaseException) -> None:
        """Throw away a broken connection; the next operation borrows anew."""
        lease = self._leases.pop(store, None)
        self._forget(store)
        if lease is not None and lease.fairy is not None:
            lease.fairy.invalidate(exc)
            lease.fairy = None

    def _release(self) -> None:
        """Return every borrowed connection (``teardown_appcontext``)."""
        leases = self._leases
        if not leases:
            return
        self._forget(None)
        for store, lease in list(leases.items()):
            store.checkin(lease)
        leases.clear()


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
        self._app_state: WeakKeyDictionary[App, _AppState] = WeakKeyDictionary()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: App) -> None:
        """Read the app's bindings and register the extension on it.

        Sets every ``PLOY_*`` default on ``app.config``, adds ``g.env`` to
        every app context, returns borrowed connections at teardown, and
        adds the ``flask ploy`` commands.

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
        self._app_state[app] = self._build(app)
        app.extensions["ploy"] = self
        app.teardown_appcontext(_teardown)
        from .cli import ploy_cli

        app.cli.add_command(ploy_cli)

    def _build(self, app: App, **overrides: Any) -> _AppState:
        """Make the bindings of *app* from its config (plus *overrides*)."""
        config = {**app.config, **overrides}
        bindings = _config.load_bindings(config, app.root_path)
        settings = _config.read_settings(config, bindings)
        state = _AppState(bindings, settings, {}, {})
        try:
            self._build_caches(app, state)
            self._build_states(app, state)
        except Exception:
            state.close()
            raise
        return state

    def _build_caches(self, app: App, state: _AppState) -> None:
        s = state.settings
        client = self._cache_client
        if client is not None and s.cache_url:
            raise PloyConfigError(
                "app.config['PLOY_CACHE_URL'] is set, but FlaskPloy was given"
                " cache_client=; remove one of them"
            )
        for b in state.bindings.of_kind("cache"):
            url = s.cache_resources.get(b.resource) or s.cache_url
            key = url or ("(client)" if client is not None else "memory://")
            backend = state.cache_backends.get(key)
            if backend is None:
                if url is None and client is not None:
                    backend = backend_for_client(client, s.cache_cooldown)
                else:
                    if url is None and not (app.debug or app.testing):
                        log.info(
                            "flask-ploy: PLOY_CACHE_URL is not set, so the cache is"
                            " in memory and per process; set it to a redis:// URL"
                            " to share the cache between workers"
                        )
                    backend = make_backend(
                        key,
                        options=s.cache_options,
                        cooldown=s.cache_cooldown,
                        max_entries=s.cache_max_entries,
                    )
                state.cache_backends[key] = backend
            state.caches[b.name] = Cache(
                b.name,
                b.resource,
                backend,
                prefix=s.cache_key_prefix,
                max_key_bytes=s.max_key_bytes,
                max_value_bytes=s.max_value_bytes,
                on_error=s.cache_on_error,
            )

    def _build_states(self, app: App, state: _AppState) -> None:
        s = state.settings
        if self._db is not None and s.state_url:
            raise PloyConfigError(
                "app.config['PLOY_STATE_URL'] is set, but FlaskPloy was given db=;"
                " State uses the Flask-SQLAlchemy engine then. Remove one of them"
            )
        if self._db is None and s.state_bind is not None:
            raise PloyConfigError(
                "app.config['PLOY_STATE_BIND'] is set, but FlaskPloy was not given db="
            )
        settings = StateSettings(
            table=s.state_table,
            max_key_bytes=s.max_key_bytes,
            max_value_bytes=s.max_value_bytes,
            sqlite_synchronous=s.state_sqlite_synchronous,
            busy_timeout=s.state_busy_timeout,
        )
        for b in state.bindings.of_kind("state"):
            url = s.state_resources.get(b.resource)
            if url is None and self._db is not None:
                key = "(db)"
            else:
                url = _resolve_sqlite(url or s.state_url, app.instance_path)
                key = url
            store = state.state_stores.get(key)
            if store is None:
                if key == "(db)":
                    store = StateStore(None, settings, db=self._db, bind=s.state_bind)
                else:
                    store = StateStore(url, settings, engine_options=s.state_engine_options)
                state.state_stores[key] = store
            state.states[b.name] = (store, b.resource)

    def _get_state(self, app: App | None = None) -> _AppState:
        if app is None:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        try:
            return self._app_state[app]
        except KeyError:
            raise RuntimeError(
                "The current Flask app is not registered with this 'FlaskPloy'"
                " instance. Did you forget to call 'init_app', or did you"
                " create multiple 'FlaskPloy' instances?"
            ) from None

    def bindings(self, app: App | None = None) -> _config.Bindings:
        """The validated bindings of *app* (default: the current app)."""
        return self._get_state(app).bindings

    def cache_stats(self, app: App | None = None) -> dict[str, dict[str, int]]:
        """Failure counts per cache backend URL (passwords masked).

        ``failures``: operations that failed on the backend; ``skipped``:
        operations not tried while its circuit breaker was open.
        """
        return {
            b.display_url: {"failures": b.failures, "skipped": b.skipped}
            for b in self._get_state(app).cache_backends.values()
        }

    def state_store(self, binding: str, app: App | None = None) -> StateStore:
        """The :class:`~flask_ploy.state.StateStore` behind a State binding."""
        return self._get_state(app).states[binding][0]

    def _swap(self, app: App, state: _AppState) -> _AppState:
        """Replace the bindings of *app* (the pytest plugin); return the old ones."""
        old = self._app_state[app]
        self._app_state[app] = state
        ctx = _cv_app.get(None)
        if ctx is not None and ctx.app is app:
            env = ctx.g.__dict__.get("_ploy_env")
            if env is not None:
                env._release()
            _push_env(ctx.g, state)
        return old


def _resolve_sqlite(url: str | None, instance_path: str) -> str:
    """The default SQLite file, and relative SQLite paths, go in the instance folder."""
    if url is None:
        os.makedirs(instance_path, exist_ok=True)
        return f"sqlite:///{os.path.join(instance_path, DEFAULT_STATE_FILE)}"
    if not url.startswith("sqlite"):
        return url
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return url  # StateStore reports it
    db = parsed.database
    if not db or db == ":memory:" or db.startswith("file:") or os.path.isabs(db):
        return url
    os.makedirs(instance_path, exist_ok=True)
    return parsed.set(database=os.path.join(instance_path, db)).render_as_string(
        hide_password=False
    )


def _push_env(globals_: Any, state: _AppState) -> None:
    env = Env(state)
    d = globals_.__dict__
    d["env"] = env
    d["_ploy_env"] = env


def _on_appcontext_pushed(sender: App, **kwargs: Any) -> None:
    ext = sender.extensions.get("ploy")
    if ext is None:
        return
    state = ext._app_state.get(sender)
    if state is not None:
        _push_env(_cv_app.get().g, state)


appcontext_pushed.connect(_on_appcontext_pushed)


def _teardown(exc: BaseException | None) -> None:
    env: Env | None = g.pop("_ploy_env", None)
    if env is not None:
        env._release()
