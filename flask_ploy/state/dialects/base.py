"""The :class:`Dialect` base class: what every database's SQL must provide.

A dialect writes its statements once per store, in the driver's paramstyle,
and answers the per-connection questions: how to set a connection up, how
long the database itself waits for a lock, and what a driver exception
means (:meth:`Dialect.classify`).
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

import sqlalchemy as sa


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
        self.m = m = preparer.quote("metadata")
        self.x = x = preparer.quote("expires_at")
        where = f"WHERE resource = ? AND {k} = ?"
        #: Not expired at the parameter's time (epoch seconds).
        self.live = live = f"({x} IS NULL OR {x} > ?)"
        # Reads return the expiry too: the binding drops an expired row in
        # Python, so a get stays one indexed point read with two parameters.
        self.get = self.sql(f"SELECT {v}, {x} FROM {t} {where}")
        #: ``(resource, key)`` -> ``(value,)`` of a live row, the expiry
        #: checked by the database itself: only where its clock is this
        #: process's (SQLite, in process), and then required of a dialect
        #: whose ``binary`` is false (the binding's text fast path uses it).
        self.get_live: str | None = None
        # get_with_metadata: (value, metadata, expires_at)
        self.get_meta = self.sql(f"SELECT {v}, {m}, {x} FROM {t} {where}")
        self.get_for_update = self.sql(f"SELECT {v}, {x} FROM {t} {where}{self.lock_suffix}")
        self.delete = self.sql(f"DELETE FROM {t} {where}")
        # (resource, key, now): drop the row of *key* if it has expired, so
        # the writes that read the old value (add, replace, incr) see it absent.
        self.expire_one = self.sql(f"DELETE FROM {t} {where} AND {x} <= ?")
        # (value, resource, key): update's write keeps metadata and expiry.
        self.replace_value = self.sql(f"UPDATE {t} SET {v} = ? {where}")
        # (resource, now)
        self.count = self.sql(f"SELECT COUNT(*) FROM {t} WHERE resource = ? AND {live}")
        self.clear = self.sql(f"DELETE FROM {t} WHERE resource = ?")
        # set: (resource, key, value); clears metadata and expiry.
        self.set = self.sql(self.upsert_sql())
        # put: (resource, key, value, metadata, expires_at)
        self.put = self.sql(self.put_sql())
        self.add = self.sql(self.insert_if_absent_sql())
        self.incr = self.sql(self.incr_sql())
        self._many: dict[tuple[str, int], str] = {}
        # State.transact and State.replace (see "Transactions" below).
        self.tx_get = self.sql(f"SELECT {v}, {m}, {x} FROM {t} {where}{self.tx_lock_suffix}")
        # (new, resource, key, expected); a replace is a set: no metadata, no expiry.
        # (new, resource, key, expected, now): only a live row that holds *expected*.
        self.compare_and_set = self.sql(
            f"UPDATE {t} SET {v} = ?, {m} = NULL, {x} = NULL {where} AND {v} = ? AND {live}"
        )

    # -- statements ----------------------------------------------------------

    def sql(self, text: str) -> str:
        """Translate ``?`` placeholders to the driver's paramstyle."""
        return text.replace("?", "%s") if self._format else text

    def _marks(self, n: int) -> str:
        return ", ".join(["%s" if self._format else "?"] * n)

    def upsert_sql(self) -> str:
        """``set``: standard ``ON CONFLICT`` (SQLite, PostgreSQL); no metadata, no expiry."""
        return (
            f"INSERT INTO {self.t} (resource, {self.k}, {self.v}) VALUES (?, ?, ?)"
            f" ON CONFLICT (resource, {self.k}) DO UPDATE SET {self.v} = excluded.{self.v},"
            f" {self.m} = NULL, {self.x} = NULL"
        )

    def put_sql(self) -> str:
        """``set`` with metadata or an expiry: the whole entry, replaced."""
        m, x = self.m, self.x
        return (
            f"INSERT INTO {self.t} (resource, {self.k}, {self.v}, {m}, {x}) VALUES (?, ?, ?, ?, ?)"
            f" ON CONFLICT (resource, {self.k}) DO UPDATE SET {self.v} = excluded.{self.v},"
            f" {m} = excluded.{m}, {x} = excluded.{x}"
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
        """``SELECT key, value, metadata, expires_at`` of *n* keys:
        ``(resource, key1, ..., keyN)``; the caller drops expired rows."""
        head = f"SELECT {self.k}, {self.v}, {self.m}, {self.x} FROM {self.t}"
        return self._cached("select", n, head)

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

    def scan(
        self, *, after: bool, upper: bool, values: bool, limit: int, meta: bool = False
    ) -> str:
        """Live keys (and values; and metadata and expiry) of a resource in
        key order, from a lower bound.

        Parameters: ``(resource, lower[, upper], now)``. *after*: the lower
        bound is exclusive (a cursor) rather than inclusive (a prefix);
        *upper*: there is an exclusive upper bound; *meta*: the columns
        ``metadata, expires_at`` follow.
        """
        m = self._marks(1)
        cols = (
            self.k + (f", {self.v}" if values else "") + (f", {self.m}, {self.x}" if meta else "")
        )
        return (
            f"SELECT {cols} FROM {self.t}"
            f" WHERE resource = {m} AND {self.k} {'>' if after else '>='} {m}"
            + (f" AND {self.k} < {m}" if upper else "")
            + f" AND {self.live.replace('?', m)} ORDER BY {self.k} LIMIT {int(limit)}"
        )

    # -- expiry ------------------------------------------------------------------------

    def purge_sql(self, limit: int) -> str:
        """Delete at most *limit* expired rows: ``(resource, now, resource, now)``.

        The expiry is tested on the deleted row itself too: a row rewritten
        (live again) by a transaction the DELETE waited for is re-checked
        with its new values at READ COMMITTED, and kept; a test in the
        subquery alone would delete it."""
        t, k, x = self.t, self.k, self.x
        return self.sql(
            f"DELETE FROM {t} WHERE resource = ? AND {x} <= ? AND {k} IN (SELECT {k} FROM {t}"
            f" WHERE resource = ? AND {x} <= ? LIMIT {int(limit)})"
        )

    def purge(self, cur: Any, resource: str, now: float, limit: int) -> int:
        """Delete at most *limit* rows of *resource* expired at *now*; return how many."""
        cur.execute(self.purge_sql(limit), (resource, now, resource, now))
        return int(cur.rowcount)

    # -- upgrading a table made by an earlier version ----------------------------------

    #: The column types :meth:`upgrade_statements` adds.
    metadata_type: ClassVar[str] = "TEXT"
    expiry_type: ClassVar[str] = "DOUBLE PRECISION"

    def upgrade_statements(self, columns: set[str], has_index: bool, index: str) -> list[str]:
        """The DDL that brings a table with *columns* up to date, in order.

        Each statement is safe to run when another process has run it
        already: it says ``IF NOT EXISTS``, or :meth:`already_done` tells its
        error apart. Adding a nullable column keeps every row.
        """
        out = [
            f"ALTER TABLE {self.t} ADD COLUMN {self.q(name)} {kind}"
            for name, kind in (("metadata", self.metadata_type), ("expires_at", self.expiry_type))
            if name not in columns
        ]
        if not has_index:
            out.append(self.index_sql(index))
        return out

    def index_sql(self, index: str) -> str:
        """``CREATE INDEX`` of the expiry index (partial: rows that expire)."""
        return (
            f"CREATE INDEX IF NOT EXISTS {self.q(index)} ON {self.t}"
            f" (resource, {self.x}) WHERE {self.x} IS NOT NULL"
        )

    def already_done(self, exc: BaseException) -> bool:
        """Whether DDL error *exc* says another process made the change first."""
        msg = str(exc).lower()
        return "duplicate" in msg or "already exists" in msg

    def q(self, name: str) -> str:
        """*name* quoted as an identifier."""
        return str(self.sa_dialect.identifier_preparer.quote(name))

    # -- operations that differ by more than their text ------------------------

    def insert_if_absent(self, cur: Any, params: tuple[Any, ...]) -> bool:
        """Run ``add``; return whether the row was inserted."""
        cur.execute(self.add, params)
        return bool(cur.rowcount == 1)

    def run_incr(self, cur: Any, resource: str, key: Any, amount: int) -> Any:
        """Run ``incr``; return ``(result, expires_at)`` of the row, or ``None``
        if the value is not an integer (unchanged then). An expired row is
        incremented like a live one: the caller sees its past ``expires_at``
        and starts it again. May raise a :attr:`Problem.VALUE` error instead."""
        cur.execute(self.incr, (resource, key, self.encode(str(amount)), amount))
        rows = cur.fetchall()
        return rows[0] if rows else None

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
