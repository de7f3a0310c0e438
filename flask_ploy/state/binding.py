"""The State binding: ``g.env.STATE``.

A :class:`State` checks arguments, encodes keys and values for its store's
:class:`~flask_ploy.state.dialects.Dialect`, and runs each operation on the
calling thread's connection through
:meth:`~flask_ploy.state.connections.Lease.run`. ``get`` and ``set`` run
their one statement directly on a cached cursor when called from the thread
that first used the binding, and hand any failure to
:meth:`~flask_ploy.state.connections.Lease.recover`. ``transact`` runs in
:mod:`~flask_ploy.state.transaction`; the multi-row reads are in
:mod:`~flask_ploy.state.reads`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from threading import get_ident
from time import time
from typing import Any, TypeVar, overload

from .. import _update
from .._validate import check_amount, check_key, check_value, is_counter, not_integer
from . import transaction
from .bulk import PURGE_BATCH, BulkOps
from .connections import BadValue, Connections, after_fork
from .options import decode_metadata, encode_metadata, expiry
from .reads import ValueWithMetadata
from .store import StateStore
from .transaction import Transaction

T = TypeVar("T")

#: Every live binding, to forget its cursor in a forked child.
_bindings: weakref.WeakSet[State] = weakref.WeakSet()


class State(BulkOps):
    """The State binding: ``g.env.STATE``. Durable strings: no expiry unless asked.

    Keys are non-empty ``str`` of at most ``PLOY_MAX_KEY_BYTES`` (512)
    bytes in UTF-8; values are ``str`` of at most ``PLOY_MAX_VALUE_BYTES``.
    Every write is committed when the method returns. Bad arguments raise
    :class:`TypeError` or :class:`ValueError` and write nothing. A database
    failure raises :class:`~flask_ploy.StateUnavailable` and writes nothing,
    except :class:`~flask_ploy.StateInDoubt`: the connection broke after a
    write was sent, so it may have been applied. An operation waits at most
    ``PLOY_STATE_BUSY_TIMEOUT`` seconds for locks.

    A key may carry metadata (a small JSON object) and an expiry, given to
    :meth:`set` (Ploy's ``put`` options). An expired key is absent from
    every read and every operation that reads (``add``, ``replace``,
    ``incr``, ``update``, ``transact``); its row is purged later.

    One object exists per binding and app context. Each thread that uses it
    borrows a connection of its own on its first operation; all go back to
    the pool when the context ends.
    """

    __slots__ = (
        "__weakref__",
        "_binary",
        "_conns",
        "_cur",
        "_max_key",
        "_max_value",
        "_short_key",
        "_sql_get",
        "_sql_set",
        "_store",
        "_thread",
        "name",
        "resource",
    )

    def __init__(
        self, name: str, resource: str, store: StateStore, connections: Connections
    ) -> None:
        #: The binding name from ``ploy.yaml`` (``STATE``).
        self.name = name
        #: The resource name from ``ploy.yaml`` (``default``).
        self.resource = resource
        self._store = store
        self._conns = connections
        settings = store.settings
        self._max_key = settings.max_key_bytes
        self._short_key = settings.max_key_bytes // 4  # up to this many chars, always fits
        self._max_value = settings.max_value_bytes
        # The fast path of get/set: the cursor of the thread that first used
        # the binding (_thread), and the dialect's two statements.
        self._thread = 0
        self._cur: Any = None
        self._binary = store.dialect_class.binary
        self._sql_get = self._sql_set = ""
        _bindings.add(self)

    def __repr__(self) -> str:
        return (
            f"<State {self.name} resource={self.resource!r} database={self._store.display_url!r}>"
        )

    # -- running operations --------------------------------------------------

    def _run(
        self,
        op: str,
        body: Callable[[Any], T],
        *,
        write: bool = True,
        tx: bool = False,
        idempotent: bool = False,
    ) -> T:
        """Run ``body(cursor)`` on this thread's connection (see
        :meth:`~flask_ploy.state.connections.Lease.run`): the context's, or,
        in another thread, one borrowed for this operation."""
        conns = self._conns
        label = f"{self.name}.{op}"
        if get_ident() != conns.owner:
            return conns.run_once(
                self._store, label, body, write=write, tx=tx, idempotent=idempotent
            )
        lease = conns.lease(self._store)
        try:
            return lease.run(label, body, write=write, tx=tx, idempotent=idempotent)
        finally:
            self._remember(lease.cur)

    def _recover(self, exc: BaseException, op: str, body: Callable[[Any], T], write: bool) -> T:
        """The fast path's statement failed with *exc*."""
        lease = self._conns.lease(self._store)
        try:
            if self._cur is not lease.cur:
                # The cursor was closed under us: another binding of this
                # context dropped the connection, or the context ended.
                return lease.run(f"{self.name}.{op}", body, write=write, idempotent=True)
            return lease.recover(exc, f"{self.name}.{op}", body, write=write, idempotent=True)
        finally:
            self._remember(lease.cur)

    def _remember(self, cur: Any) -> None:
        """Cache the context thread's cursor *cur* (or ``None``) for the fast path."""
        if cur is None:
            self._thread = 0
        else:
            dialect = self._store.dialect
            # Text (SQLite): the database drops an expired row; bytes: we do.
            get = dialect.get if self._binary else dialect.get_live
            assert get is not None, f"{type(dialect).__name__} must set get_live"
            self._sql_get, self._sql_set = get, dialect.set
            self._thread = self._conns.owner
        self._cur = cur

    def _forget(self) -> None:
        """Drop the fast path's cursor (a forked child: it is the parent's)."""
        self._thread = 0
        self._cur = None

    def connection(self) -> Any:
        """The DBAPI connection this thread uses for this binding, borrowed if needed.

        For diagnostics and tests (``SELECT pg_backend_pid()``, say). It is in
        autocommit mode and shared by the bindings of this context on the same
        database; a transaction left open on it is rolled back when the
        context ends.

        :raises StateUnavailable: No connection could be had.
        :raises RuntimeError: Called from a thread other than the app
            context's own (it borrows for one operation at a time).
        """
        lease = self._conns.lease(self._store)
        lease.cursor()
        self._remember(lease.cur)
        return lease.conn

    def _key(self, key: str) -> Any:
        """*key* (or a value) as the driver takes it; in operation bodies."""
        return key.encode() if self._binary else key

    def _str(self, raw: Any) -> str:
        """A key or value as the driver returns it, as ``str``; in operation bodies."""
        if not self._binary:
            return raw  # type: ignore[no-any-return]
        return raw.decode() if type(raw) is bytes else bytes(raw).decode()

    # -- the seed API ---------------------------------------------------------

    @overload
    def get(self, key: str) -> str | None: ...
    @overload
    def get(self, key: list[str] | tuple[str, ...]) -> dict[str, str | None]: ...

    def get(self, key: str | list[str] | tuple[str, ...]) -> str | dict[str, str | None] | None:
        """Return the value of *key*, or ``None`` if it is not set (or expired).

        Given a list (or tuple) of keys, return :meth:`get_many`'s
        ``{key: value or None}``, as Ploy's ``get([keys])`` returns a ``Map``.
        """
        if type(key) is not str or not key or len(key) > self._short_key:
            if type(key) is list or type(key) is tuple:
                return self.get_many(key)
            check_key(key, self._max_key)
        if self._thread != get_ident():
            return self._run("get", lambda cur: self._get(cur, key), write=False)  # type: ignore[arg-type]
        cur = self._cur
        try:
            if self._binary:
                cur.execute(self._sql_get, (self.resource, key.encode()))  # type: ignore[union-attr]
                row = cur.fetchone()
                if row is None or (row[1] is not None and row[1] <= time()):
                    return None
                return self._str(row[0])
            cur.execute(self._sql_get, (self.resource, key))  # get_live: (value,)
            row = cur.fetchone()
        except BaseException as exc:
            return self._recover(exc, "get", lambda cur: self._get(cur, key), write=False)  # type: ignore[arg-type]
        return None if row is None else row[0]

    def get_with_metadata(self, key: str) -> ValueWithMetadata:
        """Return ``(value, metadata)`` of *key*: Ploy's ``getWithMetadata``.

        Both ``None`` if *key* is not set (or expired); *metadata* is the
        dict given to :meth:`set`, or ``None``.
        """
        check_key(key, self._max_key)

        def body(cur: Any) -> ValueWithMetadata:
            cur.execute(self._store.dialect.get_meta, (self.resource, self._key(key)))
            row = cur.fetchone()
            if row is None or (row[2] is not None and row[2] <= time()):
                return ValueWithMetadata(None, None)
            return ValueWithMetadata(self._str(row[0]), decode_metadata(row[1]))

        return self._run("get_with_metadata", body, write=False)

    def set(
        self,
        key: str,
        value: str,
        *,
        metadata: dict[str, Any] | None = None,
        ttl: Any = None,
        expires_at: Any = None,
    ) -> None:
        """Store *value* under *key*, replacing the entry (value, metadata and
        expiry). Committed on return. Ploy's ``set`` and ``put``.

        :param metadata: A JSON object stored with the value (Ploy's
            ``metadata``), at most 1024 bytes as JSON; read it with
            :meth:`get_with_metadata` and :meth:`list_entries`.
        :param ttl: Expire after this many seconds (Ploy's ``expirationTtl``):
            an ``int`` from 1, or a whole-second ``timedelta``.
        :param expires_at: Expire at this time (Ploy's ``expiration``): epoch
            seconds or an aware ``datetime``, in the future.
        :raises TypeError, ValueError: A bad argument (the message names the
            key), or both *ttl* and *expires_at*. Nothing is written.
        """
        if type(key) is not str or not key or len(key) > self._short_key:
            check_key(key, self._max_key)
        if type(value) is not str or len(value) * 4 > self._max_value:
            check_value(value, self._max_value)
        if metadata is not None or ttl is not None or expires_at is not None:
            return self._put(key, value, metadata, ttl, expires_at)
        if self._thread != get_ident():
            return self._run("set", lambda cur: self._set(cur, key, value), idempotent=True)
        cur = self._cur
        try:
            if self._binary:
                cur.execute(self._sql_set, (self.resource, key.encode(), value.encode()))
            else:
                cur.execute(self._sql_set, (self.resource, key, value))
        except BaseException as exc:
            self._recover(exc, "set", lambda cur: self._set(cur, key, value), write=True)

    #: Ploy's name of :meth:`set`.
    put = set

    def _put(self, key: str, value: str, metadata: Any, ttl: Any, expires_at: Any) -> None:
        """:meth:`set` with metadata or an expiry; a write with an expiry
        purges a bounded batch of expired rows now and then."""
        meta = encode_metadata(key, metadata)
        exp = expiry(key, ttl, expires_at)
        store = self._store
        purge = exp is not None and store.purge_due()

        def body(cur: Any) -> None:
            row = (self.resource, self._key(key), self._key(value), meta, exp)
            cur.execute(store.dialect.put, row)

        self._run("set", body, idempotent=True)
        if purge:
            store.purge_due(full=self._purge(PURGE_BATCH) == PURGE_BATCH)

    def delete(self, key: str) -> bool:
        """Remove *key*; return ``True`` if a value was removed (an expired one too)."""
        check_key(key, self._max_key)
        return self._run("delete", lambda cur: self._delete(cur, key))

    def _get(self, cur: Any, key: str) -> str | None:
        cur.execute(self._store.dialect.get, (self.resource, self._key(key)))
        row = cur.fetchone()
        if row is None or (row[1] is not None and row[1] <= time()):
            return None
        return self._str(row[0])

    def _expire(self, cur: Any, k: Any) -> bool:
        """Delete the row of key *k* (encoded) if it has expired, so the
        write that follows sees it absent; return whether there was one."""
        cur.execute(self._store.dialect.expire_one, (self.resource, k, time()))
        return bool(cur.rowcount > 0)

    def _set(self, cur: Any, key: str, value: str) -> None:
        cur.execute(self._store.dialect.set, (self.resource, self._key(key), self._key(value)))

    def _delete(self, cur: Any, key: str) -> bool:
        cur.execute(self._store.dialect.delete, (self.resource, self._key(key)))
        return bool(cur.rowcount > 0)

    # -- atomic operations -------------------------------------------------------

    def incr(self, key: str, amount: int = 1) -> int:
        """Add *amount* to the integer at *key* in the database; return the result.

        Atomic: concurrent calls from any number of processes never lose an
        update. A missing (or expired) key counts from 0; the value is stored
        as its decimal string, and a live key keeps its metadata and expiry.
        Not idempotent: after :class:`~flask_ploy.StateInDoubt`, read the
        value before trying again.

        :raises ValueError: The value is not a decimal integer, or the result
            leaves the 64-bit range. Nothing changes.
        """
        check_key(key, self._max_key)
        amount = check_amount(amount)

        def body(cur: Any) -> Any:
            dialect, k = self._store.dialect, self._key(key)
            while True:  # one statement, unless the row had expired
                row = dialect.run_incr(cur, self.resource, k, amount)
                if row is not None and (row[1] is None or row[1] > time()):
                    return row[0]
                # Refused (not an integer), or the row had expired: an expired
                # row is absent, so drop it and count from 0 again.
                if not self._expire(cur, k) and row is None:
                    return None

        try:
            raw = self._run("incr", body, tx=self._store.dialect_class.incr_needs_tx)
        except BadValue:
            # The database refused (an overflow) before the expiry could be
            # seen: an expired row is absent, so drop it and count from 0.
            if self._run("incr", lambda cur: self._expire(cur, self._key(key))):
                return self.incr(key, amount)
            raise not_integer(key, self.get(key), amount) from None
        result = None if raw is None else self._str(raw)
        if not is_counter(result):
            raise not_integer(key, self.get(key), amount)
        return int(result)  # type: ignore[arg-type]

    def add(self, key: str, value: str) -> bool:
        """Store *value* only if *key* is absent; return whether it was stored."""
        check_key(key, self._max_key)
        check_value(value, self._max_value)

        def body(cur: Any) -> bool:
            params = (self.resource, self._key(key), self._key(value))
            insert = self._store.dialect.insert_if_absent
            # Present: stored anyway if the row there had expired.
            return insert(cur, params) or (self._expire(cur, params[1]) and insert(cur, params))

        return self._run("add", body)

    def update(self, key: str, ops: Mapping[str, Mapping[str, Any]]) -> str | None:
        """Apply Ploy's update operators to the JSON object at *key*, atomically.

        *ops* maps operators to ``{path: operand}``: ``$set``, ``$unset``,
        ``$inc`` (a number), ``$push`` (append to an array, created if
        missing) and ``$pop`` (``1`` removes the last element, ``-1`` the
        first), applied in that order. As on Ploy, a missing (or expired)
        key is left missing, and the key keeps its metadata and expiry.
        Returns the new value (compact JSON), or ``None`` when *key* was
        missing.

        :raises TypeError: *ops* is malformed.
        :raises ValueError: An unknown operator, a bad path, or a value that
            is not a JSON object (or does not fit the operators). Nothing
            changes.
        """
        check_key(key, self._max_key)
        steps = _update.check_ops(ops)

        def body(cur: Any) -> str | None:
            dialect = self._store.dialect
            k = self._key(key)
            cur.execute(dialect.get_for_update, (self.resource, k))
            row = cur.fetchone()
            if row is None or (row[1] is not None and row[1] <= time()):
                return None
            doc = _update.apply_ops(_update.decode_object(self._str(row[0]), key), steps)
            new = _update.encode_object(doc)
            check_value(new, self._max_value)
            cur.execute(dialect.replace_value, (self._key(new), self.resource, k))
            return new

        return self._run("update", body, tx=True)

    def replace(self, key: str, expected: str | None, new: str) -> bool:
        """Set *key* to *new* only if its value is *expected*; return whether it was set.

        Compare-and-set, one atomic statement on every database: no other
        write can come between the comparison and the write. *expected*
        ``None`` means "absent" (insert only if missing, as :meth:`add`);
        values compare exactly (case, trailing spaces, NUL). When *expected*
        equals *new*, it only reads. Like :meth:`set`, it leaves no metadata
        and no expiry; an expired value counts as absent. Not idempotent: after
        :class:`~flask_ploy.StateInDoubt`, read the value before trying again.

        :raises TypeError: *expected* is neither ``str`` nor ``None``, or *new*
            is not a ``str``.
        """
        check_key(key, self._max_key)
        if expected is not None:
            check_value(expected, self._max_value)
        check_value(new, self._max_value)
        if expected == new:
            return self.get(key) == expected
        k, v = self._key(key), self._key(new)

        def body(cur: Any) -> bool:
            dialect = self._store.dialect
            if expected is None:  # as add
                params = (self.resource, k, v)
                insert = dialect.insert_if_absent
                return insert(cur, params) or (self._expire(cur, k) and insert(cur, params))
            swap = (v, self.resource, k, self._key(expected), time())
            cur.execute(dialect.compare_and_set, swap)  # a live row only
            return bool(cur.rowcount == 1)

        return self._run("replace", body)

    def transact(self, fn: Callable[[Transaction], T]) -> T:
        """Run ``fn(tx)`` in a serializable transaction; return what it returns.

        *tx* (a :class:`~flask_ploy.state.transaction.Transaction`) has
        ``get``, ``get_many``, ``set``, ``delete``, ``incr``, ``update`` and
        ``list``, on this binding's resource: its reads see its own writes,
        and the result is as if transactions ran one at a time. Nothing is
        written unless *fn* returns; an exception from *fn* rolls back and
        reaches the caller unchanged.

        **fn may run more than once**: after a conflict or a deadlock it runs
        again, until ``PLOY_STATE_BUSY_TIMEOUT`` seconds after the call began
        (its own time included). Keep side effects (e-mail, HTTP calls) out of
        it. Inside it, use only *tx*: State bindings on the same database raise
        :class:`RuntimeError`. See :doc:`/transactions`.

        :raises StateUnavailable: The database failed, or conflicts went on
            until the deadline; nothing was written.
        :raises StateInDoubt: The connection broke after ``COMMIT`` was sent
            by a transaction that wrote.
        """
        conns, label = self._conns, f"{self.name}.transact"
        if get_ident() != conns.owner:
            with conns.once(self._store) as lease:
                return transaction.transact(label, self.resource, self._store, lease, fn)
        lease = conns.lease(self._store)
        try:
            return transaction.transact(label, self.resource, self._store, lease, fn)
        finally:
            self._remember(lease.cur)


def _forget_after_fork() -> None:  # pragma: no cover - runs in forked children
    for binding in list(_bindings):
        binding._forget()


after_fork(_forget_after_fork)
