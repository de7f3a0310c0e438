"""The multi-row reads a State binding and its transactions share.

``get_many`` reads keys :data:`CHUNK` at a time; ``list`` and ``items`` scan
a key range in bytewise order. Both take their SQL from the store's
:class:`~flask_ploy.state.dialects.Dialect`, plain in autocommit mode or
with the dialect's lock clause inside :meth:`State.transact
<flask_ploy.State.transact>`, and run it through a ``rows(sql, params)``
callable that returns every row, so the caller decides how a statement runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from .dialects import Dialect
from .options import decode_metadata

#: Rows per statement for bulk reads and deletes.
CHUNK = 500
#: The most keys one ``list`` call returns.
LIST_MAX = 1000

#: Runs one statement and returns all its rows.
Rows = Callable[[str, Sequence[Any]], Sequence[Sequence[Any]]]


@dataclass(frozen=True)
class ListResult:
    """One page of :meth:`State.list <flask_ploy.State.list>`.

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


class ValueWithMetadata(NamedTuple):
    """What :meth:`State.get_with_metadata <flask_ploy.State.get_with_metadata>`
    returns: Ploy's ``{value, metadata}``.

    :ivar value: The value, or ``None`` if the key is not set (or expired).
    :ivar metadata: The key's metadata (a dict), or ``None``.
    """

    value: str | None
    metadata: dict[str, Any] | None


class KeyInfo(NamedTuple):
    """One key of :meth:`State.list_entries <flask_ploy.State.list_entries>`:
    Ploy's ``{name, metadata, expiration}``.

    :ivar key: The key (Ploy's ``name``).
    :ivar metadata: Its metadata (a dict), or ``None``.
    :ivar expiration: When it expires, in epoch seconds (a float), or ``None``.
    """

    key: str
    metadata: dict[str, Any] | None
    expiration: float | None


class Entry(NamedTuple):
    """One entry of :meth:`State.entries <flask_ploy.State.entries>` (and of a dump).

    :ivar key: The key.
    :ivar value: Its value.
    :ivar metadata: Its metadata (a dict), or ``None``.
    :ivar expiration: When it expires, in epoch seconds, or ``None`` (never).
    """

    key: str
    value: str
    metadata: dict[str, Any] | None
    expiration: float | None


@dataclass(frozen=True)
class EntryList:
    """One page of :meth:`State.list_entries <flask_ploy.State.list_entries>`:
    Ploy's list result.

    :ivar entries: The keys of this page with their metadata and expiry, in
        ascending (bytewise) order.
    :ivar cursor: Pass it back as ``cursor=`` for the next page; ``None``
        when this is the last page.
    """

    entries: list[KeyInfo]
    cursor: str | None

    @property
    def keys(self) -> list[str]:
        """The keys of this page alone."""
        return [e.key for e in self.entries]

    @property
    def list_complete(self) -> bool:
        """``True`` when there are no more pages."""
        return self.cursor is None


def check_list(prefix: Any, limit: Any, cursor: Any) -> None:
    """The argument checks of ``list``.

    :raises TypeError: *prefix* is not a ``str``, *limit* not an ``int``, or
        *cursor* neither ``str`` nor ``None``.
    :raises ValueError: *limit* is not between 1 and :data:`LIST_MAX`.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
    if type(limit) is not int or isinstance(limit, bool):
        raise TypeError(f"limit must be int, not {type(limit).__name__}")
    if not 1 <= limit <= LIST_MAX:
        raise ValueError(f"limit must be between 1 and {LIST_MAX}, got {limit}")
    if cursor is not None and not isinstance(cursor, str):
        raise TypeError(f"cursor must be str or None, not {type(cursor).__name__}")


def encode(dialect: Dialect, text: str) -> Any:
    """A key or value as *dialect*'s driver takes it."""
    return text.encode() if dialect.binary else text


def decode(dialect: Dialect, raw: Any) -> str:
    """A key or value as *dialect*'s driver returns it, as ``str``."""
    if not dialect.binary:
        return raw  # type: ignore[no-any-return]
    return raw.decode() if type(raw) is bytes else bytes(raw).decode()


