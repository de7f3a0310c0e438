"""The live bindings of one app: :class:`AppBindings` and :func:`build`.

:func:`build` turns an app's config (``ploy.yaml`` or ``PLOY_BINDINGS``,
and the ``PLOY_*`` settings) into cache backends and state stores, one per
URL, without opening a connection. :class:`~flask_ploy.FlaskPloy` keeps one
:class:`AppBindings` per app; ``flask ploy`` commands and the pytest plugin
use them through the extension's public accessors.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from . import config as _config
from ._urls import redact_url
from .cache import Cache, CacheBackend, backend_for_client, make_backend
from .errors import PloyConfigError
from .observe import Observer
from .state import StateSettings, StateStore

log = logging.getLogger("flask_ploy")

#: The SQLite file of State when no URL is configured, in the instance folder.
DEFAULT_STATE_FILE = "ploy-state.sqlite3"
#: The SQLite file of the cache when no URL is configured, in the instance folder.
DEFAULT_CACHE_FILE = "ploy-cache.sqlite3"


@dataclass(frozen=True)
class Backend:
    """One cache backend or state store, and the bindings that use it.

    :ivar kind: ``"cache"`` or ``"state"``.
    :ivar display_url: Its URL, passwords masked.
    :ivar ping: Round-trips to it; raises if it is down.
    :ivar bindings: The names of the bindings on it, in file order.
    """

    kind: str
    display_url: str
    ping: Callable[[], None]
    bindings: tuple[str, ...]


@dataclass
class AppBindings:
    """Everything flask-ploy keeps for one app: its bindings and what serves them.

    :ivar bindings: The validated bindings (``ploy.yaml``).
    :ivar settings: The checked ``PLOY_*`` settings.
    :ivar caches: Cache binding name -> :class:`~flask_ploy.Cache`.
    :ivar states: State binding name -> ``(store, resource)``.
    """

    bindings: _config.Bindings
    settings: _config.Settings
    caches: dict[str, Cache] = field(default_factory=dict)
    states: dict[str, tuple[StateStore, str]] = field(default_factory=dict)
    #: What observes the bindings (:mod:`flask_ploy.observe`); ``None`` when
    #: ``PLOY_METRICS``, ``PLOY_TRACING`` and ``PLOY_RECORD_OPS`` are off, and
    #: then ``g.env`` hands out the bindings themselves.
    observer: Observer | None = None
    #: The cache bindings as ``g.env`` shows them: :attr:`caches`, or their
    #: observed proxies (set by :meth:`observe`).
    env_caches: dict[str, Any] = field(default_factory=dict)
    #: Made by :meth:`FlaskPloy.isolated <flask_ploy.FlaskPloy.isolated>`: empty,
    #: temporary backends, not the configured ones.
    temporary: bool = False
    # Keyed by URL, which may hold a password: not in the repr.
    _cache_backends: dict[str, CacheBackend] = field(default_factory=dict, repr=False)
    _state_stores: dict[str, StateStore] = field(default_factory=dict, repr=False)

    def observe(self, observer: Observer | None) -> None:
        """Hand out bindings observed by *observer* (``None``: the bindings themselves)."""
        self.observer = observer
        caches = self.caches
        self.env_caches = dict(caches) if observer is None else observer.wrap_caches(caches)

    def state_store(self, name: str) -> StateStore:
        """The :class:`~flask_ploy.state.StateStore` behind State binding *name*."""
        return self.states[name][0]

    def backends(self) -> list[Backend]:
        """Every distinct cache backend and state store, with its bindings."""
        found: list[Backend] = []
        for backend in self._cache_backends.values():
            names = tuple(n for n, c in self.caches.items() if c.backend is backend)
            found.append(Backend("cache", backend.display_url, backend.ping, names))
        for store in self._state_stores.values():
            names = tuple(n for n, (s, _) in self.states.items() if s is store)
            found.append(Backend("state", store.display_url, store.ping, names))
        return found

    def cache_backends(self) -> list[CacheBackend]:
        """Every distinct cache backend."""
        return list(self._cache_backends.values())

    def close(self) -> None:
        """Close every pool flask-ploy created for these bindings."""
        for backend in self._cache_backends.values():
            backend.close()
        for store in self._state_stores.values():
            store.dispose()


def build(
    config: Mapping[str, Any],
    *,
    root_path: str,
    instance_path: str,
    debug: bool = False,
    db: Any = None,
    cache_client: Any = None,
) -> AppBindings:
    """Make the bindings an app's *config* describes; connect to nothing.

    :param root_path: Where ``ploy.yaml`` is looked up (``app.root_path``).
    :param instance_path: Where the default SQLite files go.
    :param debug: The app runs in debug or testing mode (unused; kept for callers).
    :param db: A Flask-SQLAlchemy instance whose engine State uses.
    :param cache_client: A redis-py client for cache resources without a URL.
    :raises PloyConfigError: The bindings or a setting are invalid.
    """
    bindings = _config.load_bindings(config, root_path)
    settings = _config.read_settings(config, bindings)
    app_bindings = AppBindings(bindings, settings)
    try:
        _build_caches(app_bindings, instance_path, cache_client)
        _build_states(app_bindings, instance_path, db)
        app_bindings.observe(None)
    except Exception:
        app_bindings.close()
        raise
    return app_bindings


def _build_caches(into: AppBindings, instance_path: str, client: Any) -> None:
    """One backend per cache URL. No URL (and no *client*): the SQLite file
    :data:`DEFAULT_CACHE_FILE` in the instance folder, which every process
    of the app on this machine shares; relative ``sqlite:`` paths go there too."""
    s = into.settings
    if client is not None and s.cache_url:
        raise PloyConfigError(
            "app.config['PLOY_CACHE_URL'] is set, but FlaskPloy was given"
            " cache_client=; remove one of them"
        )
    for b in into.bindings.of_kind("cache"):
        url = s.cache_resources.get(b.resource) or s.cache_url
        if url is None and client is None:
            url = f"sqlite:///{os.path.join(instance_path, DEFAULT_CACHE_FILE)}"
        elif url is not None and url.startswith("sqlite:"):
            url = resolve_sqlite(url, instance_path)
        key = url or "(client)"
        backend = into._cache_backends.get(key)
        if backend is None:
            if url is None:
                backend = backend_for_client(client, s.cache_cooldown)
            else:
                backend = make_backend(
                    url,
                    options=s.cache_options,
                    cooldown=s.cache_cooldown,
                    max_entries=s.cache_max_entries,
                    max_bytes=s.cache_max_bytes,
                )
            into._cache_backends[key] = backend
        into.caches[b.name] = Cache(
            b.name,
            b.resource,
            backend,
            prefix=s.cache_key_prefix,
            max_key_bytes=s.max_key_bytes,
            max_value_bytes=s.max_value_bytes,
            on_error=s.cache_on_error,
            default_ttl=s.cache_default_ttl,
        )


def _build_states(into: AppBindings, instance_path: str, db: Any) -> None:
    s = into.settings
    if db is not None and s.state_url:
        raise PloyConfigError(
            "app.config['PLOY_STATE_URL'] is set, but FlaskPloy was given db=;"
            " State uses the Flask-SQLAlchemy engine then. Remove one of them"
        )
    if db is None and s.state_bind is not None:
        raise PloyConfigError(
            "app.config['PLOY_STATE_BIND'] is set, but FlaskPloy was not given db="
        )
    settings = StateSettings(
        table=s.state_table,
        max_key_bytes=s.max_key_bytes,
        max_value_bytes=s.max_value_bytes,
        sqlite_synchronous=s.state_sqlite_synchronous,
        sqlite_wal_limit=s.state_sqlite_wal_limit,
        busy_timeout=s.state_busy_timeout,
        pool_timeout=s.state_pool_timeout,
    )
    for b in into.bindings.of_kind("state"):
        url = s.state_resources.get(b.resource)
        if url is None and db is not None:
            key = "(db)"
        else:
            if url is not None:
                check_state_url(url, f"PLOY_STATE_RESOURCES[{b.resource!r}]")
            elif s.state_url is not None:
                check_state_url(s.state_url, "PLOY_STATE_URL")
            url = resolve_sqlite(url or s.state_url, instance_path)
            key = url
        store = into._state_stores.get(key)
        if store is None:
            if key == "(db)":
                store = StateStore(None, settings, db=db, bind=s.state_bind)
            else:
                store = StateStore(url, settings, engine_options=s.state_engine_options)
            into._state_stores[key] = store
        into.states[b.name] = (store, b.resource)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_state_url(url: str, key: str) -> None:
    """Refuse, with the URL to write instead, state URLs that SQLAlchemy
    would refuse or that need a driver flask-ploy does not install.

    ``postgres://`` (Heroku's and others' spelling); ``postgresql://`` and
    ``postgresql+psycopg2://`` without psycopg2; ``mysql://`` and
    ``mariadb://`` without mysqlclient: flask-ploy's extras install psycopg 3
    and PyMySQL.

    :raises PloyConfigError: Naming the config key and the URL to use.
    """
    scheme, sep, _ = url.partition("://")
    if not sep:
        return
    backend, _, driver = scheme.lower().partition("+")
    shown = f"app.config[{key!r}] = {redact_url(url)!r}"
    if backend == "postgres":
        raise PloyConfigError(
            f"{shown}: SQLAlchemy does not accept the postgres:// spelling (Heroku's"
            " and other hosts' DATABASE_URL); write postgresql+psycopg://"
            f"{redact_url(url).partition('://')[2]} (psycopg 3: pip install"
            " 'flask-ploy[postgres]')"
        )
    if backend == "postgresql" and driver in ("", "psycopg2") and not _installed("psycopg2"):
        raise PloyConfigError(
            f"{shown}: {scheme}:// uses the psycopg2 driver, which is not installed;"
            " write postgresql+psycopg:// (psycopg 3: pip install 'flask-ploy[postgres]')"
        )
    if backend in ("mysql", "mariadb") and driver in ("", "mysqldb") and not _installed("MySQLdb"):
        raise PloyConfigError(
            f"{shown}: {scheme}:// uses the mysqlclient driver (MySQLdb), which is"
            f" not installed; write {backend}+pymysql:// (PyMySQL: pip install"
            " 'flask-ploy[mysql]')"
        )


def resolve_sqlite(url: str | None, instance_path: str) -> str:
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
    database = parsed.database
    if (
        not database
        or database == ":memory:"
        or database.startswith("file:")
        or os.path.isabs(database)
    ):
        return url
    os.makedirs(instance_path, exist_ok=True)
    return parsed.set(database=os.path.join(instance_path, database)).render_as_string(
        hide_password=False
    )
