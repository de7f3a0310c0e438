"""The multi-key operations of :class:`~flask_ploy.State`: :class:`BulkOps`.

``get_many``, ``set_many``, ``delete_many``, the listings (``list``,
``list_entries``, ``items``, ``entries``), ``count``, ``load``, ``clear``
and ``purge_expired``. :class:`~flask_ploy.State` inherits them; they run
through its ``_run`` like every operation. Expired keys are absent from
every read (see :mod:`~flask_ploy.state.options`).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .._validate import check_key, check_keys, check_mapping, check_value
from ..errors import StateUnavailable
from . import reads
from .options import check_entry
from .reads import CHUNK, LIST_MAX, Entry, EntryList, KeyInfo, ListResult

if TYPE_CHECKING:
    from .store import StateStore

T = TypeVar("T")

#: Rows one purge statement deletes at most.
PURGE_BATCH = 500

#: What :meth:`BulkOps.load` takes: ``(key, value)``, or an :class:`Entry`-like
#: ``(key, value, metadata, expiration)``.
LoadItem = tuple[str, str] | tuple[str, str, Mapping[str, Any] | None, float | None]


class BulkOps:
    """The multi-key operations of a State binding (a base class of
    :class:`~flask_ploy.State`, which provides the attributes below)."""

    __slots__ = ()

    if TYPE_CHECKING:
        name: str
        resource: str
        _store: StateStore
        _max_key: int
        _max_value: int

        def _run(
            self,
            op: str,
            body: Callable[[Any], T],
            *,
            write: bool = True,
            tx: bool = False,
            idempotent: bool = False,
        ) -> T: ...

        def _key(self, key: str) -> Any: ...

    def get_many(self, keys: Iterable[str]) -> dict[str, str | None]:
        """Return ``{key: value or None}`` for *keys*, read in one transaction.

        Ploy's ``get([keys])`` (a ``Map``); ``get`` of a list calls this.
        """
        keys = check_keys(keys, self._max_key)
        if not keys:
            return {}
        unique = list(dict.fromkeys(keys))

        def body(cur: Any) -> dict[str, str]:
            dialect, now = self._store.dialect, time.time()
            return reads.read_many(reads.rows_of(cur), dialect, self.resource, unique, now)

        found = self._run("get_many", body, write=False, tx=len(unique) > CHUNK)
        return {k: found.get(k) for k in keys}

    def set_many(self, mapping: Mapping[str, str]) -> None:
        """Store every pair of *mapping* in one transaction: all or nothing.

        As :meth:`set` without options: no metadata, no expiry.
        """
        items = check_mapping(mapping, self._max_key, self._max_value)
        if not items:
            return

        def body(cur: Any) -> None:
            rows = [(self.resource, self._key(k), self._key(v)) for k, v in items]
            cur.executemany(self._store.dialect.set, rows)

        self._run("set_many", body, tx=True, idempotent=True)

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove *keys* in one transaction; return how many were present
        (expired ones included)."""
        keys = check_keys(keys, self._max_key)
        unique = list(dict.fromkeys(keys))
        if not unique:
            return 0

        def body(cur: Any) -> int:
            n = 0
            for i in range(0, len(unique), CHUNK):
                chunk = unique[i : i + CHUNK]
                sql = self._store.dialect.delete_many(len(chunk))
                cur.execute(sql, (self.resource, *(self._key(k) for k in chunk)))
                n += cur.rowcount
            return n

        return self._run("delete_many", body, tx=True)

    # -- listing ---------------------------------------------------------------------

    def list(
        self, prefix: str = "", *, limit: int = LIST_MAX, cursor: str | None = None
    ) -> ListResult:
        """List keys starting with *prefix*, in ascending bytewise order.

        ``%`` and ``_`` in *prefix* match themselves. Pass the returned
        ``cursor`` back to get the next page; each key is seen exactly once.
        Only the names: :meth:`list_entries` adds each key's metadata and
        expiry, as Ploy's ``list`` does.

        :param limit: Keys per page, 1 to 1000.
        :param cursor: The ``cursor`` of the previous page, or ``None``.
        """
        reads.check_list(prefix, limit, cursor)
        rows = self._scan(prefix, cursor or None, limit + 1, values=False)
        keys = [k for k, _ in rows[:limit]]
        return ListResult(keys, keys[-1] if len(rows) > limit else None)

    def list_entries(
        self, prefix: str = "", *, limit: int = LIST_MAX, cursor: str | None = None
    ) -> EntryList:
        """As :meth:`list`, with each key's metadata and expiry: Ploy's ``list``.

        Returns an :class:`~flask_ploy.state.reads.EntryList` of
        :class:`~flask_ploy.state.reads.KeyInfo` ``(key, metadata, expiration)``,
        ``expiration`` in epoch seconds or ``None``.
        """
        reads.check_list(prefix, limit, cursor)
        rows = self._scan_entries(prefix, cursor or None, limit + 1, values=False)
        page = [KeyInfo(e.key, e.metadata, e.expiration) for e in rows[:limit]]
        return EntryList(page, page[-1].key if len(rows) > limit else None)

    def _scan(
        self, prefix: str, after: str | None, limit: int, *, values: bool
    ) -> builtins.list[tuple[str, str | None]]:
        """Up to *limit* live ``(key, value)`` rows with *prefix*, after *after*."""

        def body(cur: Any) -> builtins.list[tuple[str, str | None]]:
            dialect, now = self._store.dialect, time.time()
            return reads.scan(
                reads.rows_of(cur), dialect, self.resource, prefix, after, limit,
                values=values, now=now,
            )  # fmt: skip

        return self._run("list", body, write=False)

    def _scan_entries(
        self, prefix: str, after: str | None, limit: int, *, values: bool
    ) -> builtins.list[Entry]:
        def body(cur: Any) -> builtins.list[Entry]:
            dialect, now = self._store.dialect, time.time()
            return reads.scan_entries(
                reads.rows_of(cur), dialect, self.resource, prefix, after, limit, now,
                values=values,
            )  # fmt: skip

        return self._run("list", body, write=False)

    def items(self, prefix: str = "", *, page_size: int = LIST_MAX) -> Iterator[tuple[str, str]]:
        """Yield every live ``(key, value)`` with *prefix* in key order, a page at a time.

        Memory stays flat however many keys there are. Pages are read one
        after another, not in one snapshot: a key written meanwhile may or
        may not appear.
        """
        after: str | None = None
        while True:
            rows = self._scan(prefix, after, page_size, values=True)
            yield from rows  # type: ignore[misc]
            if len(rows) < page_size:
                return
            after = rows[-1][0]

    def entries(self, prefix: str = "", *, page_size: int = LIST_MAX) -> Iterator[Entry]:
        """As :meth:`items`, yielding :class:`~flask_ploy.state.reads.Entry`
        ``(key, value, metadata, expiration)``: what a dump holds."""
        after: str | None = None
        while True:
            rows = self._scan_entries(prefix, after, page_size, values=True)
            yield from rows
            if len(rows) < page_size:
                return
            after = rows[-1].key

    def count(self) -> int:
        """The number of live keys in this binding's resource."""

        def body(cur: Any) -> int:
            cur.execute(self._store.dialect.count, (self.resource, time.time()))
            return int(cur.fetchone()[0])

        return self._run("count", body, write=False)

    # -- loading, clearing, purging ----------------------------------------------------

    def load(self, pairs: Iterable[LoadItem], *, replace: bool = False, batch: int = 1000) -> int:
        """Write *pairs* in one transaction; return how many.

        Each item is ``(key, value)`` or ``(key, value, metadata, expiration)``
        (an :class:`~flask_ploy.state.reads.Entry`, a dump record);
        *expiration* is epoch seconds or ``None``. An entry that has already
        expired is written too, so it replaces a key of that name, and is
        absent from every read as it was where it came from; it is not
        counted. With *replace*, the resource is
        emptied first, in the same transaction. Any bad item (raised by the
        iterable or by the checks) rolls everything back. A list is retried
        if the database reports a lock conflict; a one-shot iterator (a
        generator, a file reader) raises :class:`~flask_ploy.StateUnavailable`
        instead.
        """
        one_shot = isinstance(pairs, Iterator)  # a generator, say: cannot be read twice
        runs = 0

        def body(cur: Any) -> int:
            nonlocal runs
            runs += 1
            if runs > 1 and one_shot:
                # The database asked for a retry after part of the input was
                # consumed; it was rolled back, and cannot be read again here.
                raise StateUnavailable(
                    f"state database {self._store.display_url}: {self.name}.load hit a lock"
                    " conflict and was rolled back; nothing was written. Run it again."
                )
            dialect, now, resource, enc = self._store.dialect, time.time(), self.resource, self._key
            if replace:
                cur.execute(dialect.clear, (resource,))
            n = 0
            rows: builtins.list[tuple[Any, ...]] = []
            for item in pairs:
                key, value = item[0], item[1]
                check_key(key, self._max_key)
                check_value(value, self._max_value)
                meta, exp = check_entry(key, *item[2:]) if len(item) > 2 else (None, None)
                if exp is not None and exp <= now:
                    n -= 1  # written (it replaces the key), not counted
                rows.append((resource, enc(key), enc(value), meta, exp))
                if len(rows) >= batch:
                    cur.executemany(dialect.put, rows)
                    n += len(rows)
                    rows = []
            if rows:
                cur.executemany(dialect.put, rows)
                n += len(rows)
            return n

        return self._run("load", body, tx=True, idempotent=not replace and not one_shot)

    def clear(self) -> int:
        """Delete every key of this binding's resource; return how many
        (expired ones included)."""

        def body(cur: Any) -> int:
            cur.execute(self._store.dialect.clear, (self.resource,))
            return int(cur.rowcount)

        return self._run("clear", body, tx=True)

    def purge_expired(self, *, limit: int | None = None) -> int:
        """Delete the expired rows of this binding's resource; return how many.

        Expired keys are already absent from every read; this frees their
        space. Writes with an expiry purge a bounded batch now and then by
        themselves; call this (or ``flask ploy state purge``) from a cron job
        after many keys expired. Runs :data:`PURGE_BATCH` rows per statement,
        each committed on its own, so it never holds locks for long.

        :param limit: Stop after about this many rows (``None``: all).
        """
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError(f"limit must be a positive int or None, got {limit!r}")
        total = 0
        while limit is None or total < limit:
            size = PURGE_BATCH if limit is None else min(PURGE_BATCH, limit - total)
            n = self._purge(size)
            total += n
            if n < size:
                break
        return total

    def _purge(self, size: int) -> int:
        def body(cur: Any) -> int:
            return self._store.dialect.purge(cur, self.resource, time.time(), size)

        return self._run("purge_expired", body, idempotent=True)
