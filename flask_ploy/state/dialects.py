"""The SQL of every database State runs on, and what its errors mean.

Each :class:`Dialect` writes its statements once per store, in the driver's
paramstyle, and answers the per-connection questions: how to set a
connection up, how long the database itself waits for a lock, and what a
driver exception means (:meth:`Dialect.classify`). Nothing outside this
module holds SQL text or asks which database it is talking to.

To add a database: subclass :class:`Dialect`, fill in the statements that
differ (``upsert``, ``insert_if_absent``, ``incr``), the connection methods
and :meth:`~Dialect.classify`, and register the class in :data:`DIALECTS`
under SQLAlchemy's dialect name. The shared contract suite
(``tests/test_state_contract.py``) then tells what is missing.
"""

from __future__ import annotations

import enum
import math
import os
import threading
import time
from typing import Any, ClassVar

import sqlalchemy as sa

#: Seconds a WAL checkpoint may wait for readers (see :meth:`SQLiteDialect.on_checkout`).
WAL_CHECKPOINT_WAIT = 0.2


class Problem(enum.Enum):
    """What a driver exception means to a State operation."""

    #: A lock wait timed out, a deadlock, a serialization failure, a busy
    #: database: running the operation again may succeed.
    RETRY = "retry"
    #: The connection is broken: throw it away.
    DISCONNECT = "disconnect"
    #: ``incr`` met a value that is not an integer, or would overflow.
    VALUE = "value"
    #: Anything else: the database failed.
    OTHER = "other"


