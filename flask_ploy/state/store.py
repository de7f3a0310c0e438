"""The state table on one database: :class:`StateStore`.

A store owns (or borrows from Flask-SQLAlchemy) the engine of one database,
creates the state table on first use, and lends connections to
:class:`~flask_ploy.state.connections.Lease` objects: autocommit mode, the
dialect's per-connection set-up, and everything rolled back on return.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .._urls import redact_url
from ..errors import PloyConfigError, StateUnavailable
from . import engine as _engine
from . import flask_db
from .connections import Lease
from .dialects import DIALECTS, Dialect
from .schema import DEFAULT_TABLE, expiry_index, make_table


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
    sqlite_wal_limit: int = 64 * 1024 * 1024
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
        #: The connections come from Flask-SQLAlchemy's own pool (one it cannot
        #: copy); their autocommit mode is restored when they go back.
        self.foreign = False
        if db is not None:
            flask_db.check(db)
            self.display_url = f"Flask-SQLAlchemy bind {bind or 'default'!r}"
            self.table = make_table(flask_db.bind_metadata(db, bind), settings.table)
        else:
            assert url is not None
            self.display_url = redact_url(url)
            self.table = make_table(sa.MetaData(), settings.table)
            self._engine = _engine.create_engine(
                url, engine_options or {}, pool_timeout=settings.pool_timeout
            )

    def __repr__(self) -> str:
        return f"<StateStore {self.display_url}>"

    #: Seconds between two bounded purges of expired rows by writes.
    PURGE_INTERVAL = 10.0
    _next_purge = 0.0

    def purge_due(self, full: bool = False) -> bool:
        """Whether a write with an expiry should purge a batch of expired rows now.

        At most once per :attr:`PURGE_INTERVAL` per store and process, or at
        once again after a purge that found a full batch (*full*: that
        purge's result, reported back), so purging keeps up with writers.
        """
        now = time.monotonic()
        if full:
            self._next_purge = 0.0
            return False
        if now < self._next_purge:
            return False
        self._next_purge = now + self.PURGE_INTERVAL
        return True

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
        """The engine State's connections come from.

        With ``db=``: an engine on Flask-SQLAlchemy's database with a pool of
        its own, made like Flask-SQLAlchemy's on first use (needs an app
        context), or Flask-SQLAlchemy's engine itself when its pool is one
        connection (``StaticPool``).
        """
        engine = self._engine
        if engine is None:
            with self._lock:
                engine = self._engine
                if engine is None:
                    user = flask_db.user_engine(self._db, self._bind)
                    engine = flask_db.sibling_engine(user)
                    self.foreign = engine is None
                    engine = self._engine = engine or user
                    _engine.track(engine)
        return engine

    def check_conflict(self) -> None:
        """Called when an operation met a lock: raise at once if the lock is
        the request's own Flask-SQLAlchemy session's (SQLite with ``db=``).

        :raises StateUnavailable: Waiting could only end at the deadline.
        """
        if self._db is None or "sqlite" not in self.dialect_class.names:
            return
        user = flask_db.user_engine(self._db, self._bind)
        if flask_db.session_holds_write_lock(self._db, user):
            raise StateUnavailable(
                f"state database {self.display_url}: this request's Flask-SQLAlchemy session"
                " holds SQLite's write lock (it flushed changes and has not committed), so a"
                " State write would wait for it until it gave up. Commit first"
                " (db.session.commit()), or keep State in a database file of its own"
                " (PLOY_STATE_RESOURCES or a FlaskPloy without db=)"
            )

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
            dialect = cls(engine.dialect, self.settings.table, database=engine.url.database)
            try:
                self._upgrade(engine, dialect)
            except sa.exc.DBAPIError as exc:
                raise StateUnavailable(
                    f"state database {self.display_url}: cannot add the metadata and"
                    f" expiry columns to table {self.settings.table!r}: {_engine.reason(exc)}"
                ) from exc
            if self._db is not None:
                # The request's own session may hold the lock: never wait in
                # the database, so check_conflict() runs on the first conflict.
                dialect.wait_in_database = False
            self.dialect = dialect
            return dialect

    def _upgrade(self, engine: sa.Engine, dialect: Dialect) -> None:
        """Bring a table made by an earlier version up to date: add the
        ``metadata`` and ``expires_at`` columns (nullable: every row is kept,
        with no metadata and no expiry) and the expiry index.

        Several processes may do it at once: each statement either says
        ``IF NOT EXISTS`` or fails in a way :meth:`Dialect.already_done
        <flask_ploy.state.dialects.Dialect.already_done>` recognises, and the
        table is inspected again afterwards.
        """
        name = self.settings.table
        index = expiry_index(name)

        def todo() -> list[str]:
            inspector = sa.inspect(engine)
            columns = {c["name"] for c in inspector.get_columns(name)}
            indexes = {i["name"] for i in inspector.get_indexes(name)}
            return dialect.upgrade_statements(columns, index in indexes, index)

        for text in todo():
            try:
                with engine.begin() as conn:
                    # ALTER waits for every transaction on the table: at most
                    # the busy timeout, as any operation (meanwhile the table
                    # is blocked for everyone queued behind the ALTER).
                    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                    try:
                        dialect.set_lock_wait(cur, self.settings.busy_timeout)
                    finally:
                        cur.close()
                    conn.exec_driver_sql(text)
            except sa.exc.DBAPIError as exc:
                if not dialect.already_done(exc.orig or exc):
                    raise StateUnavailable(
                        f"state database {self.display_url}: cannot add the metadata and"
                        f" expiry columns to table {name!r} ({_engine.reason(exc)}). The"
                        " upgrade waits PLOY_STATE_BUSY_TIMEOUT for transactions on the"
                        " table, and needs a user allowed to alter it; or run, as its"
                        f" owner: {'; '.join(todo())}"
                    ) from exc
        left = todo()
        if left:
            raise StateUnavailable(
                f"state database {self.display_url}: table {name!r} still lacks what"
                f" {left[0]!r} adds after the upgrade"
            )

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
                if self._db is not None and dialect.setup_needs_lock(conn):
                    self.check_conflict()  # the request's own session may hold it
                dialect.prepare(conn, self.settings)
                fairy.info["ploy"] = True
            dialect.on_checkout(conn, self.settings)
            cur = conn.cursor()
        except StateUnavailable:
            fairy.close()
            raise
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
        if self._engine is not None and not (self._db is not None and self.foreign):
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
