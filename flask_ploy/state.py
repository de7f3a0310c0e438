"""The State binding and its SQL store.

SQLAlchemy provides the engines, pools, URLs and DDL; the hot path runs at
the driver (DBAPI) level with SQL prepared once per dialect, because a
SQLAlchemy Core statement costs several times the driver call it wraps.

All resources live in one table (``PLOY_STATE_TABLE``, default
``ploy_state``) keyed by ``(resource, key)``. On SQLite keys and values are
``TEXT`` (compared bytewise by the default ``BINARY`` collation); on
PostgreSQL and MariaDB/MySQL they are stored as UTF-8 bytes (``BYTEA``,
``VARBINARY``/``LONGBLOB``), so keys compare bytewise everywhere and values
may hold any string, NUL included.

A connection is borrowed from the engine's pool on an app context's first
State operation and returned in ``teardown_appcontext``. While borrowed it
is in autocommit mode: a single-statement operation commits when it
returns, and multi-statement operations run in one explicit transaction.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from . import _update
from ._urls import redact_url
from ._validate import (
    check_amount,
    check_key,
    check_keys,
    check_mapping,
    check_value,
    is_counter,
    not_integer,
)
from .errors import PloyConfigError, StateUnavailable

if TYPE_CHECKING:
    from .extension import Env

T = TypeVar("T")

#: Rows per statement for bulk reads and deletes.
CHUNK = 500
#: The most keys one ``list`` call returns.
LIST_MAX = 1000

_KEY_TYPE = (
    sa.Text()
    .with_variant(postgresql.BYTEA(), "postgresql")
    .with_variant(mysql.VARBINARY(512), "mysql", "mariadb")
)
_VALUE_TYPE = (
    sa.Text()
    .with_variant(postgresql.BYTEA(), "postgresql")
    .with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
)


def make_table(metadata: sa.MetaData, name: str = "ploy_state") -> sa.Table:
    """Return the state table on *metadata*, defining it if needed.

    Put it on Flask-SQLAlchemy's metadata and Alembic (Flask-Migrate) will
    see it.
    """
    existing = metadata.tables.get(name)
    if existing is not None:
        return existing
    return sa.Table(
        name,
        metadata,
        sa.Column("resource", sa.String(64), primary_key=True),
        sa.Column("key", _KEY_TYPE, primary_key=True),
        sa.Column("value", _VALUE_TYPE, nullable=False),
        sqlite_with_rowid=False,
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mariadb_engine="InnoDB",
        mariadb_charset="utf8mb4",
        comment="flask-ploy State bindings",
    )


@dataclass(frozen=True)
class ListResult:
    """One page of :meth:`State.list`.

    :ivar keys: The keys of this page, in ascending (bytewise) order.
    :ivar cursor: Pass it back as ``cursor=`` for the next page; ``None``
        when this is the last page.
    """

    keys: list[str]
    cursor: str | None

    @property
    def list_complete(self) -> bool:
        """``True`` when there are no more pages."""
        return self.cursor is None


# ---------------------------------------------------------------------------
# Dialects: the SQL and driver quirks of each database, prepared once.


class _Dialect:
    """SQL for one database, written once per store."""

    name = ""
    #: Keys and values travel as UTF-8 bytes.
    binary = True
    begin_write = "BEGIN"
    begin_read = "BEGIN"
    lock_suffix = " FOR UPDATE"

    def __init__(self, engine: sa.Engine, table: str) -> None:
        preparer = engine.dialect.identifier_preparer
        t = preparer.quote(table)
        k = preparer.quote("key")
        v = preparer.quote("value")
        self.t, self.k, self.v = t, k, v
        self.sa_dialect = engine.dialect
        self.get = self.sql(f"SELECT {v} FROM {t} WHERE resource = ? AND {k} = ?")
        self.delete = self.sql(f"DELETE FROM {t} WHERE resource = ? AND {k} = ?")
        self.insert = self.sql(f"INSERT INTO {t} (resource, {k}, {v}) VALUES (?, ?, ?)")
        self.update = self.sql(f"UPDATE {t} SET {v} = ? WHERE resource = ? AND {k} = ?")
        self.lock_get = self.get + self.lock_suffix
        self.count = self.sql(f"SELECT COUNT(*) FROM {t} WHERE resource = ?")
        self.clear = self.sql(f"DELETE FROM {t} WHERE resource = ?")
        self.set = self.sql(self.upsert_sql())
        self.add = self.sql(self.add_sql())
        self.incr = self.sql(self.incr_sql())

    def sql(self, text: str) -> str:
        """Translate ``?`` placeholders to the driver's paramstyle."""
        if self.sa_dialect.paramstyle in ("format", "pyformat"):
            return text.replace("?", "%s")
        return text

    def placeholders(self, n: int) -> str:
        return ", ".join(
            ["%s" if self.sa_dialect.paramstyle in ("format", "pyformat") else "?"] * n
        )

    def upsert_sql(self) -> str:
        """``set``: standard ``ON CONFLICT`` (SQLite, PostgreSQL)."""
        return (
            f"INSERT INTO {self.t} (resource, {self.k}, {self.v}) VALUES (?, ?, ?)"
            f" ON CONFLICT (resource, {self.k}) DO UPDATE SET {self.v} = excluded.{self.v}"
        )

    def add_sql(self) -> str:
        """``add``: insert unless present; ``rowcount`` tells which."""
        return (
            f"INSERT INTO {self.t} (resource, {self.k}, {self.v}) VALUES (?, ?, ?)"
            f" ON CONFLICT (resource, {self.k}) DO NOTHING"
        )

    def incr_sql(self) -> str:
        raise NotImplementedError

    def prepare(self, conn: Any, settings: StateSettings) -> None:
        """Set up a new DBAPI connection (pragmas); once per connection."""

    def autocommit(self, conn: Any, on: bool) -> bool:
        """Set autocommit mode; return the previous mode."""
        raise NotImplementedError

    def retryable(self, exc: BaseException) -> bool:
        """Whether the database asked for the transaction to be retried."""
        return False

    def value_error(self, exc: BaseException) -> bool:
        """Whether *exc* is a data error of ``incr`` (overflow, not a number)."""
        return False

    def added(self, cur: Any) -> bool:
        return bool(cur.rowcount == 1)