class Dialect:
    """The SQL of one database for one state table, prepared once.

    Statements use ``?`` placeholders, translated to the driver's paramstyle.
    Parameters are ``(resource, key, ...)``; keys and values travel as UTF-8
    bytes when :attr:`binary` is true, as ``str`` otherwise.
    """

    #: SQLAlchemy dialect names this class serves.
    names: ClassVar[tuple[str, ...]] = ()
    #: Keys and values travel as UTF-8 bytes.
    binary: ClassVar[bool] = True
    #: ``incr`` needs a transaction (the upsert and a read of the result).
    incr_needs_tx: ClassVar[bool] = False
    begin_write: ClassVar[str] = "BEGIN"
    begin_read: ClassVar[str] = "BEGIN"
    commit: ClassVar[str] = "COMMIT"
    rollback: ClassVar[str] = "ROLLBACK"
    ping: ClassVar[str] = "SELECT 1"
    #: Appended to a read that locks the row for the rest of the transaction.
    lock_suffix: ClassVar[str] = " FOR UPDATE"
    #: Let the database itself wait for locks (else fail at once and retry).
    wait_in_database = True

    def __init__(self, sa_dialect: sa.Dialect, table: str, database: str | None = None) -> None:
        #: The database name of the engine's URL (SQLite: the file).
        self.database = database
        preparer = sa_dialect.identifier_preparer
        self.sa_dialect = sa_dialect
        self.table = table
        self._format = sa_dialect.paramstyle in ("format", "pyformat")
        self.t = t = preparer.quote(table)
        self.k = k = preparer.quote("key")
        self.v = v = preparer.quote("value")
        where = f"WHERE resource = ? AND {k} = ?"
        self.get = self.sql(f"SELECT {v} FROM {t} {where}")
        self.get_for_update = self.sql(f"SELECT {v} FROM {t} {where}{self.lock_suffix}")
        self.delete = self.sql(f"DELETE FROM {t} {where}")
        # (value, resource, key)
        self.replace_value = self.sql(f"UPDATE {t} SET {v} = ? {where}")
        self.count = self.sql(f"SELECT COUNT(*) FROM {t} WHERE resource = ?")
        self.clear = self.sql(f"DELETE FROM {t} WHERE resource = ?")
        self.set = self.sql(self.upsert_sql())
        self.add = self.sql(self.insert_if_absent_sql())
        self.incr = self.sql(self.incr_sql())
        self._many: dict[tuple[str, int], str] = {}
        # State.transact and State.replace (see "Transactions" below).
        self.tx_get = self.sql(f"SELECT {v} FROM {t} {where}{self.tx_lock_suffix}")
        # (new, resource, key, expected)
        self.compare_and_set = self.sql(f"UPDATE {t} SET {v} = ? {where} AND {v} = ?")

    # -- statements ----------------------------------------------------------

    def sql(self, text: str) -> str:
        """Translate ``?`` placeholders to the driver's paramstyle."""
        return text.replace("?", "%s") if self._format else text

    def _marks(self, n: int) -> str:
        return ", ".join(["%s" if self._format else "?"] * n)

    def upsert_sql(self) -> str:
        """``set``: standard ``ON CONFLICT`` (SQLite, PostgreSQL)."""
        return (
            f"INSERT INTO {self.t} (resource, {self.k}, {self.v}) VALUES (?, ?, ?)"
            f" ON CONFLICT (resource, {self.k}) DO UPDATE SET {self.v} = excluded.{self.v}"
        )

    def insert_if_absent_sql(self) -> str:
        """``add``: insert unless present; see :meth:`insert_if_absent`."""
        return (
            f"INSERT INTO {self.t} (resource, {self.k}, {self.v}) VALUES (?, ?, ?)"
            f" ON CONFLICT (resource, {self.k}) DO NOTHING"
        )

    def incr_sql(self) -> str:
        """``incr``: add to a decimal integer, creating it; see :meth:`run_incr`."""
        raise NotImplementedError

    def select_many(self, n: int) -> str:
        """``SELECT key, value`` of *n* keys: ``(resource, key1, ..., keyN)``."""
        return self._cached("select", n, f"SELECT {self.k}, {self.v} FROM {self.t}")

    def delete_many(self, n: int) -> str:
        """``DELETE`` *n* keys: ``(resource, key1, ..., keyN)``; ``rowcount`` is how many."""
        return self._cached("delete", n, f"DELETE FROM {self.t}")

    def _cached(self, what: str, n: int, head: str) -> str:
        text = self._many.get((what, n))
        if text is None:
            text = self._many[what, n] = (
                f"{head} WHERE resource = {self._marks(1)} AND {self.k} IN ({self._marks(n)})"
            )
        return text

    def scan(self, *, after: bool, upper: bool, values: bool, limit: int) -> str:
        """Keys (and values) of a resource in key order, from a lower bound.

        Parameters: ``(resource, lower[, upper])``. *after*: the lower bound
        is exclusive (a cursor) rather than inclusive (a prefix); *upper*:
        there is an exclusive upper bound.
        """
        m = self._marks(1)
        return (
            f"SELECT {self.k}{', ' + self.v if values else ''} FROM {self.t}"
            f" WHERE resource = {m} AND {self.k} {'>' if after else '>='} {m}"
            + (f" AND {self.k} < {m}" if upper else "")
            + f" ORDER BY {self.k} LIMIT {int(limit)}"
        )

    # -- operations that differ by more than their text ------------------------

    def insert_if_absent(self, cur: Any, params: tuple[Any, ...]) -> bool:
        """Run ``add``; return whether the row was inserted."""
        cur.execute(self.add, params)
        return bool(cur.rowcount == 1)

    def run_incr(self, cur: Any, resource: str, key: Any, amount: int) -> Any:
        """Run ``incr``; return the stored result, or ``None`` if the value
        is not an integer (unchanged then). May raise a :attr:`Problem.VALUE`
        error instead."""
        cur.execute(self.incr, (resource, key, self.encode(str(amount)), amount))
        rows = cur.fetchall()
        return rows[0][0] if rows else None

    def encode(self, text: str) -> Any:
        """A key or value as the driver takes it."""
        return text.encode() if self.binary else text

    # -- connections ---------------------------------------------------------------

    def prepare(self, conn: Any, settings: Any) -> None:
        """Set up a new DBAPI connection (in autocommit mode); once per connection.

        :param settings: The store's :class:`~flask_ploy.state.store.StateSettings`.
        """
        self.set_lock_wait(conn.cursor(), self.first_wait(settings.busy_timeout))

    def first_wait(self, timeout: float) -> float:
        """Seconds the database itself waits for a lock on an operation's
        first attempt, for a busy timeout of *timeout* seconds."""
        return self.server_wait(timeout) if self.wait_in_database else 0.0

    def server_wait(self, timeout: float) -> float:
        """The longest lock wait the database can be told, up to *timeout*."""
        return timeout

    def on_checkout(self, conn: Any, settings: Any) -> None:
        """Housekeeping each time a context borrows *conn* (cheap: once per context)."""

    def setup_needs_lock(self, conn: Any) -> bool:
        """Whether :meth:`prepare` must take the database's write lock."""
        return False

    def autocommit(self, conn: Any, on: bool) -> bool:
        """Set autocommit mode; return the previous mode."""
        raise NotImplementedError

    def in_transaction(self, conn: Any) -> bool:
        """Whether a transaction is open on *conn*."""
        raise NotImplementedError

    def set_lock_wait(self, cur: Any, seconds: float) -> None:
        """Make the database wait at most *seconds* for a lock, from now on."""
        raise NotImplementedError

    def classify(self, exc: BaseException, conn: Any) -> Problem:
        """What driver exception *exc* means (*conn*: its DBAPI connection)."""
        try:
            if self.sa_dialect.is_disconnect(exc, conn, None):  # type: ignore[arg-type]
                return Problem.DISCONNECT
        except Exception:  # pragma: no cover - a dialect that cannot tell
            return Problem.OTHER
        return Problem.OTHER

    # -- transactions: State.transact ------------------------------------------------
    #
    # A transaction is serializable: as if transactions ran one at a time. Its
    # writes are sent in key order when the function returns (see
    # flask_ploy.state.transaction); what differs per database is how it
    # begins and how its reads lock, set here.

    #: Appended to a point read (``get``, ``get_many``) inside a transaction.
    tx_lock_suffix: ClassVar[str] = ""
    #: Appended to a range read (``list``) inside a transaction.
    tx_share_suffix: ClassVar[str] = ""

    def begin_transact(self, cur: Any) -> None:
        """Begin a serializable transaction on *cur*'s connection (in autocommit mode)."""
        cur.execute(self.begin_write)

    def tx_select_many(self, n: int) -> str:
        """:meth:`select_many` with the transaction's point-read locks."""
        text = self._many.get(("tx_select", n))
        if text is None:
            text = self._many["tx_select", n] = self.select_many(n) + self.tx_lock_suffix
        return text