def read_many(
    rows: Rows,
    dialect: Dialect,
    resource: str,
    keys: Sequence[str],
    now: float,
    *,
    lock: bool = False,
    meta: dict[str, tuple[str | None, float | None]] | None = None,
) -> dict[str, str]:
    """``{key: value}`` of those of *keys* (distinct) that are set and live at *now*.

    :param lock: Inside a transaction: the dialect's point-read locks.
    :param meta: Filled with ``{key: (metadata JSON, expires_at)}`` of the
        keys found, if given.
    """
    found: dict[str, str] = {}
    select = dialect.tx_select_many if lock else dialect.select_many
    for i in range(0, len(keys), CHUNK):
        chunk = keys[i : i + CHUNK]
        got = rows(select(len(chunk)), (resource, *(encode(dialect, k) for k in chunk)))
        for k, v, m, x in got:
            if x is None or x > now:
                key = decode(dialect, k)
                found[key] = decode(dialect, v)
                if meta is not None:
                    meta[key] = (m, x)
    return found


def scan(
    rows: Rows,
    dialect: Dialect,
    resource: str,
    prefix: str,
    after: str | None,
    limit: int,
    *,
    values: bool,
    now: float,
    lock: bool = False,
) -> list[tuple[str, str | None]]:
    """Up to *limit* ``(key, value)`` rows with *prefix*, after *after*, in key
    order (the value ``None`` unless *values*), live at *now*.

    :param lock: Inside a transaction: the dialect's range-read locks.
    """
    exclusive = after is not None and after >= prefix
    lower = after if exclusive else prefix
    binary = dialect.binary
    upper = prefix_end(prefix, binary)
    sql = dialect.scan(after=exclusive, upper=upper is not None, values=values, limit=limit)
    if lock:
        sql += dialect.tx_share_suffix
    params: tuple[Any, ...] = (resource, encode(dialect, lower))  # type: ignore[arg-type]
    got = rows(sql, (*params, now) if upper is None else (*params, upper, now))
    if not binary:  # SQLite returns str already: no per-row work
        return cast("list[tuple[str, str | None]]", got) if values else [(k, None) for (k,) in got]
    if values:
        return [(bytes(k).decode(), bytes(v).decode()) for k, v in got]
    return [(bytes(k).decode(), None) for (k,) in got]


def scan_entries(
    rows: Rows,
    dialect: Dialect,
    resource: str,
    prefix: str,
    after: str | None,
    limit: int,
    now: float,
    *,
    values: bool,
) -> list[Entry]:
    """As :func:`scan`, with each row's metadata and expiry: :class:`Entry`
    rows (the value ``""`` unless *values*)."""
    exclusive = after is not None and after >= prefix
    lower = after if exclusive else prefix
    upper = prefix_end(prefix, dialect.binary)
    sql = dialect.scan(
        after=exclusive, upper=upper is not None, values=values, limit=limit, meta=True
    )
    params: tuple[Any, ...] = (resource, encode(dialect, lower))  # type: ignore[arg-type]
    got = rows(sql, (*params, now) if upper is None else (*params, upper, now))
    if values:
        return [
            Entry(decode(dialect, k), decode(dialect, v), decode_metadata(m), x)
            for k, v, m, x in got
        ]
    return [Entry(decode(dialect, k), "", decode_metadata(m), x) for k, m, x in got]


def in_range(key: str, prefix: str, after: str | None) -> bool:
    """Whether :func:`scan` with *prefix* and *after* would return *key*."""
    if not key.startswith(prefix):
        return False
    return after is None or after < prefix or key > after


def prefix_end(prefix: str, binary: bool) -> Any:
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


def rows_of(cur: Any) -> Rows:
    """The :data:`Rows` of a DBAPI cursor: execute, then fetch every row."""

    def rows(sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        cur.execute(sql, params)
        return cur.fetchall()  # type: ignore[no-any-return]

    return rows
