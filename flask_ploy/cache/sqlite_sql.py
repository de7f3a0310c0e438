"""What the SQLite cache says to SQLite, and what SQLite's errors mean:
the schema, the statements, the URL's options, :func:`classify`."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from .._urls import redact_url
from ..errors import PloyConfigError
from .base import Fault

#: Bytes an entry costs in the file besides its key and value: the row and
#: index headers, ``expires_at``, ``stored_at`` and ``size``. The key counts
#: twice (the table and its primary-key index).
ENTRY_OVERHEAD = 48

#: Default seconds an operation waits for another connection's write lock.
DEFAULT_TIMEOUT = 0.5

#: Seconds a process's first connection waits to set a new file up (WAL
#: mode, the schema) while other processes do the same.
SETUP_TIMEOUT = 5.0

#: Bytes the write-ahead log may reach before a write empties it.
WAL_LIMIT = 64 * 1024 * 1024

#: Eviction goes this fraction below a bound, so it runs once per many writes.
EVICT_SLACK = 0.01

#: Keys per ``IN (...)`` list of ``get_many``.
CHUNK = 500

SCHEMA = """
CREATE TABLE IF NOT EXISTS ploy_cache (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,
    expires_at REAL,
    stored_at REAL NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ploy_cache_stored ON ploy_cache (stored_at);
CREATE INDEX IF NOT EXISTS ploy_cache_expires ON ploy_cache (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS ploy_cache_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    entries INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO ploy_cache_meta VALUES (1, 0, 0);
CREATE TRIGGER IF NOT EXISTS ploy_cache_ins AFTER INSERT ON ploy_cache BEGIN
    UPDATE ploy_cache_meta SET entries = entries + 1, bytes = bytes + new.size WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS ploy_cache_del AFTER DELETE ON ploy_cache BEGIN
    UPDATE ploy_cache_meta SET entries = entries - 1, bytes = bytes - old.size WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS ploy_cache_upd AFTER UPDATE OF size ON ploy_cache BEGIN
    UPDATE ploy_cache_meta SET bytes = bytes + new.size - old.size WHERE id = 1;
END;
"""

# SQL below is assembled from constants and placeholders, never from input.
LIVE = "(expires_at IS NULL OR expires_at > ?)"
GET = f"SELECT value FROM ploy_cache WHERE key = ? AND {LIVE}"  # noqa: S608
# ?1 key, ?2 value, ?3 expires_at, ?4 now
SIZE = f"length(CAST(?1 AS BLOB)) * 2 + length(CAST(?2 AS BLOB)) + {ENTRY_OVERHEAD}"
INSERT = (
    "INSERT INTO ploy_cache (key, value, expires_at, stored_at, size)"  # noqa: S608
    f" VALUES (?1, ?2, ?3, ?4, {SIZE}) ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
    " expires_at = excluded.expires_at, stored_at = excluded.stored_at, size = excluded.size"
)
SET = INSERT
ADD = f"{INSERT} WHERE expires_at IS NOT NULL AND expires_at <= ?4"
DELETE = "DELETE FROM ploy_cache WHERE key = ? RETURNING expires_at"
HAS = f"SELECT 1 FROM ploy_cache WHERE key = ? AND {LIVE}"  # noqa: S608
TTL = f"SELECT expires_at FROM ploy_cache WHERE key = ? AND {LIVE}"  # noqa: S608
TOUCH = f"UPDATE ploy_cache SET expires_at = ? WHERE key = ? AND {LIVE}"  # noqa: S608
UNLOCK = "DELETE FROM ploy_cache WHERE key = ? AND value = ?"
COUNT = f"SELECT count(*) FROM ploy_cache WHERE key >= ? AND key < ? AND {LIVE}"  # noqa: S608
CLEAR = "DELETE FROM ploy_cache WHERE key >= ? AND key < ? RETURNING expires_at"


def parse_sqlite_url(url: str) -> tuple[str, dict[str, str]]:
    """The file path and options of ``sqlite:///path?timeout=0.5&synchronous=off``.

    Three slashes and a relative path (relative to the working directory
    here; the app resolves it in its instance folder first), four for an
    absolute one, as SQLAlchemy writes them.

    :raises PloyConfigError: No file (``sqlite://``, ``:memory:``), a host,
        or an unknown option.
    """
    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    shown = redact_url(url)
    if parts.netloc or not path or path == ":memory:" or path.startswith("file:"):
        raise PloyConfigError(
            f"cache URL {shown}: expected sqlite:///relative/path.sqlite3 or"
            " sqlite:////absolute/path.sqlite3, a file the processes share"
            " (a per-process cache is memory://)"
        )
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - {"timeout", "synchronous"})
    if unknown:
        raise PloyConfigError(
            f"cache URL {shown}: unknown option {unknown[0]!r}; the options are"
            " timeout (seconds) and synchronous (off, normal or full)"
        )
    return path, options


def successor(prefix: str) -> str:
    """The least string greater than every string starting with *prefix*."""
    if not prefix:
        return "\U0010ffff" * 2
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return prefix + "\U0010ffff"
    return prefix[:-1] + chr(last + 1 if last + 1 != 0xD800 else 0xE000)


#: SQLite's primary result codes that mean another connection holds a lock.
BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
#: Codes that mean the file cannot be used at all (opens the breaker).
DOWN_CODES = (10, 11, 14, 26)  # SQLITE_IOERR, CORRUPT, CANTOPEN, NOTADB


def classify(exc: BaseException) -> Fault:
    """What a ``sqlite3`` exception means (see :data:`~flask_ploy.cache.base.Fault`).

    A lock held by another connection past the timeout is ``"busy"``; a
    file that cannot be opened or read is ``"down"``; anything else (a full
    disk, a read-only file) is ``"error"``: reads may still work.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            return "busy"
        if "unable to open" in text or "disk i/o" in text or "malformed" in text:
            return "down"
        return "error"
    if code & 0xFF in BUSY_CODES:
        return "busy"
    if code & 0xFF in DOWN_CODES:
        return "down"
    return "error"