class SQLiteDialect(Dialect):
    """SQLite through the standard library's ``sqlite3``."""

    names = ("sqlite",)
    binary = False
    begin_write = "BEGIN IMMEDIATE"  # take the write lock first: no upgrade deadlock
    lock_suffix = ""

    def __init__(self, sa_dialect: sa.Dialect, table: str, database: str | None = None) -> None:
        super().__init__(sa_dialect, table, database)
        self._checkpointing = threading.Lock()
        self._next_checkpoint = 0.0
        self._checkpoint_backoff = 0.05

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

    def prepare(self, conn: Any, settings: Any) -> None:
        # The set-up may wait for other connections (switching to WAL does),
        # for the whole busy timeout; operations then wait as first_wait says.
        self.set_lock_wait(conn, settings.busy_timeout)
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if mode.lower() not in ("wal", "memory"):
            # Two connections switching at once can deadlock on the lock
            # upgrade, and SQLite then fails one at once: try again.
            deadline = time.monotonic() + settings.busy_timeout
            while True:
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                    break
                except conn.OperationalError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.01)
        conn.execute(f"PRAGMA synchronous = {settings.sqlite_synchronous}")
        # A checkpoint that restarts the WAL truncates it to this size.
        conn.execute(f"PRAGMA journal_size_limit = {int(settings.sqlite_wal_limit)}")
        super().prepare(conn, settings)

    def setup_needs_lock(self, conn: Any) -> bool:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        return str(mode).lower() not in ("wal", "memory")  # switching to WAL does

    def on_checkout(self, conn: Any, settings: Any) -> None:
        """Keep the WAL under ``PLOY_STATE_SQLITE_WAL_LIMIT``.

        Overlapping readers keep SQLite's own (passive) checkpoints from ever
        restarting the WAL, so it grows without bound. Past the limit, a
        ``TRUNCATE`` checkpoint waits (at most :data:`WAL_CHECKPOINT_WAIT`
        seconds, holding back new writers meanwhile) for the readers of the
        moment to finish, copies the WAL into the database and empties it.
        One thread of the process tries at a time. If a reader outlasts the
        wait (a long report), the next try waits 0.1 s, then 0.2, 0.4... up to
        5 s, so contexts do not each pay the wait.
        """
        if not self.database or self.database.startswith("file:"):
            return  # in memory, or a URI (mode=ro, memdb): nothing to keep small
        now = time.monotonic()
        if now < self._next_checkpoint:
            return
        try:
            size = os.stat(self.database + "-wal").st_size
        except OSError:
            return
        if size <= settings.sqlite_wal_limit or not self._checkpointing.acquire(blocking=False):
            return
        done = False
        try:
            self.set_lock_wait(conn, WAL_CHECKPOINT_WAIT)
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            done = not busy
        except conn.Error:  # best effort: a read-only file, a busy moment
            pass
        finally:
            self.set_lock_wait(conn, self.first_wait(settings.busy_timeout))
            if done:
                self._checkpoint_backoff, self._next_checkpoint = 0.05, 0.0
            else:
                self._checkpoint_backoff = min(self._checkpoint_backoff * 2, 5.0)
                self._next_checkpoint = time.monotonic() + self._checkpoint_backoff
            self._checkpointing.release()

    def autocommit(self, conn: Any, on: bool) -> bool:
        previous = conn.isolation_level is None
        if previous != on:
            if conn.in_transaction:
                conn.rollback()
            conn.isolation_level = None if on else ""
        return previous

    def in_transaction(self, conn: Any) -> bool:
        return bool(conn.in_transaction)

    def set_lock_wait(self, cur: Any, seconds: float) -> None:
        cur.execute(f"PRAGMA busy_timeout = {max(1, int(seconds * 1000))}")

    def classify(self, exc: BaseException, conn: Any) -> Problem:
        code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
        if code is not None:
            if code & 0xFF in (5, 6):  # SQLITE_BUSY, SQLITE_LOCKED
                return Problem.RETRY
        else:
            msg = str(exc).lower()
            if "is locked" in msg or "is busy" in msg:
                return Problem.RETRY
        if "closed" in str(exc).lower():  # a closed connection or cursor
            return Problem.DISCONNECT
        return Problem.OTHER