class _SQLite(_Dialect):
    name = "sqlite"
    binary = False
    begin_write = "BEGIN IMMEDIATE"  # take the write lock first: no upgrade deadlock
    begin_read = "BEGIN"
    lock_suffix = ""

    def incr_sql(self) -> str:
        # ?1 resource, ?2 key, ?3 amount as text, ?4 amount. The WHERE keeps
        # non-integers and would-be overflows unchanged (and returns no row).
        v = self.v
        return (
            f"INSERT INTO {self.t} (resource, {self.k}, {v}) VALUES (?1, ?2, ?3)"
            f" ON CONFLICT (resource, {self.k}) DO UPDATE"
            f" SET {v} = CAST(CAST({v} AS INTEGER) + ?4 AS TEXT)"
            f" WHERE {v} = CAST(CAST({v} AS INTEGER) AS TEXT)"
            f" AND ((?4 >= 0 AND CAST({v} AS INTEGER) <= 9223372036854775807 - ?4)"
            f" OR (?4 < 0 AND CAST({v} AS INTEGER) >= (-9223372036854775807 - 1) - ?4))"
            f" RETURNING {v}"
        )

    def prepare(self, conn: Any, settings: StateSettings) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(settings.busy_timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if mode.lower() not in ("wal", "memory"):
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {settings.sqlite_synchronous}")

    def autocommit(self, conn: Any, on: bool) -> bool:
        previous = conn.isolation_level is None
        if previous != on:
            if conn.in_transaction:
                conn.rollback()
            conn.isolation_level = None if on else ""
        return previous

    def retryable(self, exc: BaseException) -> bool:
        msg = str(exc).lower()
        return (
            "database is locked" in msg
            or "database is busy" in msg
            or "database table is locked" in msg
        )


class _Postgres(_Dialect):
    name = "postgresql"

    def incr_sql(self) -> str:
        # resource, key, amount as bytes, amount. Overflow raises 22003.
        t, v = self.t, self.v
        text = f"encode({t}.{v}, 'escape')"  # NUL-safe, unlike convert_from
        return (
            f"INSERT INTO {t} (resource, {self.k}, {v}) VALUES (?, ?, ?)"
            f" ON CONFLICT (resource, {self.k}) DO UPDATE"
            f" SET {v} = convert_to("
            f"CAST(CAST({text} AS bigint) + CAST(? AS bigint) AS text), 'UTF8')"
            f" WHERE {text} ~ '^(0|-{{0,1}}[1-9][0-9]{{0,18}})$'"
            f" RETURNING {v}"
        )

    def autocommit(self, conn: Any, on: bool) -> bool:
        previous = bool(conn.autocommit)
        if previous != on:
            if conn.info.transaction_status != 0:  # not IDLE
                conn.rollback()
            conn.autocommit = on
        return previous

    def retryable(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) in ("40001", "40P01")

    def value_error(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) in ("22003", "22P02")


class _MySQL(_Dialect):
    name = "mysql"

    def upsert_sql(self) -> str:
        return (
            f"INSERT INTO {self.t} (resource, {self.k}, {self.v}) VALUES (?, ?, ?)"
            f" ON DUPLICATE KEY UPDATE {self.v} = VALUES({self.v})"
        )

    def add_sql(self) -> str:
        return f"INSERT INTO {self.t} (resource, {self.k}, {self.v}) VALUES (?, ?, ?)"

    def incr_sql(self) -> str:
        # resource, key, amount as bytes, amount; run in a transaction and
        # followed by a read of the value. Overflow raises 1690.
        v = self.v
        ok = (
            f"{v} REGEXP '^(0|-{{0,1}}[1-9][0-9]{{0,18}})$'"
            f" AND CAST(CAST({v} AS SIGNED) AS BINARY) = {v}"
        )
        return (
            f"INSERT INTO {self.t} (resource, {self.k}, {v}) VALUES (?, ?, ?)"
            f" ON DUPLICATE KEY UPDATE {v} = IF({ok}, CAST(CAST({v} AS SIGNED) + ? AS BINARY), {v})"
        )

    def autocommit(self, conn: Any, on: bool) -> bool:
        previous = bool(conn.get_autocommit())
        if previous != on:
            conn.autocommit(on)
        return previous

    def retryable(self, exc: BaseException) -> bool:
        return _mysql_code(exc) in (1213, 1205)

    def value_error(self, exc: BaseException) -> bool:
        return _mysql_code(exc) in (1690, 1292, 1264, 1366)

    def added(self, cur: Any) -> bool:
        return True  # a duplicate raises IntegrityError instead


def _mysql_code(exc: BaseException) -> Any:
    """The MySQL error number of a PyMySQL/mysqlclient error, or ``None``."""
    args: tuple[Any, ...] = getattr(exc, "args", ())
    return args[0] if args else None


_DIALECTS: dict[str, type[_Dialect]] = {
    "sqlite": _SQLite,
    "postgresql": _Postgres,
    "mysql": _MySQL,
    "mariadb": _MySQL,
}


# ---------------------------------------------------------------------------
# The store: one per engine.


@dataclass(frozen=True)
class StateSettings:
    """The ``PLOY_*`` settings a store and its bindings need."""

    table: str = "ploy_state"
    max_key_bytes: int = 512
    max_value_bytes: int = 25 * 1024 * 1024
    sqlite_synchronous: str = "NORMAL"
    busy_timeout: float = 10.0


class _Lease:
    """A connection borrowed for one app context."""

    __slots__ = ("conn", "cur", "fairy", "in_tx", "restore")

    def __init__(self, fairy: Any, conn: Any, restore: bool | None) -> None:
        self.fairy = fairy
        self.conn = conn
        self.cur = conn.cursor()
        self.restore = restore  # autocommit mode to restore on return, if any
        self.in_tx = False


_engines: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def _dispose_after_fork() -> None:  # pragma: no cover - runs in forked children
    # Never let a forked worker use its parent's pooled connections
    # (gunicorn --preload); close=False leaves them to the parent.
    for engine in list(_engines):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_dispose_after_fork)


