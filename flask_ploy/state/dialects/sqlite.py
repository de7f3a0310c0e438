"""SQLite through the standard library's ``sqlite3``: WAL, busy timeout, a bounded WAL."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import sqlalchemy as sa

from .base import Dialect, Problem

#: Seconds a WAL checkpoint may wait for readers (see :meth:`SQLiteDialect.on_checkout`).
WAL_CHECKPOINT_WAIT = 0.2


class SQLiteDialect(Dialect):
    """SQLite through the standard library's ``sqlite3``."""

    names = ("sqlite",)
    binary = False
    begin_write = "BEGIN IMMEDIATE"  # take the write lock first: no upgrade deadlock
    lock_suffix = ""

    def __init__(self, sa_dialect: sa.Dialect, table: str, database: str | None = None) -> None:
        super().__init__(sa_dialect, table, database)
        # julianday('now') is this machine's clock (to the millisecond), in
        # epoch seconds here; evaluated only for a row that has an expiry.
        now = "(julianday('now') - 2440587.5) * 86400.0"
        self.get_live = (
            f"SELECT {self.v} FROM {self.t} WHERE resource = ? AND {self.k} = ?"
            f" AND ({self.x} IS NULL OR {self.x} > {now})"
        )
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
            f" RETURNING {v}, {self.x}"
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
