"""SQLAlchemy engines for State: per-database defaults, and fork safety.

:func:`create_engine` builds the engine of a ``PLOY_STATE_URL`` with the
defaults that keep a request bounded (connect timeouts, TCP keepalives, a
bounded pool wait, a read timeout on PostgreSQL). Every engine State uses is
disposed in a forked child (``gunicorn --preload``), so no worker ever uses
its parent's connections.

Several servers behind one URL (``docs/scaling.rst``): PostgreSQL takes
libpq's own multi-host form (``?host=h1:5432&host=h2:5432&target_session_attrs=read-write``);
for MariaDB Galera, the same ``host=`` list is tried in order here, skipping
nodes whose ``wsrep_ready`` is off (:func:`_galera_connect`), and
``wsrep_sync_wait=N`` in the query is set on every connection.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from .._urls import redact_url
from ..errors import PloyConfigError
from .dialects import DIALECTS, REFUSED

#: Seconds a PostgreSQL statement may go unanswered (connect_args
#: ``read_timeout``; ``None`` or 0 turns it off). libpq has no read timeout:
#: a server that is alive but never answers (a commit waiting for a
#: synchronous standby that is gone, a frozen server) would block forever.
PG_READ_TIMEOUT = 30.0
#: Seconds the server has to answer a cancel before the socket is cut.
CANCEL_GRACE = 2.0

_engines: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
#: A connection held open for each in-memory engine: a memdb database lives
#: while one connection to it is open.
_anchors: weakref.WeakKeyDictionary[sa.Engine, Any] = weakref.WeakKeyDictionary()


def _dispose_after_fork() -> None:  # pragma: no cover - runs in forked children
    # close=False leaves the parent's connections to the parent.
    for engine in list(_engines):
        engine.dispose(close=False)
    _WATCHDOG.reset()


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
    if backend in REFUSED:
        raise PloyConfigError(f"state URL {redact_url(url)}: {REFUSED[backend]}")
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
    on_connect: list[Callable[..., None]] = []
    do_connect: Callable[..., Any] | None = None
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
            read_timeout = connect_args.pop("read_timeout", PG_READ_TIMEOUT)
            if read_timeout:
                do_connect = _bounded_connect(float(read_timeout))
    else:
        options.setdefault("pool_pre_ping", True)
        connect_args.setdefault("connect_timeout", 5)
        connect_args.setdefault("read_timeout", 60)
        connect_args.setdefault("write_timeout", 60)
        parsed, hosts, sync_wait = _mysql_options(url, parsed)
        if sync_wait is not None:
            on_connect.append(_set_sync_wait(sync_wait))
        if hosts:
            do_connect = _galera_connect(hosts, redact_url(url))
    try:
        engine = sa.create_engine(parsed, connect_args=connect_args, **options)
    except (ImportError, sa.exc.ArgumentError, TypeError) as exc:
        hint = ""
        if not isinstance(exc, ImportError) and "argument" in str(exc):
            hint = " (check PLOY_STATE_ENGINE_OPTIONS and the URL's query)"
        if isinstance(exc, ImportError):
            extra = "postgres" if backend == "postgresql" else "mysql"
            hint = f"; install the driver with pip install 'flask-ploy[{extra}]'" + (
                " and use a mysql+pymysql:// or mariadb+pymysql:// URL" if extra == "mysql" else ""
            )
        raise PloyConfigError(f"state URL {redact_url(url)}: {exc}{hint}") from None
    for listener in on_connect:
        sa.event.listen(engine, "connect", listener)
    if do_connect is not None:
        sa.event.listen(engine, "do_connect", do_connect)
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


# -- MariaDB: several Galera nodes, wsrep_sync_wait ---------------------------------


def _mysql_options(url: str, parsed: sa.URL) -> tuple[sa.URL, list[tuple[str, int]], int | None]:
    """Take flask-ploy's own query parameters out of a MariaDB/MySQL URL.

    ``host=h1:3306&host=h2:3306`` (and a host in the URL's netloc, first):
    the nodes to try in order; ``wsrep_sync_wait=N``: the session value of
    that Galera variable (1 makes a read wait until the node has applied
    every write the cluster committed before it: read-your-writes across
    nodes).
    """
    query = parsed.query
    hosts: list[tuple[str, int]] = []
    raw = query.get("host")
    if raw is not None:
        if parsed.host:
            hosts.append((parsed.host, parsed.port or 3306))
        for item in [raw] if isinstance(raw, str) else raw:
            for part in item.split(","):
                host, sep, port = part.strip().rpartition(":")
                if not sep:
                    host, port = port, "3306"
                if not host or not port.isdigit():
                    raise PloyConfigError(
                        f"state URL {redact_url(url)}: host={part!r} is not HOST or HOST:PORT"
                    )
                hosts.append((host, int(port)))
    sync_wait: int | None = None
    text = query.get("wsrep_sync_wait")
    if text is not None:
        if not isinstance(text, str) or not text.isdigit() or not 0 <= int(text) <= 15:
            raise PloyConfigError(
                f"state URL {redact_url(url)}: wsrep_sync_wait must be a number"
                f" from 0 to 15, got {text!r}"
            )
        sync_wait = int(text)
    drop = [k for k in ("host", "wsrep_sync_wait") if k in query]
    if drop:
        parsed = parsed.difference_update_query(drop)
    if hosts:
        parsed = parsed.set(host=hosts[0][0], port=hosts[0][1])
    return parsed, hosts, sync_wait


def _set_sync_wait(value: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_conn: Any, record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"SET SESSION wsrep_sync_wait = {int(value)}")
        finally:
            cur.close()

    return on_connect


def _galera_connect(hosts: list[tuple[str, int]], display: str) -> Callable[..., Any]:
    """A ``do_connect`` hook: the first of *hosts* that answers and is ready.

    Hosts are tried in the order of the URL, so every process writes to the
    first healthy node (one writer: no certification conflicts between
    nodes in the normal case). A node of a Galera cluster is skipped while
    its ``wsrep_ready`` is off (joining, desynced, or cut off from the
    primary component, where it refuses queries with error 1047); a server
    without Galera (``wsrep_on`` off) is taken as it is.
    """

    def do_connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        dbapi = dialect.loaded_dbapi
        problems: list[str] = []
        for host, port in hosts:
            try:
                conn = dbapi.connect(*cargs, **{**cparams, "host": host, "port": port})
            except dbapi.Error as exc:
                problems.append(f"{host}:{port}: {reason(exc)}")
                continue
            try:
                ready = _wsrep_ready(conn)
            except dbapi.Error as exc:
                ready = False
                problems.append(f"{host}:{port}: {reason(exc)}")
            else:
                if not ready:
                    problems.append(f"{host}:{port}: wsrep_ready is OFF")
            if ready:
                return conn
            with contextlib.suppress(dbapi.Error):
                conn.close()
        raise dbapi.OperationalError(2003, f"no node of {display} is ready: " + "; ".join(problems))

    return do_connect


def _wsrep_ready(conn: Any) -> bool:
    cur = conn.cursor()
    try:
        cur.execute("SHOW GLOBAL VARIABLES LIKE 'wsrep_on'")
        row = cur.fetchone()
        if row is None or str(row[1]).upper() != "ON":
            return True  # not a Galera node
        cur.execute("SHOW GLOBAL STATUS LIKE 'wsrep_ready'")
        row = cur.fetchone()
        return row is not None and str(row[1]).upper() == "ON"
    finally:
        cur.close()


# -- PostgreSQL: a read timeout --------------------------------------------------------


class _Watchdog:
    """Interrupts PostgreSQL statements that go unanswered past their deadline.

    libpq has no read timeout, and ``statement_timeout`` does not cover a
    commit that waits for a synchronous standby (the server stops the
    statement timer before committing): a primary whose standby is gone,
    such as an old primary that came back after a failover, blocks every
    commit forever. Each statement of a flask-ploy PostgreSQL connection
    registers here; one thread per process checks the deadlines a few times
    per second and, past one, cancels the statement (the server then ends a
    commit's wait with a warning, or a query with an error), and shuts the
    socket down if the server did not answer the cancel either (a frozen
    server). The cursor then closes the connection and raises, so the
    operation fails as a lost connection would: a ``set`` is retried once
    on a new connection, another write raises ``StateInDoubt``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[int, tuple[float, Any]] = {}
        self._fired: set[int] = set()
        self._ids = itertools.count(1)
        self._pid = 0
        self.tick = 0.25

    def reset(self) -> None:
        """Forget everything (in a forked child: the parent's lock may have been
        held by one of its threads at the fork, and its thread is not here)."""
        self._lock = threading.Lock()
        self._due = {}
        self._fired = set()
        self._pid = 0

    def enter(self, conn: Any, timeout: float) -> int:
        token = next(self._ids)
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked child: no thread yet
                self._pid = os.getpid()
                self._due.clear()
                self._fired.clear()
                threading.Thread(
                    target=self._run, name="flask-ploy-pg-watchdog", daemon=True
                ).start()
            self._due[token] = (deadline, conn)
        return token

    def leave(self, token: int) -> bool:
        """Unregister; ``True`` if the statement was interrupted."""
        with self._lock:
            self._due.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                return True
        return False

    def _run(self) -> None:  # pragma: no cover - timing-dependent; tested end to end
        pid = os.getpid()
        while self._pid == pid:
            time.sleep(self.tick)
            now = time.monotonic()
            with self._lock:
                late = [
                    (t, c) for t, (d, c) in self._due.items() if d <= now and t not in self._fired
                ]
                self._fired.update(t for t, _ in late)
            for token, conn in late:
                threading.Thread(target=self._interrupt, args=(token, conn), daemon=True).start()

    def _interrupt(self, token: int, conn: Any) -> None:  # pragma: no cover - see _run
        started = time.monotonic()
        with contextlib.suppress(Exception):  # the socket shutdown below is the fallback
            cancel_safe = getattr(conn, "cancel_safe", None)  # psycopg 3.2+
            if cancel_safe is not None:
                cancel_safe(timeout=CANCEL_GRACE)  # non-blocking, releases the GIL
            elif type(conn).__module__.startswith("psycopg2"):
                conn.cancel()  # psycopg2 releases the GIL while it waits
            # psycopg 3.1's cancel() holds the GIL while it waits for the
            # server: on a frozen one, the whole process would freeze too.
        time.sleep(max(0.0, CANCEL_GRACE - (time.monotonic() - started)))
        with self._lock:
            still = token in self._due
        if still:  # no answer to the cancel either: cut the connection
            with contextlib.suppress(Exception):  # the connection is already gone
                sock = socket.socket(fileno=os.dup(conn.fileno()))
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.close()


_WATCHDOG = _Watchdog()
_bounded_classes: dict[tuple[type, float], type] = {}


def _bounded_connect(timeout: float) -> Callable[..., Any]:
    """A ``do_connect`` hook: a psycopg (or psycopg2) connection whose
    ``commit()`` and cursors' ``execute()``/``executemany()`` have a read
    timeout (SQLAlchemy commits DDL with ``commit()``, State with a cursor)."""

    def do_connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        dbapi = dialect.loaded_dbapi
        conn: Any
        if dbapi.__name__ == "psycopg2":
            cls = _bounded(dbapi.extensions.connection, timeout, ("commit",))
            conn = dbapi.connect(*cargs, connection_factory=cls, **cparams)
        else:
            cls = _bounded(dbapi.Connection, timeout, ("commit",))
            conn = cls.connect(*cargs, **cparams)  # type: ignore[attr-defined]
        factory = conn.cursor_factory
        if factory is None:  # psycopg2's default: its plain cursor
            cur = conn.cursor()
            factory = type(cur)
            cur.close()
        conn.cursor_factory = _bounded(factory, timeout, ("execute", "executemany"))
        return conn

    return do_connect


def _bounded(base: type, timeout: float, names: tuple[str, ...]) -> type:
    """A subclass of *base* (a connection or cursor class) whose methods
    *names* give up after *timeout* seconds (see :class:`_Watchdog`)."""
    cls = _bounded_classes.get((base, timeout))
    if cls is not None:
        return cls

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        def bounded(self: Any, *args: Any, **kwargs: Any) -> Any:
            conn = getattr(self, "connection", self)  # a cursor's, or the connection
            token = _WATCHDOG.enter(conn, timeout)
            try:
                result = method(self, *args, **kwargs)
            except BaseException as exc:
                if _WATCHDOG.leave(token):
                    raise _timed_out(conn, timeout) from exc
                raise
            if _WATCHDOG.leave(token):
                # It returned after the cancel: a commit that was waiting for
                # a synchronous standby is committed on this server only, and
                # was never confirmed replicated. It must not count as done.
                raise _timed_out(conn, timeout)
            return result

        bounded.__name__ = method.__name__
        return bounded

    attrs: dict[str, Any] = {name: wrap(getattr(base, name)) for name in names}
    if "__slots__" in base.__dict__:
        attrs["__slots__"] = ()
    cls = type(f"Bounded{base.__name__}", (base,), attrs)
    _bounded_classes[base, timeout] = cls
    return cls


def _timed_out(conn: Any, timeout: float) -> BaseException:
    """Close *conn* (so it counts as lost) and make the driver's error."""
    with contextlib.suppress(Exception):  # already broken
        conn.close()
    error: type[BaseException] = OSError
    for klass in type(conn).__mro__:  # the driver's class under ours
        driver = sys.modules.get(klass.__module__.split(".")[0])
        if driver is not None and driver.__name__ in ("psycopg", "psycopg2"):
            error = getattr(driver, "OperationalError", OSError)
            break
    return error(
        f"no answer within {timeout:g} s (read_timeout): the statement was cancelled and the"
        " connection closed. A commit waits forever on a primary whose synchronous standby"
        " is gone (an old primary back after a failover?): see Scaling, fencing"
    )
