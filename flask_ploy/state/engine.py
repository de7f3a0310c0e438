"""SQLAlchemy engines for State: per-database defaults, and fork safety.

:func:`create_engine` builds the engine of a ``PLOY_STATE_URL`` with the
defaults that keep a request bounded (connect timeouts, TCP keepalives, a
bounded pool wait). Every engine State uses is disposed in a forked child
(``gunicorn --preload``), so no worker ever uses its parent's connections.
"""

from __future__ import annotations

import os
import uuid
import weakref
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from .._urls import redact_url
from ..errors import PloyConfigError
from .dialects import DIALECTS

_engines: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
#: A connection held open for each in-memory engine: a memdb database lives
#: while one connection to it is open.
_anchors: weakref.WeakKeyDictionary[sa.Engine, Any] = weakref.WeakKeyDictionary()


def _dispose_after_fork() -> None:  # pragma: no cover - runs in forked children
    # close=False leaves the parent's connections to the parent.
    for engine in list(_engines):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_dispose_after_fork)


def track(engine: sa.Engine) -> None:
    """Dispose *engine*'s pool in forked children (it is shared with the parent)."""
    _engines.add(engine)


def tracked() -> set[sa.Engine]:
    """The engines :func:`track` knows of (tests check that none leak)."""
    return set(_engines)


def parse_url(url: str) -> sa.URL:
    """Parse a state URL; refuse databases State has no dialect for.

    :raises PloyConfigError: The URL is malformed or names another database.
    """
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        # Not the parser's message: it may quote a piece of the password.
        problem = (
            "the port is not a number" if isinstance(exc, ValueError) else "not a database URL"
        )
        raise PloyConfigError(
            f"state URL {redact_url(url)}: {problem}; percent-encode special characters"
            " of a password (urllib.parse.quote(password, safe=''))"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in DIALECTS:
        raise PloyConfigError(
            f"state URL {redact_url(url)}: the {backend!r} database is not"
            " supported; use sqlite, postgresql or mysql/mariadb"
        )
    return parsed


def is_memory(url: sa.URL) -> bool:
    """Whether *url* is SQLite's private in-memory database (``sqlite://``)."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_engine(url: str, options: Mapping[str, Any], pool_timeout: float) -> sa.Engine:
    """Create the engine of a state URL with flask-ploy's defaults.

    *options* (``PLOY_STATE_ENGINE_OPTIONS``) win over the defaults.
    ``sqlite://`` becomes a named in-memory database that every connection
    of this engine shares (each thread gets a connection of its own); it
    lives until the engine is disposed.

    :param pool_timeout: Seconds to wait for a free pooled connection.
    :raises PloyConfigError: The URL is invalid or its driver is missing.
    """
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    options = dict(options)
    connect_args = dict(options.pop("connect_args", {}))
    options.setdefault("pool_timeout", pool_timeout)
    if backend == "sqlite":
        if is_memory(parsed):
            # A memdb VFS database: shared by name between this engine's
            # connections, with real locking (busy_timeout applies).
            name = f"/flask-ploy-{uuid.uuid4().hex}"
            parsed = parsed.set(database=f"file:{name}", query={"vfs": "memdb", "uri": "true"})
        connect_args.setdefault("check_same_thread", False)
    elif backend == "postgresql":
        options.setdefault("pool_pre_ping", True)
        connect_args.setdefault("connect_timeout", 5)
        if parsed.get_driver_name() in ("psycopg", "psycopg2"):
            # libpq has no read timeout: drop a connection whose server stops
            # acknowledging (a network black hole) after 30 s instead of hours.
            connect_args.setdefault("tcp_user_timeout", 30_000)
            connect_args.setdefault("keepalives", 1)
            connect_args.setdefault("keepalives_idle", 30)
            connect_args.setdefault("keepalives_interval", 10)
            connect_args.setdefault("keepalives_count", 3)
    else:
        options.setdefault("pool_pre_ping", True)
        connect_args.setdefault("connect_timeout", 5)
        connect_args.setdefault("read_timeout", 60)
        connect_args.setdefault("write_timeout", 60)
    try:
        engine = sa.create_engine(parsed, connect_args=connect_args, **options)
    except (ImportError, sa.exc.ArgumentError, TypeError) as exc:
        hint = ""
        if isinstance(exc, ImportError):
            extra = "postgres" if backend == "postgresql" else "mysql"
            hint = f"; install the driver with pip install 'flask-ploy[{extra}]'" + (
                " and use a mysql+pymysql:// or mariadb+pymysql:// URL" if extra == "mysql" else ""
            )
        raise PloyConfigError(f"state URL {redact_url(url)}: {exc}{hint}") from None
    track(engine)
    if parsed.query.get("vfs") == "memdb":
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        _anchors[engine] = engine.dialect.connect(*cargs, **cparams)
    return engine


def dispose(engine: sa.Engine) -> None:
    """Close *engine*'s pooled connections (and free an in-memory database)."""
    engine.dispose()
    anchor = _anchors.pop(engine, None)
    if anchor is not None:
        anchor.close()


def dbapi_error(engine: sa.Engine) -> type[BaseException]:
    """The driver's base exception class (``psycopg.Error``, ``sqlite3.Error``...)."""
    error = getattr(engine.dialect.loaded_dbapi, "Error", None)
    if isinstance(error, type) and issubclass(error, BaseException):
        return error
    return sa.exc.DBAPIError  # pragma: no cover - every DBAPI 2.0 driver has Error


def reason(exc: BaseException) -> str:
    """``"ErrorClass: first line of the message"`` of a (wrapped) driver error."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0] if text else ''}"
