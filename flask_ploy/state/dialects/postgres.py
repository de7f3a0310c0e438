"""PostgreSQL through psycopg (3) or psycopg2."""

from __future__ import annotations

from typing import Any

from .base import Dialect, Problem


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
            f" RETURNING {v}, {self.x}"
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

    def upgrade_statements(self, columns: set[str], has_index: bool, index: str) -> list[str]:
        # PostgreSQL says IF NOT EXISTS for columns too: no error to tell apart.
        return [
            text.replace(" ADD COLUMN ", " ADD COLUMN IF NOT EXISTS ", 1)
            for text in super().upgrade_statements(columns, has_index, index)
        ]

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