class StateStore:
    """The state table on one database, shared by every binding using it.

    Created with a URL (flask-ploy owns the engine) or with a Flask-SQLAlchemy
    ``db`` (the engine of bind *bind* is looked up on first use, so either
    extension may be initialised first).
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
        self._ready = False
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
            self._engine = _create_engine(url, dict(engine_options or {}))
            _engines.add(self._engine)
        self.dialect: _Dialect | None = None

    def __repr__(self) -> str:
        return f"<StateStore {self.display_url}>"

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (needs an app context with ``db=``)."""
        if self._engine is None:
            try:
                engines = self._db.engines
            except RuntimeError as exc:
                raise RuntimeError(
                    "FlaskPloy was given db=, but the current app is not registered"
                    " with that Flask-SQLAlchemy instance. Call db.init_app(app) as well."
                ) from exc
            key = self._bind
            if key not in engines:
                raise PloyConfigError(
                    f"PLOY_STATE_BIND: Flask-SQLAlchemy has no bind {key!r};"
                    f" its binds are {sorted(k or 'None' for k in engines)}"
                )
            engine = engines[key]
            _engines.add(engine)
            return engine  # type: ignore[no-any-return]
        return self._engine

    def _setup(self, engine: sa.Engine) -> _Dialect:
        """Create the table if missing and prepare the dialect; once."""
        with self._lock:
            if self.dialect is not None and self._ready:
                return self.dialect
            cls = _DIALECTS.get(engine.dialect.name)
            if cls is None:
                raise PloyConfigError(
                    f"state URL {self.display_url}: the {engine.dialect.name!r} database"
                    " is not supported; use sqlite, postgresql or mysql/mariadb"
                )
            try:
                self.table.create(engine, checkfirst=True)
            except sa.exc.DBAPIError as exc:
                # Another process may have created it in the meantime.
                if not sa.inspect(engine).has_table(self.settings.table):
                    raise StateUnavailable(
                        f"state database {self.display_url}: cannot create table"
                        f" {self.settings.table!r}: {exc.orig}"
                    ) from exc
            dialect = cls(engine, self.settings.table)
            self.dialect = dialect
            self._ready = True
            return dialect

    def checkout(self) -> _Lease:
        """Borrow a connection in autocommit mode.

        :raises StateUnavailable: The database cannot be reached.
        """
        engine = self.engine
        dialect = self.dialect if self._ready else self._setup_or_fail(engine)
        assert dialect is not None
        try:
            fairy = engine.raw_connection()
        except (sa.exc.DBAPIError, _dbapi_error(engine)) as exc:
            # raw_connection() raises the driver's own errors, unwrapped
            raise StateUnavailable(
                f"state database {self.display_url} is unavailable: {_reason(exc)}"
            ) from exc
        conn = fairy.driver_connection
        try:
            if "ploy" not in fairy.info:
                dialect.prepare(conn, self.settings)
                fairy.info["ploy"] = True
            previous = dialect.autocommit(conn, True)
        except Exception as exc:
            fairy.invalidate(exc)
            raise StateUnavailable(
                f"state database {self.display_url} is unavailable: {_reason(exc)}"
            ) from exc
        return _Lease(fairy, conn, previous if (self.foreign and not previous) else None)

    def _setup_or_fail(self, engine: sa.Engine) -> _Dialect:
        try:
            return self._setup(engine)
        except sa.exc.DBAPIError as exc:
            raise StateUnavailable(
                f"state database {self.display_url} is unavailable: {_reason(exc)}"
            ) from exc

    def checkin(self, lease: _Lease) -> None:
        """Return a borrowed connection, rolling back anything left open."""
        fairy = lease.fairy
        if fairy is None:
            return
        lease.fairy = None
        try:
            if lease.in_tx:
                lease.cur.execute("ROLLBACK")
            lease.cur.close()
            if lease.restore is not None and self.dialect is not None:
                self.dialect.autocommit(lease.conn, lease.restore)
        except Exception as exc:
            fairy.invalidate(exc)
        fairy.close()

    def dispose(self) -> None:
        """Close the pool's connections, if flask-ploy owns the engine."""
        if self._engine is not None:
            self._engine.dispose()

    def ping(self) -> None:
        """Borrow a connection, run ``SELECT 1`` and return it."""
        lease = self.checkout()
        try:
            lease.cur.execute("SELECT 1")
            lease.cur.fetchall()
        except sa.exc.DBAPIError as exc:  # pragma: no cover - the driver's own errors below
            raise StateUnavailable(f"state database {self.display_url}: {_reason(exc)}") from exc
        except Exception as exc:
            lease.fairy.invalidate(exc)
            raise StateUnavailable(f"state database {self.display_url}: {_reason(exc)}") from exc
        finally:
            self.checkin(lease)


