"""``STATE.transact(fn)``: a serializable transaction over one binding's resource.

:func:`transact` runs ``fn(tx)`` through
:meth:`~flask_ploy.state.connections.Lease.transact`, which begins the
transaction, commits it, and runs the function again after a conflict or a
deadlock, until the deadline (``PLOY_STATE_BUSY_TIMEOUT``). Each attempt
gets a new :class:`Transaction`.

A :class:`Transaction` reads from the database, with the dialect's
transaction locks (:attr:`~flask_ploy.state.dialects.Dialect.tx_lock_suffix`),
unless it already knows the key, and keeps its writes until the function
returns; they are then sent in key order just before ``COMMIT``, so two
transactions take their write locks in the same order and never deadlock
each other on them, and nothing is written if the function raises. Before
each statement, :meth:`~flask_ploy.state.connections.Lease.bound_wait`
keeps the database's lock wait within the deadline.

How each database makes it serializable is the dialect's business
(:meth:`~flask_ploy.state.dialects.Dialect.begin_transact`): SQLite takes
its write lock first, PostgreSQL runs it ``SERIALIZABLE``, MariaDB locks
what it reads (see docs/transactions.rst).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from threading import get_ident
from typing import TYPE_CHECKING, Any, TypeVar

from .. import _update
from .._validate import (
    INT_MAX,
    INT_MIN,
    check_amount,
    check_key,
    check_keys,
    check_value,
    is_counter,
    not_integer,
)
from . import reads
from .options import encode_metadata, expiry
from .reads import LIST_MAX, ListResult

#: What a transaction writes for a key: ``(value, metadata JSON, expires_at)``,
#: or ``None`` to delete it.
Write = tuple[str, str | None, float | None] | None

if TYPE_CHECKING:
    from .connections import Lease
    from .store import StateStore

T = TypeVar("T")


class Transaction:
    """The ``tx`` of :meth:`State.transact <flask_ploy.State.transact>`.

    Its methods work as the binding's, on the binding's resource, with the
    same argument checks, inside one transaction: reads see the
    transaction's own writes, and nothing is written unless the function
    returns. It is valid only inside the call, in the thread that made it;
    afterwards every method raises :class:`RuntimeError`.

    Inside the function, a database error (a conflict, say) surfaces as the
    driver's own exception: let it propagate, and ``transact`` retries or
    raises :class:`~flask_ploy.StateUnavailable`. A transaction whose
    statement failed is failed even if the function catches the error.
    """

    __slots__ = (
        "_cur",
        "_dialect",
        "_dirty",
        "_known",
        "_lease",
        "_max_key",
        "_max_value",
        "_meta",
        "_now",
        "_open",
        "_resource",
        "_thread",
        "failure",
        "label",
    )

    def __init__(self, label: str, resource: str, store: StateStore, lease: Lease) -> None:
        #: ``BINDING.transact``, for messages.
        self.label = label
        self._resource = resource
        self._dialect = store.dialect
        self._lease = lease
        self._cur = lease.cur
        self._max_key = store.settings.max_key_bytes
        self._max_value = store.settings.max_value_bytes
        #: What the transaction knows of each key it read or wrote (``None``: absent).
        self._known: dict[str, str | None] = {}
        #: The metadata and expiry of each live key it read.
        self._meta: dict[str, tuple[str | None, float | None]] = {}
        #: Its writes, sent when the function returns (``None``: delete).
        self._dirty: dict[str, Write] = {}
        #: The transaction's clock: a key expired at its start is absent throughout.
        self._now = time.time()
        self._open = True
        self._thread = get_ident()
        #: The exception a statement of this transaction raised, if any.
        self.failure: BaseException | None = None

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<Transaction {self.label} resource={self._resource!r} {state}>"

    @property
    def pending(self) -> bool:
        """Whether the transaction has writes to send."""
        return bool(self._dirty)

    def close(self) -> None:
        """End the transaction's use: every method raises from now on."""
        self._open = False

    # -- statements ------------------------------------------------------------

    def _check(self) -> None:
        if not self._open or get_ident() != self._thread:
            raise RuntimeError(
                f"{self.label}: this tx is usable only inside the function passed to"
                " transact(), in the thread that called it; that call has returned"
                " (or this is another thread)"
            )

    def _rows(self, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        """Run one statement of the transaction; every row it returns."""
        rows: Sequence[Sequence[Any]] = self._execute(sql, params, fetch=True)
        return rows

    def _execute(self, sql: str, params: Any, *, fetch: bool = False) -> Any:
        if self.failure is not None:
            raise self.failure  # the transaction failed: the function caught it
        cur = self._cur
        try:
            self._lease.bound_wait()
            cur.execute(sql, params)
            return cur.fetchall() if fetch else None
        except BaseException as exc:
            self.failure = exc
            raise

    def _enc(self, text: str) -> Any:
        return text.encode() if self._dialect.binary else text

    # -- reads ------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        """The value of *key* in this transaction, or ``None``."""
        self._check()
        check_key(key, self._max_key)
        known = self._known
        if key in known:
            return known[key]
        rows = self._rows(self._dialect.tx_get, (self._resource, self._enc(key)))
        value = None
        if rows and (rows[0][2] is None or rows[0][2] > self._now):
            value = reads.decode(self._dialect, rows[0][0])
            self._meta[key] = (rows[0][1], rows[0][2])
        known[key] = value
        return value

    def get_many(self, keys: Iterable[str]) -> dict[str, str | None]:
        """``{key: value or None}`` for *keys*, in this transaction."""
        self._check()
        keys = check_keys(keys, self._max_key)
        known = self._known
        missing = [k for k in dict.fromkeys(keys) if k not in known]
        if missing:
            found = reads.read_many(
                self._rows, self._dialect, self._resource, missing, self._now,
                lock=True, meta=self._meta,
            )  # fmt: skip
            for k in missing:
                known[k] = found.get(k)
        return {k: known[k] for k in keys}

    def list(
        self, prefix: str = "", *, limit: int = LIST_MAX, cursor: str | None = None
    ) -> ListResult:
        """Keys starting with *prefix* in this transaction, a page at a time,
        as :meth:`State.list <flask_ploy.State.list>`."""
        self._check()
        reads.check_list(prefix, limit, cursor)
        after = cursor or None
        # Read past the keys this transaction deleted, then merge its writes.
        gone = {k for k, v in self._dirty.items() if v is None and reads.in_range(k, prefix, after)}
        rows = reads.scan(
            self._rows,
            self._dialect,
            self._resource,
            prefix,
            after,
            limit + 1 + len(gone),
            values=False,
            now=self._now,
            lock=True,
        )
        found = {k for k, _ in rows} - gone
        found.update(
            k for k, v in self._dirty.items() if v is not None and reads.in_range(k, prefix, after)
        )
        page = sorted(found)[: limit + 1]  # str order is UTF-8 byte order
        keys = page[:limit]
        return ListResult(keys, keys[-1] if len(page) > limit else None)

    # -- writes -------------------------------------------------------------------

    def _put(self, key: str, value: str | None, keep: bool = False) -> None:
        """Write *value* (``None``: delete); *keep*: with the key's metadata and
        expiry (``incr``, ``update``), else none."""
        if value is None:
            self._known[key] = self._dirty[key] = None
            self._meta.pop(key, None)
            return
        if not value.isascii():
            value.encode()  # a lone surrogate raises here, at the call, not at commit
        meta, exp = self._meta.get(key, (None, None)) if keep else (None, None)
        self._known[key] = value
        self._dirty[key] = (value, meta, exp)
        self._meta[key] = (meta, exp)

    def set(
        self,
        key: str,
        value: str,
        *,
        metadata: dict[str, Any] | None = None,
        ttl: Any = None,
        expires_at: Any = None,
    ) -> None:
        """Store *value* under *key* when the transaction commits, with
        *metadata*, *ttl* and *expires_at* as :meth:`State.set
        <flask_ploy.State.set>` (a *ttl* counts from this call)."""
        self._check()
        check_key(key, self._max_key)
        check_value(value, self._max_value)
        meta = encode_metadata(key, metadata)
        exp = expiry(key, ttl, expires_at)
        self._put(key, value)
        if meta is not None or exp is not None:
            self._dirty[key] = (value, meta, exp)
            self._meta[key] = (meta, exp)

    #: Ploy's name of :meth:`set`.
    put = set

    def delete(self, key: str) -> bool:
        """Remove *key*; return ``True`` if it had a value in this transaction."""
        present = self.get(key) is not None
        if present:
            self._put(key, None)
        return present

    def incr(self, key: str, amount: int = 1) -> int:
        """Add *amount* to the integer at *key* (a missing key counts from 0).

        :raises ValueError: The value is not a decimal integer, or the result
            leaves the 64-bit range. Nothing changes.
        """
        self._check()
        check_key(key, self._max_key)
        amount = check_amount(amount)
        old = self.get(key)
        if old is None:
            new = amount
        elif not is_counter(old) or not INT_MIN <= int(old) + amount <= INT_MAX:
            raise not_integer(key, old, amount)
        else:
            new = int(old) + amount
        self._put(key, str(new), keep=True)
        return new

    def update(self, key: str, ops: Mapping[str, Mapping[str, Any]]) -> str | None:
        """Apply Ploy's update operators to the JSON object at *key*, as
        :meth:`State.update <flask_ploy.State.update>`; ``None`` if missing.

        :raises TypeError: *ops* is malformed.
        :raises ValueError: As :meth:`State.update <flask_ploy.State.update>`.
            Nothing changes.
        """
        self._check()
        check_key(key, self._max_key)
        steps = _update.check_ops(ops)
        old = self.get(key)
        if old is None:
            return None
        new = _update.encode_object(_update.apply_ops(_update.decode_object(old, key), steps))
        check_value(new, self._max_value)
        self._put(key, new, keep=True)
        return new

    def flush(self) -> None:
        """Send the writes: a statement per key, in key order.

        One statement each, not a batch: a statement may wait for a lock, and
        :meth:`~flask_ploy.state.connections.Lease.bound_wait` must cut each
        wait to what is left of the deadline.
        """
        dialect, resource, enc = self._dialect, self._resource, self._enc
        for key, write in sorted(self._dirty.items()):  # str order is UTF-8 byte order
            if write is None:
                self._execute(dialect.delete, (resource, enc(key)))
            elif write[1] is None and write[2] is None:
                self._execute(dialect.set, (resource, enc(key), enc(write[0])))
            else:
                self._execute(dialect.put, (resource, enc(key), enc(write[0]), *write[1:]))


class _Raised(Exception):
    """A driver exception the function raised itself (not a statement of its
    transaction), carried past :meth:`Lease.transact`, which would take it for
    the database's failure."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc


def transact(
    label: str, resource: str, store: StateStore, lease: Lease, fn: Callable[[Transaction], T]
) -> T:
    """Run ``fn(tx)`` in a serializable transaction on *lease*; see
    :meth:`State.transact <flask_ploy.State.transact>`."""
    if not callable(fn):
        raise TypeError(
            f"transact() needs a function of one argument (tx), not {type(fn).__name__}"
        )
    attempt: builtins.list[Transaction] = []

    def body(cur: Any) -> T:
        tx = Transaction(label, resource, store, lease)
        attempt[:] = [tx]
        try:
            try:
                result = fn(tx)
            except BaseException as exc:
                if tx.failure is None:
                    if isinstance(exc, store.dbapi_error):
                        raise _Raised(exc) from None
                    raise
            if tx.failure is not None:
                # A statement failed (the function may have caught it, or
                # raised something else): the transaction failed, and that
                # decides between a retry and StateUnavailable.
                raise tx.failure
            tx.flush()
            return result
        finally:
            tx.close()

    try:
        return lease.transact(label, body, lambda: attempt[0].pending)
    except _Raised as carrier:
        exc = carrier.exc
    raise exc
