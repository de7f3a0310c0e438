"""The state table on one database: :class:`StateStore`.

A store owns (or borrows from Flask-SQLAlchemy) the engine of one database,
creates the state table on first use, and lends connections to
:class:`~flask_ploy.state.connections.Lease` objects: autocommit mode, the
dialect's per-connection set-up, and everything rolled back on return.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .._urls import redact_url
from ..errors import PloyConfigError, StateUnavailable
from . import engine as _engine
from .connections import Lease
from .dialects import DIALECTS, Dialect
from .schema import DEFAULT_TABLE, make_table


@dataclass(frozen=True)
class StateSettings:
    """The ``PLOY_*`` settings a store and its bindings need.

    :ivar busy_timeout: Seconds an operation may wait for locks, in all.
    :ivar pool_timeout: Seconds to wait for a free pooled connection.
    """

    table: str = DEFAULT_TABLE
    max_key_bytes: int = 512
    max_value_bytes: int = 25 * 1024 * 1024
    sqlite_synchronous: str = "NORMAL"
    busy_timeout: float = 10.0
    pool_timeout: float = 10.0


class StateStore:
    """The state table on one database, shared by every binding using it.

    Created with a URL (flask-ploy owns the engine) or with a Flask-SQLAlchemy
    ``db`` (the engine of bind *bind* is looked up on first use, so either
    extension may be initialised first).

    :ivar display_url: The URL with its password masked.
    """

    def __init__(
        self,
        url: str | None,
        settings: StateSettings,
        *,
        engine_options: Mapping[str, Any] | None = None,
        db: Any = None,
        bind: str | None = None,
    ) -> None:
        self.settings = settings
        self._db = db
        self._bind = bind
        self._engine: sa.Engine | None = None
        self._lock = threading.Lock()
        self._dialect_class: type[Dialect] | None = None
        #: The driver's base exception class, once known.
        self.dbapi_error: type[BaseException] = sa.exc.DBAPIError
        if db is not None:
            self.display_url = f"Flask-SQLAlchemy bind {bind or 'default'!r}"
            metadata = db.metadata if bind is None else _bind_metadata(db, bind)
            self.table = make_table(metadata, settings.table)
            self.foreign = True
        else:
            assert url is not None
            self.display_url = redact_url(url)
            self.table = make_table(sa.MetaData(), settings.table)
            self.foreign = False
            self._engine = _engine.create_engine(
                url, engine_options or {}, pool_timeout=settings.pool_timeout
            )

    def __repr__(self) -> str:
        return f"<StateStore {self.display_url}>"

    #: The :class:`~flask_ploy.state.dialects.Dialect`, set by the first checkout.
    dialect: Dialect

    @property
    def dialect_class(self) -> type[Dialect]:
        """The :class:`~flask_ploy.state.dialects.Dialect` subclass of the engine's database.

        Known without connecting.

        :raises PloyConfigError: State has no dialect for that database.
        """
        cls = self._dialect_class
        if cls is None:
            name = self.engine.dialect.name
            cls = DIALECTS.get(name)
            if cls is None:
                raise PloyConfigError(
                    f"state URL {self.display_url}: the {name!r} database"
                    " is not supported; use sqlite, postgresql or mysql/mariadb"
                )
            self._dialect_class = cls
        return cls

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (needs an app context with ``db=``)."""
        if self._engine is not None:
            return self._engine
        try:
            engines = self._db.engines
        except RuntimeError as exc:
            raise RuntimeError(
                "FlaskPloy was given db=, but the current app is not registered"
                " with that Flask-SQLAlchemy instance. Call db.init_app(app) as well."
            ) from exc
        if self._bind not in engines:
            raise PloyConfigError(
                f"PLOY_STATE_BIND: Flask-SQLAlchemy has no bind {self._bind!r};"
                f" its binds are {sorted(k or 'None' for k in engines)}"
            )
        engine: sa.Engine = engines[self._bind]
        _engine.track(engine)
        return engine

    def _setup(self, engine: sa.Engine) -> Dialect:
        """Create the table if missing and prepare the dialect; once."""
        with self._lock:
            dialect: Dialect | None = getattr(self, "dialect", None)
            if dialect is not None:
                return dialect
            cls = self.dialect_class
            self.dbapi_error = _engine.dbapi_error(engine)
            try:
                self.table.create(engine, checkfirst=True)
            except sa.exc.DBAPIError as exc:
                # Another process may have created it in the meantime.
                if not sa.inspect(engine).has_table(self.settings.table):
                    raise StateUnavailable(
                        f"state database {self.display_url}: cannot create table"
                        f" {self.settings.table!r}: {_engine.reason(exc)}"
                    ) from exc
            self.dialect = dialect = cls(engine.dialect, self.settings.table)
            return dialect

    def checkout(self, lease: Lease) -> None:
        """Borrow a connection for *lease*, in autocommit mode.

        :raises StateUnavailable: The database cannot be reached, or no pooled
            connection was free within ``PLOY_STATE_POOL_TIMEOUT``.
        """
        engine = self.engine
        dialect: Dialect | None = getattr(self, "dialect", None)
        if dialect is None:
            dialect = self._setup_or_fail(engine)
        try:
            fairy = engine.raw_connection()
        except sa.exc.TimeoutError as exc:
            raise StateUnavailable(
                f"state database {self.display_url}: no pooled connection was free within"
                f" {self.settings.pool_timeout:g} s (PLOY_STATE_POOL_TIMEOUT); more app"
                " contexts use State at once than the pool holds (pool_size + max_overflow"
                " in PLOY_STATE_ENGINE_OPTIONS)"
            ) from exc
        except (sa.exc.DBAPIError, self.dbapi_error) as exc:
            # raw_connection() raises the driver's own errors, unwrapped
            raise StateUnavailable(
                f"state database {self.display_url} is unavailable: {_engine.reason(exc)}"
            ) from exc
        conn: Any = fairy.driver_connection
        try:
            previous = dialect.autocommit(conn, True)
            if "ploy" not in fairy.info:
                dialect.prepare(conn, self.settings)
                fairy.info["ploy"] = True
            cur = conn.cursor()
        except Exception as exc:
            fairy.invalidate(exc)
            raise StateUnavailable(
                f"state database {self.display_url} is unavailable: {_engine.reason(exc)}"
            ) from exc
        lease.fairy, lease.conn, lease.cur = fairy, conn, cur
        lease.restore = previous if (self.foreign and not previous) else None

    def _setup_or_fail(self, engine: sa.Engine) -> Dialect:
        try:
            return self._setup(engine)
        except sa.exc.DBAPIError as exc:
            raise StateUnavailable(
                f"state database {self.display_url} is unavailable: {_engine.reason(exc)}"
            ) from exc

    def checkin(self, lease: Lease) -> None:
        """Return *lease*'s connection, rolling back anything left open."""
        fairy = lease.fairy
        if fairy is None:
            return
        conn, cur = lease.conn, lease.cur
        lease.fairy = lease.conn = lease.cur = None
        try:
            if lease.in_tx or self.dialect.in_transaction(conn):
                cur.execute(self.dialect.rollback)
            cur.close()
            if lease.restore is not None:
                self.dialect.autocommit(conn, lease.restore)
        except Exception as exc:
            fairy.invalidate(exc)
        lease.in_tx = lease.wait_changed = False
        fairy.close()

    def dispose(self) -> None:
        """Close the pool's connections, if flask-ploy owns the engine."""
        if self._engine is not None:
            _engine.dispose(self._engine)

    def ping(self) -> None:
        """Borrow a connection, run ``SELECT 1`` and return it.

        :raises StateUnavailable: The database cannot be reached.
        """
        lease = Lease(self, threading.get_ident())
        try:
            lease.run(f"ping {self.display_url}", self._ping, write=False)
        finally:
            lease.release()

    def _ping(self, cur: Any) -> None:
        cur.execute(self.dialect.ping)
        cur.fetchall()


def _bind_metadata(db: Any, bind: str) -> sa.MetaData:
    metadatas = getattr(db, "metadatas", {})
    if bind in metadatas:
        return metadatas[bind]  # type: ignore[no-any-return]
    make = getattr(db, "_make_metadata", None)
    if make is None:  # pragma: no cover - other SQLAlchemy extensions
        raise PloyConfigError("PLOY_STATE_BIND needs Flask-SQLAlchemy 3.0 or later")
    return make(bind)  # type: ignore[no-any-return]
