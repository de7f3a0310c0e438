"""``sqlite:``: a cache in a SQLite file, shared by the processes of one machine.

The default cache when ``PLOY_CACHE_URL`` is unset (``ploy-cache.sqlite3`` in
the instance folder), as Ploy's own emulator keeps Cache in SQLite: rows with
an ``expires_at``, filtered on read. Gunicorn workers, the reloader and
``flask ploy cache`` all see one cache.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any, ClassVar

from .._validate import INT_MAX, INT_MIN, is_counter, not_integer
from ..errors import PloyConfigError
from .base import CacheBackend, Fault, Unavailable
from .sqlite_sql import (
    ADD,
    CHUNK,
    CLEAR,
    COUNT,
    DEFAULT_TIMEOUT,
    DELETE,
    ENTRY_OVERHEAD,
    EVICT_SLACK,
    GET,
    HAS,
    LIVE,
    SCHEMA,
    SET,
    SETUP_TIMEOUT,
    TOUCH,
    TTL,
    UNLOCK,
    WAL_LIMIT,
    classify,
    parse_sqlite_url,
    successor,
)

# Graveyard: connections inherited by a forked child. Closing (or freeing) one
# there could checkpoint or unlink the parent's WAL; they are kept, unused.
_inherited: list[Any] = []


def _live(expires: float | None, now: float) -> bool:
    return expires is None or expires > now


class _Conn:
    """One thread's connection and its cursor (a weakref-able holder)."""

    __slots__ = ("__weakref__", "conn", "cur")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.cur = conn.cursor()