def _dbapi_error(engine: sa.Engine) -> type[BaseException]:
    """The driver's base exception class (``psycopg.Error``, ``sqlite3.Error``...)."""
    error = getattr(engine.dialect.loaded_dbapi, "Error", None)
    if isinstance(error, type) and issubclass(error, BaseException):
        return error
    return sa.exc.DBAPIError


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0] if text else ''}"


def _bind_metadata(db: Any, bind: str) -> sa.MetaData:
    metadatas = getattr(db, "metadatas", {})
    if bind in metadatas:
        return metadatas[bind]  # type: ignore[no-any-return]
    make = getattr(db, "_make_metadata", None)
    if make is None:  # pragma: no cover - other SQLAlchemy extensions
        raise PloyConfigError("PLOY_STATE_BIND needs Flask-SQLAlchemy 3.0 or later")
    return make(bind)  # type: ignore[no-any-return]


def _create_engine(url: str, options: dict[str, Any]) -> sa.Engine:
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise PloyConfigError(f"state URL {redact_url(url)}: {exc}") from None
    backend = parsed.get_backend_name()
    if backend not in _DIALECTS:
        raise PloyConfigError(
            f"state URL {redact_url(url)}: the {backend!r} database is not"
            " supported; use sqlite, postgresql or mysql/mariadb"
        )
    connect_args = dict(options.pop("connect_args", {}))
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            # One shared in-memory database for the process (tests).
            options.setdefault("poolclass", sa.pool.StaticPool)
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
        return sa.create_engine(parsed, connect_args=connect_args, **options)
    except (ImportError, sa.exc.ArgumentError, TypeError) as exc:
        hint = ""
        if isinstance(exc, ImportError):
            extra = "postgres" if backend == "postgresql" else "mysql"
            hint = f"; install the driver with pip install 'flask-ploy[{extra}]'" + (
                " and use a mysql+pymysql:// or mariadb+pymysql:// URL" if extra == "mysql" else ""
            )
        raise PloyConfigError(f"state URL {redact_url(url)}: {exc}{hint}") from None


