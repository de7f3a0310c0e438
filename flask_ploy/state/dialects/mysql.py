"""MariaDB and MySQL through PyMySQL or mysqlclient (Galera and Spider too)."""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa

from .base import Dialect, Problem


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
        self._plain_expire = self.expire_one

    expiry_type = "DOUBLE"

    def upsert_sql(self) -> str:
        return (
            f"INSERT INTO {self.t} (resource, {self.k}, {self.v}) VALUES (?, ?, ?)"
            f" ON DUPLICATE KEY UPDATE {self.v} = VALUES({self.v}),"
            f" {self.m} = NULL, {self.x} = NULL"
        )

    def put_sql(self) -> str:
        m, x = self.m, self.x
        return (
            f"INSERT INTO {self.t} (resource, {self.k}, {self.v}, {m}, {x}) VALUES (?, ?, ?, ?, ?)"
            f" ON DUPLICATE KEY UPDATE {self.v} = VALUES({self.v}),"
            f" {m} = VALUES({m}), {x} = VALUES({x})"
        )

    def purge_sql(self, limit: int) -> str:
        # MySQL refuses LIMIT in an IN subquery; DELETE takes a LIMIT itself.
        return self.sql(
            f"DELETE FROM {self.t} WHERE resource = ? AND {self.x} <= ? LIMIT {int(limit)}"
        )

    def purge(self, cur: Any, resource: str, now: float, limit: int) -> int:
        cur.execute(self.purge_sql(limit) + self.returning, (resource, now))
        return int(cur.rowcount)

    def index_sql(self, index: str) -> str:
        # No partial indexes, and MySQL has no CREATE INDEX IF NOT EXISTS:
        # a second process gets 1061 (duplicate key name), see already_done.
        return f"CREATE INDEX {self.q(index)} ON {self.t} (resource, {self.x})"

    def already_done(self, exc: BaseException) -> bool:
        return _mysql_code(exc) in (1060, 1061) or super().already_done(exc)

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
        cur.execute(self.get, (resource, key))  # (value, expires_at)
        rows = cur.fetchall()
        return rows[0] if rows else None

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
        self.expire_one = f"{self._plain_expire}{self.returning}"

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