class SQLiteBackend(CacheBackend):
    """A cache in a SQLite file: ``sqlite:///path/cache.sqlite3``.

    Every process of the machine that opens the file shares the cache; each
    thread has a connection of its own, and a forked child opens new ones.
    The file is in WAL mode (readers never wait for a writer) with
    ``synchronous=NORMAL`` (``?synchronous=off`` for throwaway files).

    An operation that needs the write lock waits at most ``?timeout=``
    seconds (default 0.5) for another connection to release it; then it is
    classified ``"busy"``: a miss or a dropped write, counted apart, and
    never a reason to open the breaker.

    At most *max_entries* entries and *max_bytes* bytes (UTF-8 keys counted
    twice, values, and :data:`ENTRY_OVERHEAD` per entry) are kept. A write
    past a bound deletes the expired entries, then the least recently
    *stored* ones (a read writes nothing), down to 1% under the bound. A value
    too large for *max_bytes* on its own is not kept (its key then reads as
    a miss).

    :param clock: Returns Unix time in seconds (:func:`time.time`): expiry
        times are stored, so every process on the file must share the clock.
    """

    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)
    errors = (Unavailable, sqlite3.Error)

    def __init__(
        self,
        url: str,
        cooldown: float = 1.0,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(url, cooldown)
        path, options = parse_sqlite_url(url)
        #: The file's path (as given: relative paths are the working directory's).
        self.path = path
        try:
            self.timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
            if not 0 <= self.timeout <= 60 or math.isnan(self.timeout):
                raise ValueError
        except ValueError:
            raise PloyConfigError(
                f"cache URL {self.display_url}: timeout must be seconds from 0 to 60"
            ) from None
        self.synchronous = options.get("synchronous", "normal").upper()
        if self.synchronous not in ("OFF", "NORMAL", "FULL"):
            raise PloyConfigError(
                f"cache URL {self.display_url}: synchronous must be off, normal or full"
            )
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        #: Returns Unix time in seconds (shared by every process on the file);
        #: tests may pass a fake clock.
        self.clock = clock
        self._fits = max_bytes // 4  # a value of up to this many chars always fits
        self._local = threading.local()
        self._conns: weakref.WeakSet[_Conn] = weakref.WeakSet()
        self._conns_lock = threading.Lock()
        self._setup_lock = threading.Lock()
        self._ready = False  # the schema exists (checked once per process)
        self._full = False  # a write went past a bound: evict after it
        self._writes = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cooldown: float = 1.0,
        options: Mapping[str, Any] | None = None,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        **_: Any,
    ) -> SQLiteBackend:
        return cls(url, cooldown, max_entries=max_entries, max_bytes=max_bytes)

    def reset_locks(self) -> None:
        """In a forked child: keep the parent's connections unused, open new ones."""
        super().reset_locks()
        _inherited.extend(self._conns)
        self._conns = weakref.WeakSet()
        self._conns_lock = threading.Lock()
        self._setup_lock = threading.Lock()
        self._local = threading.local()

    def classify(self, exc: BaseException) -> Fault:
        return classify(exc)

    # -- connections ----------------------------------------------------------

    def _conn(self) -> _Conn:
        """The calling thread's connection, opened (and the schema made) on first use."""
        try:
            held: _Conn = self._local.held
            return held
        except AttributeError:
            pass
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise sqlite3.OperationalError(f"unable to create {folder}: {exc}") from None
        # A new connection reads the schema first, and a new file must be
        # set up (WAL mode, the tables): both wait up to SETUP_TIMEOUT for
        # other processes doing the same, so a burst of first requests on a
        # new file is not a burst of "busy" misses. Then the URL's timeout.
        conn = sqlite3.connect(
            self.path,
            timeout=max(self.timeout, SETUP_TIMEOUT),
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            # synchronous first: with OFF, switching a new file to WAL skips its fsync.
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            if not self._ready:
                with self._setup_lock:  # this process's threads one at a time
                    self._set_up(conn)
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
            conn.create_function("ploy_cache_full", 0, self._on_full)
            conn.execute(
                "CREATE TEMP TRIGGER ploy_cache_bound AFTER UPDATE ON main.ploy_cache_meta"
                f" WHEN new.entries > {int(self.max_entries)} OR new.bytes > {int(self.max_bytes)}"
                " BEGIN SELECT ploy_cache_full(); END"
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        except BaseException:
            conn.close()
            raise
        held = _Conn(conn)
        self._local.held = held
        with self._conns_lock:
            self._conns.add(held)
        return held

    def _set_up(self, conn: sqlite3.Connection) -> None:
        """Put a new file in WAL mode and create the tables (once per process)."""
        if self._ready:
            return
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        with _transaction(conn):
            conn.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")
        self._ready = True

    def _on_full(self) -> None:
        self._full = True

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction (the write lock taken first); evict after it if full."""
        held = self._conn()
        cur = held.cur
        cur.execute("BEGIN IMMEDIATE")
        with _transaction(held.conn):
            yield cur
            cur.execute("COMMIT")
        self._after_write(held)

    def _after_write(self, held: _Conn) -> None:
        self._writes += 1
        if self._full:
            self._evict(held)
        if not self._writes % 1000:
            self._trim_wal(held)

    def _evict(self, held: _Conn) -> None:
        """Delete the expired entries, then the least recently stored ones,
        until 1% under both bounds."""
        self._full = False
        cur = held.cur
        cur.execute("BEGIN IMMEDIATE")
        with _transaction(held.conn):
            cur.execute("DELETE FROM ploy_cache WHERE expires_at <= ?", (self.clock(),))
            entries_goal = int(self.max_entries * (1 - EVICT_SLACK))
            bytes_goal = int(self.max_bytes * (1 - EVICT_SLACK))
            while True:
                entries, size = cur.execute(
                    "SELECT entries, bytes FROM ploy_cache_meta WHERE id = 1"
                ).fetchone()
                if entries <= entries_goal and size <= bytes_goal:
                    break
                batch = entries - entries_goal if entries > entries_goal else entries // 100 + 1
                cur.execute(
                    "DELETE FROM ploy_cache WHERE rowid IN"
                    " (SELECT rowid FROM ploy_cache ORDER BY stored_at LIMIT ?)",
                    (batch,),
                )
                if not cur.rowcount:
                    break
            cur.execute("COMMIT")
        self._full = False

    def _trim_wal(self, held: _Conn) -> None:
        """Empty the write-ahead log if overlapping readers let it grow past
        :data:`WAL_LIMIT` (best effort: waits for readers at most 0.1 s)."""
        try:
            if os.stat(self.path + "-wal").st_size <= WAL_LIMIT:
                return
        except OSError:
            return
        try:
            held.conn.execute("PRAGMA busy_timeout = 100")
            held.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            pass
        finally:
            held.conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")

    # -- operations on full keys ----------------------------------------------

    def get(self, key: str) -> str | None:
        try:
            cur = self._local.held.cur
        except AttributeError:
            cur = self._conn().cur
        row = cur.execute(GET, (key, self.clock())).fetchone()
        return None if row is None else row[0]

    def set(self, key: str, value: str, ttl: int | None) -> None:
        if len(value) > self._fits and self._too_big(key, value):
            return
        held = self._conn()
        now = self.clock()
        held.cur.execute(SET, (key, value, None if ttl is None else now + ttl, now))
        self._after_write(held)

    def _too_big(self, key: str, value: str) -> bool:
        """Whether the entry exceeds *max_bytes* on its own; if so, delete *key*."""
        size = len(key.encode()) * 2 + len(value.encode()) + ENTRY_OVERHEAD
        if size <= self.max_bytes:
            return False
        self.delete(key)
        return True

    def delete(self, key: str) -> bool:
        held = self._conn()
        rows = held.cur.execute(DELETE, (key,)).fetchall()
        self._after_write(held)
        return bool(rows) and _live(rows[0][0], self.clock())

    def incr(self, key: str, amount: int, ttl: int | None) -> int:
        with self._write() as cur:
            now = self.clock()
            row = cur.execute(
                "SELECT value, expires_at FROM ploy_cache WHERE key = ?", (key,)
            ).fetchone()
            if row is None or not _live(row[1], now):
                new, expires = amount, (None if ttl is None else now + ttl)
            else:
                old, expires = row
                if not is_counter(old) or not INT_MIN <= int(old) + amount <= INT_MAX:
                    raise not_integer(key, old, amount)
                new = int(old) + amount
            cur.execute(SET, (key, str(new), expires, now))
        return new

    def add(self, key: str, value: str, ttl: int | None) -> bool:
        if len(value) > self._fits and self._too_big(key, value):
            return True  # stored, and evicted at once: as memory:// does
        held = self._conn()
        now = self.clock()
        held.cur.execute(ADD, (key, value, None if ttl is None else now + ttl, now))
        added = held.cur.rowcount == 1
        self._after_write(held)
        return added

    def get_many(self, keys: list[str]) -> list[str | None]:
        cur = self._conn().cur
        now = self.clock()
        found: dict[str, str] = {}
        for i in range(0, len(keys), CHUNK):
            chunk = keys[i : i + CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = cur.execute(
                f"SELECT key, value FROM ploy_cache WHERE key IN ({marks}) AND {LIVE}",  # noqa: S608
                (*chunk, now),
            ).fetchall()
            found.update(rows)
        return [found.get(k) for k in keys]

    def set_many(self, items: list[tuple[str, str]], ttl: int | None) -> None:
        if not items:
            return
        big = [k for k, v in items if len(v) > self._fits and self._too_big(k, v)]
        now = self.clock()
        expires = None if ttl is None else now + ttl
        rows = [(k, v, expires, now) for k, v in items if not big or k not in big]
        with self._write() as cur:
            cur.executemany(SET, rows)

    def delete_many(self, keys: list[str]) -> int:
        with self._write() as cur:
            now = self.clock()
            present = 0
            for key in keys:
                rows = cur.execute(DELETE, (key,)).fetchall()
                present += bool(rows) and _live(rows[0][0], now)
        return present

    def has(self, key: str) -> bool:
        return self._conn().cur.execute(HAS, (key, self.clock())).fetchone() is not None

    def ttl(self, key: str) -> float | None:
        now = self.clock()
        row = self._conn().cur.execute(TTL, (key, now)).fetchone()
        if row is None:
            return 0.0
        return None if row[0] is None else max(row[0] - now, 1e-6)

    def touch(self, key: str, ttl: int | None) -> bool:
        held = self._conn()
        now = self.clock()
        held.cur.execute(TOUCH, (None if ttl is None else now + ttl, key, now))
        return held.cur.rowcount == 1

    def lock(self, key: str, token: str, seconds: float) -> bool:
        held = self._conn()
        held.cur.execute(ADD, (key, token, self.clock() + seconds, self.clock()))
        locked = held.cur.rowcount == 1
        self._after_write(held)
        return locked

    def unlock(self, key: str, token: str) -> bool:
        held = self._conn()
        held.cur.execute(UNLOCK, (key, token))
        return held.cur.rowcount == 1

    def count(self, prefix: str) -> int:
        row = self._conn().cur.execute(COUNT, (prefix, successor(prefix), self.clock()))
        return int(row.fetchone()[0])

    def clear(self, prefix: str) -> int:
        held = self._conn()
        rows = held.cur.execute(CLEAR, (prefix, successor(prefix))).fetchall()
        now = self.clock()
        return sum(1 for (expires,) in rows if _live(expires, now))

    def ping(self) -> None:
        self._conn().cur.execute("SELECT entries FROM ploy_cache_meta").fetchall()

    def close(self) -> None:
        with self._conns_lock:
            held = list(self._conns)
            self._conns = weakref.WeakSet()
        self._local = threading.local()
        for h in held:
            h.conn.close()


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """Roll back an explicit transaction the block left open by raising."""
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