# ---------------------------------------------------------------------------
# The binding


class State:
    """The State binding: ``g.env.STATE``. Durable strings, no expiry.

    Keys are non-empty ``str`` of at most ``PLOY_MAX_KEY_BYTES`` (512)
    bytes in UTF-8; values are ``str`` of at most ``PLOY_MAX_VALUE_BYTES``.
    Every write is committed when the method returns. Bad arguments raise
    :class:`TypeError` or :class:`ValueError` and write nothing; a database
    failure raises :class:`~flask_ploy.StateUnavailable` and writes nothing.

    One object exists per binding and app context; it borrows a connection
    on first use, which goes back to the pool when the context ends.
    """

    __slots__ = (
        "_bin",
        "_cur",
        "_d",
        "_env",
        "_kfast",
        "_kmax",
        "_q_delete",
        "_q_get",
        "_q_set",
        "_store",
        "_vmax",
        "name",
        "resource",
    )

    def __init__(self, name: str, resource: str, store: StateStore, env: Env) -> None:
        #: The binding name from ``ploy.yaml`` (``STATE``).
        self.name = name
        #: The resource name from ``ploy.yaml`` (``default``).
        self.resource = resource
        self._store = store
        self._env = env
        self._cur: Any = None
        self._d: _Dialect | None = None
        settings = store.settings
        self._kmax = settings.max_key_bytes
        self._kfast = settings.max_key_bytes // 4
        self._vmax = settings.max_value_bytes
        self._bin = True

    def __repr__(self) -> str:
        return (
            f"<State {self.name} resource={self.resource!r} database={self._store.display_url!r}>"
        )

    # -- connection -------------------------------------------------------

    def _borrow(self) -> Any:
        """Get the context's connection to this store; set up the fast path."""
        lease = self._env._lease(self._store)
        d = self._store.dialect
        assert d is not None
        self._d = d
        self._bin = d.binary
        self._q_get, self._q_set, self._q_delete = d.get, d.set, d.delete
        self._cur = lease.cur
        return lease.cur

    def _dialect(self) -> _Dialect:
        """The store's dialect, once this context's connection is borrowed."""
        if self._cur is None:
            self._borrow()
        assert self._d is not None
        return self._d

    def _k(self, key: str) -> Any:
        return key.encode() if self._bin else key

    def _s(self, value: Any) -> str:
        if self._bin:
            return value.decode() if type(value) is bytes else bytes(value).decode()
        return value  # type: ignore[no-any-return]

    def _failed(self, exc: BaseException, op: str) -> StateUnavailable:
        """Translate a driver error; drop the connection if it is broken."""
        lease = self._env._leases.get(self._store)
        if lease is not None and self._d is not None:
            try:
                disconnect = self._d.sa_dialect.is_disconnect(exc, lease.conn, self._cur)  # type: ignore[arg-type]
            except Exception:  # pragma: no cover - defensive
                disconnect = True
            if disconnect or not _alive(lease):
                self._env._drop(self._store, exc)
        return StateUnavailable(
            f"state database {self._store.display_url} failed on {self.name}.{op}: {_reason(exc)}"
        )

    def _recover(self, exc: Exception, op: str, body: Callable[[Any], T]) -> T:
        """Handle a failed single statement: retry on a lock conflict, else raise."""
        if isinstance(exc, (TypeError, ValueError)):
            raise exc
        if self._d is not None and self._d.retryable(exc):
            return self._run(op, body, tx=False)
        raise self._failed(exc, op) from exc

    def _run(self, op: str, body: Callable[[Any], T], write: bool = True, tx: bool = True) -> T:
        """Run *body(cursor)*, in a transaction if *tx*, retrying while the
        database reports a lock conflict (up to ``PLOY_STATE_BUSY_TIMEOUT``)."""
        deadline = 0.0
        delay = 0.002
        while True:
            cur = self._cur if self._cur is not None else self._borrow()
            d = self._d
            assert d is not None
            lease = self._env._leases.get(self._store)
            try:
                if tx:
                    cur.execute(d.begin_write if write else d.begin_read)
                    if lease is not None:
                        lease.in_tx = True
                result = body(cur)
                if tx:
                    cur.execute("COMMIT")
                    if lease is not None:
                        lease.in_tx = False
                return result
            except BaseException as exc:
                if tx:
                    self._rollback(cur, lease)
                if isinstance(exc, _Retry) or (isinstance(exc, Exception) and d.retryable(exc)):
                    now = time.monotonic()
                    if not deadline:
                        deadline = now + self._store.settings.busy_timeout
                    if now < deadline:
                        time.sleep(delay * (0.5 + random.random()))
                        delay = min(delay * 2, 0.1)
                        continue
                if isinstance(
                    exc, (TypeError, ValueError, StateUnavailable, KeyboardInterrupt, SystemExit)
                ):
                    raise
                if d.value_error(exc):
                    raise
                raise self._failed(exc, op) from exc

    def _rollback(self, cur: Any, lease: _Lease | None) -> None:
        with contextlib.suppress(Exception):  # the error being handled says more
            cur.execute("ROLLBACK")
        if lease is not None:
            lease.in_tx = False

    # -- the seed API -----------------------------------------------------

    def get(self, key: str) -> str | None:
        """Return the value of *key*, or ``None`` if it is not set."""
        if type(key) is not str or not key or len(key) > self._kfast:
            check_key(key, self._kmax)
        cur = self._cur
        if cur is None:
            cur = self._borrow()
        try:
            if self._bin:
                cur.execute(self._q_get, (self.resource, key.encode()))
                row = cur.fetchone()
                return None if row is None else self._s(row[0])
            cur.execute(self._q_get, (self.resource, key))
            row = cur.fetchone()
        except Exception as exc:
            return self._recover(exc, "get", lambda c: self._get(c, key))
        return None if row is None else row[0]

    def set(self, key: str, value: str) -> None:
        """Store *value* under *key*, replacing any value. Committed on return."""
        if type(key) is not str or not key or len(key) > self._kfast:
            check_key(key, self._kmax)
        if type(value) is not str or len(value) * 4 > self._vmax:
            check_value(value, self._vmax)
        cur = self._cur
        if cur is None:
            cur = self._borrow()
        try:
            if self._bin:
                cur.execute(self._q_set, (self.resource, key.encode(), value.encode()))
            else:
                cur.execute(self._q_set, (self.resource, key, value))
        except Exception as exc:
            self._recover(exc, "set", lambda c: self._set(c, key, value))

    def delete(self, key: str) -> bool:
        """Remove *key*; return ``True`` if a value was removed."""
        check_key(key, self._kmax)
        return self._run("delete", lambda c: self._delete(c, key), tx=False)

    # -- bodies run by _run ------------------------------------------------

    def _get(self, cur: Any, key: str) -> str | None:
        cur.execute(self._q_get, (self.resource, self._k(key)))
        row = cur.fetchone()
        return None if row is None else self._s(row[0])

    def _set(self, cur: Any, key: str, value: str) -> None:
        cur.execute(self._q_set, (self.resource, self._k(key), self._k(value)))

    def _delete(self, cur: Any, key: str) -> bool:
        cur.execute(self._q_delete, (self.resource, self._k(key)))
        return bool(cur.rowcount > 0)

    # -- atomic operations --------------------------------------------------

    def incr(self, key: str, amount: int = 1) -> int:
        """Add *amount* to the integer at *key* in the database; return the result.

        Atomic: concurrent calls from any number of processes never lose an
        update. A missing key counts from 0; the value is stored as its
        decimal string.

        :raises ValueError: The value is not a decimal integer, or the result
            leaves the 64-bit range. Nothing changes.
        """
        check_key(key, self._kmax)
        amount = check_amount(amount)
        d = self._dialect()
        k = self._k(key)
        text = self._k(str(amount))

        def body(cur: Any) -> str | None:
            if d.name == "mysql":
                cur.execute(d.incr, (self.resource, k, text, amount))
                cur.execute(d.get, (self.resource, k))
            else:
                cur.execute(d.incr, (self.resource, k, text, amount))
            rows = cur.fetchall()
            return None if not rows else self._s(rows[0][0])

        try:
            result = self._run("incr", body, tx=d.name == "mysql")
        except Exception as exc:
            if d.value_error(exc):
                raise not_integer(key, self.get(key), amount) from None
            raise
        if not is_counter(result):
            raise not_integer(key, self.get(key), amount)
        return int(result)  # type: ignore[arg-type]

    def add(self, key: str, value: str) -> bool:
        """Store *value* only if *key* is absent; return whether it was stored."""
        check_key(key, self._kmax)
        check_value(value, self._vmax)
        d = self._dialect()
        k, v = self._k(key), self._k(value)

        def body(cur: Any) -> bool:
            try:
                cur.execute(d.add, (self.resource, k, v))
            except Exception as exc:
                if d.name == "mysql" and _mysql_code(exc) == 1062:
                    return False
                raise
            return d.added(cur)

        return self._run("add", body, tx=False)

    def update(self, key: str, ops: Mapping[str, Mapping[str, Any]]) -> str:
        """Apply Ploy's update operators to the JSON object at *key*, atomically.

        *ops* maps operators to ``{dotted.path: operand}``: ``$set``,
        ``$unset``, ``$inc`` (a number), ``$push`` (append to an array,
        created if missing) and ``$pop`` (``1`` removes the last element,
        ``-1`` the first). A missing key starts from ``{}``. Returns the new
        value, compact JSON.

        :raises TypeError: *ops* is malformed.
        :raises ValueError: An unknown operator, a bad path, or a value that
            is not a JSON object (or does not fit the operators). Nothing
            changes.
        """
        check_key(key, self._kmax)
        steps = _update.check_ops(ops)
        d = self._dialect()
        k = self._k(key)

        def body(cur: Any) -> str:
            cur.execute(d.lock_get, (self.resource, k))
            row = cur.fetchone()
            raw = None if row is None else self._s(row[0])
            doc = _update.apply_ops(_update.decode_object(raw, key), steps)
            new = _update.encode_object(doc)
            check_value(new, self._vmax)
            if row is None:
                if not self._insert_new(cur, k, self._k(new)):
                    raise _Retry
            else:
                cur.execute(d.update, (self._k(new), self.resource, k))
            return new

        return self._run("update", body)

    def _insert_new(self, cur: Any, k: Any, v: Any) -> bool:
        """Insert a row inside a transaction; ``False`` if it appeared meanwhile."""
        d = self._d
        assert d is not None
        try:
            cur.execute(d.add, (self.resource, k, v))
        except Exception as exc:
            if d.name == "mysql" and _mysql_code(exc) == 1062:
                return False
            raise
        return d.added(cur)

    # -- bulk operations ------------------------------------------------------

    def get_many(self, keys: Iterable[str]) -> dict[str, str | None]:
        """Return ``{key: value or None}`` for *keys*, read in one transaction."""
        keys = check_keys(keys, self._kmax)
        if not keys:
            return {}
        d = self._dialect()
        unique = list(dict.fromkeys(keys))

        def body(cur: Any) -> dict[str, str | None]:
            found: dict[str, str | None] = {}
            for i in range(0, len(unique), CHUNK):
                chunk = unique[i : i + CHUNK]
                cur.execute(
                    f"SELECT {d.k}, {d.v} FROM {d.t} WHERE resource = {d.placeholders(1)}"
                    f" AND {d.k} IN ({d.placeholders(len(chunk))})",
                    (self.resource, *(self._k(k) for k in chunk)),
                )
                for k, v in cur.fetchall():
                    found[self._s(k)] = self._s(v)
            return found

        found = self._run("get_many", body, write=False, tx=len(unique) > CHUNK)
        return {k: found.get(k) for k in keys}

    def set_many(self, mapping: Mapping[str, str]) -> None:
        """Store every pair of *mapping* in one transaction: all or nothing."""
        items = check_mapping(mapping, self._kmax, self._vmax)
        if not items:
            return
        d = self._dialect()
        rows = [(self.resource, self._k(k), self._k(v)) for k, v in items]
        self._run("set_many", lambda cur: cur.executemany(d.set, rows))

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove *keys* in one transaction; return how many were present."""
        keys = check_keys(keys, self._kmax)
        unique = list(dict.fromkeys(keys))
        if not unique:
            return 0
        d = self._dialect()

        def body(cur: Any) -> int:
            n = 0
            for i in range(0, len(unique), CHUNK):
                chunk = unique[i : i + CHUNK]
                cur.execute(
                    f"DELETE FROM {d.t} WHERE resource = {d.placeholders(1)}"
                    f" AND {d.k} IN ({d.placeholders(len(chunk))})",
                    (self.resource, *(self._k(k) for k in chunk)),
                )
                n += cur.rowcount
            return n

        return self._run("delete_many", body)

    # -- listing --------------------------------------------------------------

    def list(
        self, prefix: str = "", *, limit: int = LIST_MAX, cursor: str | None = None
    ) -> ListResult:
        """List keys starting with *prefix*, in ascending bytewise order.

        ``%`` and ``_`` in *prefix* match themselves. Pass the returned
        ``cursor`` back to get the next page; each key is seen exactly once.

        :param limit: Keys per page, 1 to 1000.
        :param cursor: The ``cursor`` of the previous page, or ``None``.
        """
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
        if type(limit) is not int or isinstance(limit, bool):
            raise TypeError(f"limit must be int, not {type(limit).__name__}")
        if not 1 <= limit <= LIST_MAX:
            raise ValueError(f"limit must be between 1 and {LIST_MAX}, got {limit}")
        if cursor is not None and not isinstance(cursor, str):
            raise TypeError(f"cursor must be str or None, not {type(cursor).__name__}")
        rows = self._scan(prefix, cursor or None, limit + 1, with_values=False)
        keys = [k for k, _ in rows[:limit]]
        return ListResult(keys, keys[-1] if len(rows) > limit else None)

    def _scan(
        self, prefix: str, after: str | None, limit: int, *, with_values: bool
    ) -> builtins.list[tuple[str, str | None]]:
        """Up to *limit* ``(key, value)`` rows with *prefix*, after *after*."""
        d = self._dialect()
        lo, lo_op = (after, ">") if after is not None and after >= prefix else (prefix, ">=")
        hi = _prefix_end(prefix, self._bin)
        ph = d.placeholders(1)
        sql = (
            f"SELECT {d.k}{', ' + d.v if with_values else ''} FROM {d.t}"
            f" WHERE resource = {ph} AND {d.k} {lo_op} {ph}"
            + (f" AND {d.k} < {ph}" if hi is not None else "")
            + f" ORDER BY {d.k} LIMIT {int(limit)}"
        )
        params: tuple[Any, ...] = (self.resource, self._k(lo))
        if hi is not None:
            params += (hi,)

        def body(cur: Any) -> builtins.list[tuple[str, str | None]]:
            cur.execute(sql, params)
            rows = cur.fetchall()
            if not self._bin:  # SQLite returns str already: no per-row work
                return rows if with_values else [(k, None) for (k,) in rows]
            if with_values:
                return [(bytes(k).decode(), bytes(v).decode()) for k, v in rows]
            return [(bytes(k).decode(), None) for (k,) in rows]

        return self._run("list", body, tx=False)

    def items(self, prefix: str = "", *, page_size: int = LIST_MAX) -> Iterator[tuple[str, str]]:
        """Yield every ``(key, value)`` with *prefix* in key order, a page at a time.

        Memory stays flat however many keys there are. Pages are read one
        after another, not in one snapshot: a key written meanwhile may or
        may not appear.
        """
        after: str | None = None
        while True:
            rows = self._scan(prefix, after, page_size, with_values=True)
            yield from rows  # type: ignore[misc]
            if len(rows) < page_size:
                return
            after = rows[-1][0]

    def count(self) -> int:
        """The number of keys in this binding's resource."""
        d = self._dialect()

        def body(cur: Any) -> int:
            cur.execute(d.count, (self.resource,))
            return int(cur.fetchone()[0])

        return self._run("count", body, tx=False)

    def load(
        self, pairs: Iterable[tuple[str, str]], *, replace: bool = False, batch: int = 1000
    ) -> int:
        """Write *pairs* in one transaction; return how many.

        With *replace*, the resource is emptied first, in the same
        transaction. Any bad key or value (raised by the iterable or by the
        checks) rolls everything back. A list is retried if the database
        reports a lock conflict; a one-shot iterator (a generator, a file
        reader) raises :class:`~flask_ploy.StateUnavailable` instead.
        """
        d = self._dialect()

        one_shot = isinstance(pairs, Iterator)  # a generator, say: cannot be read twice
        runs = 0

        def body(cur: Any) -> int:
            nonlocal runs
            runs += 1
            if runs > 1 and one_shot:
                # The database asked for a retry after part of the input was
                # consumed; it was rolled back, and cannot be read again here.
                raise StateUnavailable(
                    f"state database {self._store.display_url}: {self.name}.load hit a lock"
                    " conflict and was rolled back; nothing was written. Run it again."
                )
            if replace:
                cur.execute(d.clear, (self.resource,))
            n = 0
            rows: builtins.list[tuple[Any, ...]] = []
            for key, value in pairs:
                check_key(key, self._kmax)
                check_value(value, self._vmax)
                rows.append((self.resource, self._k(key), self._k(value)))
                if len(rows) >= batch:
                    cur.executemany(d.set, rows)
                    n += len(rows)
                    rows = []
            if rows:
                cur.executemany(d.set, rows)
                n += len(rows)
            return n

        return self._run("load", body)

    def clear(self) -> int:
        """Delete every key of this binding's resource; return how many."""
        d = self._dialect()

        def body(cur: Any) -> int:
            cur.execute(d.clear, (self.resource,))
            return int(cur.rowcount)

        return self._run("clear", body)


class _Retry(Exception):
    """Raised inside a transaction body to run it again (a lost insert race)."""


def _alive(lease: _Lease) -> bool:
    conn = lease.conn
    closed = getattr(conn, "closed", False)
    if callable(closed):  # pragma: no cover
        return True
    return not closed


def _prefix_end(prefix: str, binary: bool) -> Any:
    """The smallest key greater than every key starting with *prefix*.

    ``None`` when there is none (empty prefix). Strings compare by code
    point, which is UTF-8 byte order, so SQLite's ``TEXT`` and the other
    databases' bytes agree.
    """
    if not prefix:
        return None
    if binary:
        raw = bytearray(prefix.encode())
        while raw and raw[-1] == 0xFF:
            raw.pop()
        if not raw:
            return None
        raw[-1] += 1
        return bytes(raw)
    chars = list(prefix)
    while chars:
        last = ord(chars[-1]) + 1
        if last > 0x10FFFF:
            chars.pop()
            continue
        if 0xD800 <= last <= 0xDFFF:
            last = 0xE000
        chars[-1] = chr(last)
        return "".join(chars)
    return None
