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
from typing import Any, cast

from .dialects import Dialect

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
    rows: Rows, dialect: Dialect, resource: str, keys: Sequence[str], *, lock: bool = False
) -> dict[str, str]:
    """``{key: value}`` of those of *keys* (distinct) that are set.

    :param lock: Inside a transaction: the dialect's point-read locks.
    """
    found: dict[str, str] = {}
    select = dialect.tx_select_many if lock else dialect.select_many
    for i in range(0, len(keys), CHUNK):
        chunk = keys[i : i + CHUNK]
        for k, v in rows(select(len(chunk)), (resource, *(encode(dialect, k) for k in chunk))):
            found[decode(dialect, k)] = decode(dialect, v)
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
    lock: bool = False,
) -> list[tuple[str, str | None]]:
    """Up to *limit* ``(key, value)`` rows with *prefix*, after *after*, in key
    order (the value ``None`` unless *values*).

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
    got = rows(sql, params if upper is None else (*params, upper))
    if not binary:  # SQLite returns str already: no per-row work
        return cast("list[tuple[str, str | None]]", got) if values else [(k, None) for (k,) in got]
    if values:
        return [(bytes(k).decode(), bytes(v).decode()) for k, v in got]
    return [(bytes(k).decode(), None) for (k,) in got]


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