class PostgresDialect(Dialect):
    """PostgreSQL through psycopg (3) or psycopg2."""

    names = ("postgresql",)

    def incr_sql(self) -> str:
        # resource, key, amount as bytes, amount. Overflow raises 22003.
        t, v = self.t, self.v
        return (
            f"INSERT INTO {t} (resource, {self.k}, {v}) VALUES (?, ?, ?)"
            f" ON CONFLICT (resource, {self.k}) DO UPDATE"
            f" SET {v} = {self.incr_value(f'{t}.{v}', '?')}"
            f" WHERE {self.incr_guard(f'{t}.{v}')}"
            f" RETURNING {v}"
        )

    # Citus refuses a function that is not IMMUTABLE in ON CONFLICT DO UPDATE
    # on a distributed table, so both expressions use only IMMUTABLE ones:
    # encode/decode(..., 'escape'), int8in/int8out (the casts), int8pl (+),
    # textregexeq (~). convert_to/convert_from are STABLE (they depend on the
    # server encoding); decimal digits and '-' are the same bytes in every
    # encoding and have no escapes, so decode(text, 'escape') is exact here.
    # tests/scaleout/test_sql_fixes.py proves it with a generated column,
    # which PostgreSQL accepts only when every function is IMMUTABLE.

    def incr_value(self, column: str, amount: str) -> str:
        """The new value of ``incr``: *column* (bytea) plus *amount* (an expression)."""
        text = f"encode({column}, 'escape')"  # NUL-safe, unlike convert_from
        return f"decode(CAST(CAST({text} AS bigint) + CAST({amount} AS bigint) AS text), 'escape')"

    def incr_guard(self, column: str) -> str:
        """True when *column* (bytea) holds a canonical decimal 64-bit integer."""
        return f"encode({column}, 'escape') ~ '^(0|-{{0,1}}[1-9][0-9]{{0,18}})$'"

    def autocommit(self, conn: Any, on: bool) -> bool:
        previous = bool(conn.autocommit)
        if previous != on:
            if _pg_in_transaction(conn):
                conn.rollback()
            conn.autocommit = on
        return previous

    def in_transaction(self, conn: Any) -> bool:
        return _pg_in_transaction(conn)

    def set_lock_wait(self, cur: Any, seconds: float) -> None:
        # 0 would mean "no limit"
        cur.execute(f"SET lock_timeout = {max(1, int(seconds * 1000))}")

    def classify(self, exc: BaseException, conn: Any) -> Problem:
        state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if state in ("40001", "40P01", "55P03"):
            return Problem.RETRY
        if state in ("22003", "22P02"):
            return Problem.VALUE
        if state is not None and state[:2] in ("08", "57") and state != "57014":
            return Problem.DISCONNECT  # connection exception, operator intervention
        return super().classify(exc, conn)

    # -- transactions ---------------------------------------------------------------
    # SERIALIZABLE (serializable snapshot isolation): reads take no row locks
    # and never wait; PostgreSQL tracks what each transaction read, key ranges
    # and absent keys included, and fails one of two transactions that could
    # not have run one after the other with 40001, which is retried.

    def begin_transact(self, cur: Any) -> None:
        cur.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")


def _pg_in_transaction(conn: Any) -> bool:
    info = getattr(conn, "info", None)  # psycopg 3
    if info is not None and hasattr(info, "transaction_status"):
        return int(info.transaction_status) != 0  # not IDLE
    return int(conn.get_transaction_status()) != 0  # psycopg2


class MySQLDialect(Dialect):
    """MariaDB and MySQL through PyMySQL or mysqlclient."""

    names = ("mysql", "mariadb")
    incr_needs_tx = True
    #: Appended to DELETE statements (" RETURNING 1" through Spider).
    returning = ""
    _engine_checked = False

    def __init__(self, sa_dialect: sa.Dialect, table: str, database: str | None = None) -> None:
        super().__init__(sa_dialect, table, database)
        self._plain_delete, self._plain_clear = self.delete, self.clear

    def upsert_sql(self) -> str:
        return (
            f"INSERT INTO {self.t} (resource, {self.k}, {self.v}) VALUES (?, ?, ?)"
            f" ON DUPLICATE KEY UPDATE {self.v} = VALUES({self.v})"
        )

    def insert_if_absent_sql(self) -> str:
        return f"INSERT INTO {self.t} (resource, {self.k}, {self.v}) VALUES (?, ?, ?)"

    def incr_sql(self) -> str:
        # resource, key, amount as bytes, amount; followed by a read of the
        # value in the same transaction. Overflow raises 1690.
        v = self.v
        ok = (
            f"{v} REGEXP '^(0|-{{0,1}}[1-9][0-9]{{0,18}})$'"
            f" AND CAST(CAST({v} AS SIGNED) AS BINARY) = {v}"
        )
        return (
            f"INSERT INTO {self.t} (resource, {self.k}, {v}) VALUES (?, ?, ?)"
            f" ON DUPLICATE KEY UPDATE {v} = IF({ok}, CAST(CAST({v} AS SIGNED) + ? AS BINARY), {v})"
        )

    def insert_if_absent(self, cur: Any, params: tuple[Any, ...]) -> bool:
        try:
            cur.execute(self.add, params)
        except Exception as exc:
            if _mysql_code(exc) == 1062:  # duplicate key
                return False
            raise
        return True

    def run_incr(self, cur: Any, resource: str, key: Any, amount: int) -> Any:
        cur.execute(self.incr, (resource, key, self.encode(str(amount)), amount))
        cur.execute(self.get, (resource, key))
        rows = cur.fetchall()
        return rows[0][0] if rows else None

    def autocommit(self, conn: Any, on: bool) -> bool:
        previous = bool(conn.get_autocommit())
        if previous != on:
            conn.autocommit(on)
        return previous

    def in_transaction(self, conn: Any) -> bool:
        return bool(getattr(conn, "server_status", 0) & 1)  # SERVER_STATUS_IN_TRANS

    def server_wait(self, timeout: float) -> float:
        return float(math.floor(timeout))  # the server counts whole seconds

    def set_lock_wait(self, cur: Any, seconds: float) -> None:
        n = max(0, math.floor(seconds))  # 0: fail at once, and the caller retries
        cur.execute(f"SET SESSION innodb_lock_wait_timeout = {n}, lock_wait_timeout = {n}")

    def classify(self, exc: BaseException, conn: Any) -> Problem:
        code = _mysql_code(exc)
        if code in (1213, 1205, 1020):  # deadlock, lock wait timeout, snapshot conflict
            return Problem.RETRY
        if code in (1690, 1292, 1264, 1366):
            return Problem.VALUE
        if code == 1047:  # Galera: WSREP has not yet prepared the node
            # The node left the primary component (or is joining): it refuses
            # every query, ROLLBACK included, so the connection is thrown away
            # rather than returned to the pool (where resetting it would log
            # "Exception during reset" each time), and the retry connects
            # again: with several hosts in the URL, to a node that is ready.
            return Problem.DISCONNECT
        return super().classify(exc, conn)

    def prepare(self, conn: Any, settings: Any) -> None:
        super().prepare(conn, settings)
        if self._engine_checked:
            return
        # Once per store: through a Spider table, DELETE reports 0 affected
        # rows (the shards delete them), so delete()/delete_many()/clear()
        # count with RETURNING there (MariaDB 10.5+): the driver's rowcount
        # is then the number of rows returned. Plain InnoDB keeps the plain
        # DELETE: RETURNING costs little per key but doubles clear()'s time.
        cur = conn.cursor()
        try:
            cur.execute(
                "SELECT ENGINE FROM information_schema.TABLES"
                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                (self.table,),
            )
            row = cur.fetchone()
        finally:
            cur.close()
        if row is not None and str(row[0]).upper() == "SPIDER" and self.has_returning:
            self.count_with_returning()
        self._engine_checked = True

    @property
    def has_returning(self) -> bool:
        """The server is MariaDB 10.5 or later (``DELETE ... RETURNING``)."""
        version = getattr(self.sa_dialect, "server_version_info", None) or ()
        return bool(getattr(self.sa_dialect, "is_mariadb", False)) and tuple(version) >= (10, 5)

    def count_with_returning(self) -> None:
        """Make every DELETE return a row per deleted row, so ``rowcount`` counts them.

        Idempotent: two connections may be prepared at once.
        """
        self.returning = " RETURNING 1"
        self.delete = f"{self._plain_delete}{self.returning}"
        self.clear = f"{self._plain_clear}{self.returning}"

    def delete_many(self, n: int) -> str:
        text = super().delete_many(n)
        return text + self.returning if self.returning else text

    # -- transactions ---------------------------------------------------------------
    # REPEATABLE READ with locking reads (two-phase locking): a point read
    # locks the row, or the gap where it would be (InnoDB's next-key locks),
    # for writing; a range read locks the rows and gaps it scanned for
    # reading. Each read sees the latest committed value; nothing it saw can
    # change or appear before the transaction ends. A deadlock (1213) is
    # retried. READ COMMITTED would take no gap locks, hence the explicit level.
    tx_lock_suffix = " FOR UPDATE"
    tx_share_suffix = " LOCK IN SHARE MODE"

    def begin_transact(self, cur: Any) -> None:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("START TRANSACTION")


def _mysql_code(exc: BaseException) -> Any:
    """The MySQL error number of a PyMySQL/mysqlclient error, or ``None``."""
    args: tuple[Any, ...] = getattr(exc, "args", ())
    return args[0] if args else None


#: SQLAlchemy dialect names that are refused, with the reason.
REFUSED: dict[str, str] = {
    "cockroachdb": (
        "CockroachDB is not supported: State's SQL, lock timeouts and retry rules are"
        " tested on SQLite, PostgreSQL and MariaDB/MySQL only, and no CockroachDB server"
        " was available to test them (a postgresql:// URL pointed at CockroachDB is not"
        " supported either). For distributed PostgreSQL, Citus runs State's SQL; see the"
        " Scaling page of the docs"
    ),
}

#: SQLAlchemy dialect name -> the :class:`Dialect` that serves it.
DIALECTS: dict[str, type[Dialect]] = {
    name: cls for cls in (SQLiteDialect, PostgresDialect, MySQLDialect) for name in cls.names
}
