"""The State connections of one app context, and how an operation runs on one.

A :class:`Connections` belongs to one app context (it is ``g.env``'s). The
context's own thread keeps one :class:`Lease` per store, a pooled DBAPI
connection borrowed on its first operation and returned by
:meth:`Connections.release` in ``teardown_appcontext``; any other thread
borrows a connection for each operation. Threads never share a connection,
so a binding may be used from a thread pool, ``asyncio.to_thread`` or a
thread that outlives the request.

:meth:`Lease.run` is the one place that decides what a failure means. Every
operation has one deadline, ``PLOY_STATE_BUSY_TIMEOUT`` after it started,
which counts the database's own lock wait: a lock conflict is retried (the
database told to wait only for the time left) until the deadline, then
raises :class:`~flask_ploy.StateUnavailable`. A broken connection is thrown
away; a write whose statement may have reached the database raises
:class:`~flask_ploy.StateInDoubt`, unless it is idempotent, when it runs
once more on a new connection. Exceptions that are not the driver's
(``TypeError``, ``RecursionError``, ``gevent.Timeout``...) roll back and
propagate unchanged.

:meth:`Lease.transact` runs ``STATE.transact`` under the same policy and
loop: a conflict runs the whole transaction again; a transaction that wrote
and breaks after its ``COMMIT`` was sent is in doubt; and each statement
inside waits for locks only until the deadline (:meth:`Lease.bound_wait`).
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import weakref
from collections.abc import Callable, Iterator
from threading import get_ident
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import StateInDoubt, StateUnavailable
from .dialects import Problem
from .engine import reason

if TYPE_CHECKING:
    from .store import StateStore

T = TypeVar("T")

#: The longest pause between two attempts of an operation, in seconds.
MAX_BACKOFF = 0.05
#: How far past its deadline a statement of a transaction may be left to wait
#: for a lock before :meth:`Lease.bound_wait` shortens the wait, in seconds.
WAIT_SLACK = 0.02


class BadValue(ValueError):
    """The database refused a value as data (``incr`` on a non-integer, overflow)."""


class Lease:
    """One pooled DBAPI connection of one store, for one app context and thread.

    :ivar cur: The connection's cursor while borrowed, else ``None``.
    :ivar thread: The thread (:func:`threading.get_ident`) that uses it.
    """

    __slots__ = (
        "active",
        "conn",
        "cur",
        "deadline",
        "fairy",
        "in_tx",
        "restore",
        "store",
        "thread",
        "transacting",
        "wait",
        "wait_changed",
    )

    def __init__(self, store: StateStore, thread: int) -> None:
        self.store = store
        self.thread = thread
        #: SQLAlchemy's pooled connection (``PoolProxiedConnection``).
        self.fairy: Any = None
        #: The DBAPI connection.
        self.conn: Any = None
        self.cur: Any = None
        #: Autocommit mode to restore when returned (a connection of db='s pool).
        self.restore: bool | None = None
        #: A transaction is open on it.
        self.in_tx = False
        #: The database's lock wait differs from the session default.
        self.wait_changed = False
        #: An operation is running on it.
        self.active = False
        #: A :meth:`transact` is running: the context's bindings may not use it.
        self.transacting = False
        #: The running operation's deadline (:func:`time.monotonic`), and the
        #: database's lock wait for its next statement, in seconds.
        self.deadline = self.wait = 0.0

    def cursor(self) -> Any:
        """The cursor, borrowing a connection first if needed.

        :raises StateUnavailable: No connection could be had.
        """
        cur = self.cur
        if cur is None:
            self.store.checkout(self)
            cur = self.cur
        return cur

    def drop(self, exc: BaseException | None) -> None:
        """Throw the connection away; the next operation borrows a new one."""
        fairy = self.fairy
        self.fairy = self.conn = self.cur = None
        self.in_tx = self.wait_changed = False
        if fairy is not None:
            with contextlib.suppress(Exception):
                fairy.invalidate(exc)

    def release(self) -> None:
        """Return the connection to its pool, rolling back anything left open."""
        self.store.checkin(self)

    # -- running operations ----------------------------------------------------

    def run(
        self,
        label: str,
        body: Callable[[Any], T],
        *,
        write: bool = True,
        tx: bool = False,
        idempotent: bool = False,
    ) -> T:
        """Run ``body(cursor)`` (in a transaction if *tx*) under the failure policy.

        :param label: ``BINDING.op``, for messages.
        :param write: *body* writes (a broken connection leaves it in doubt).
        :param idempotent: Running *body* twice has the effect of running it once.
        :raises StateUnavailable: The database failed, or stayed locked until the
            deadline; nothing was written.
        :raises StateInDoubt: The connection broke after a write was sent.
        """
        started = time.monotonic()
        deadline = started + self.store.settings.busy_timeout
        return self._attempts(label, body, write, tx, idempotent, deadline, None, started)

    def transact(self, label: str, body: Callable[[Any], T], wrote: Callable[[], bool]) -> T:
        """Run ``body(cursor)`` in a serializable transaction under the failure
        policy of :meth:`run`, as often as a conflict asks, until the deadline.

        The transaction begins with the dialect's
        :meth:`~flask_ploy.state.dialects.Dialect.begin_transact`, on a cursor
        of its own: while it runs, the bindings of the context cannot use this
        connection (their cached cursor is closed, and :meth:`Connections.lease`
        refuses), so nothing outside *body* joins the transaction by mistake.

        :param wrote: Asked when ``COMMIT`` is sent: whether the transaction
            wrote. If the connection breaks then, a transaction that wrote
            raises :class:`~flask_ploy.StateInDoubt`; one that did not runs
            again on a new connection.
        :raises StateUnavailable: As :meth:`run`.
        :raises StateInDoubt: The connection broke after ``COMMIT`` was sent.
        :raises RuntimeError: Another operation is running on this lease.
        """
        if self.active:  # from inside another operation (a generator given to load)
            raise RuntimeError(f"{label} was called while another State operation ran")
        started = time.monotonic()
        deadline = started + self.store.settings.busy_timeout
        self.transacting = True
        try:
            return self._attempts(label, body, True, True, False, deadline, None, started, wrote)
        finally:
            self.transacting = False

    def bound_wait(self) -> None:
        """Before a statement of a transaction: make the database wait for a
        lock no longer than the operation's deadline (it was told the whole
        busy timeout when the operation began)."""
        now = time.monotonic()
        if now + self.wait > self.deadline + WAIT_SLACK:
            dialect = self.store.dialect
            left = max(0.001, self.deadline - now)
            self.wait_changed = True
            dialect.set_lock_wait(self.cur, left)
            self.wait = dialect.server_wait(left)

    def recover(
        self,
        exc: BaseException,
        label: str,
        body: Callable[[Any], T],
        *,
        write: bool,
        idempotent: bool = False,
    ) -> T:
        """Handle the failure *exc* of a single statement run outside :meth:`run`
        (the ``get``/``set`` fast path), running *body* again if that is right.

        The statement's start was not timed, so the deadline assumes it waited
        as long as the database waits on a first attempt; if its connection
        broke instead, the retry on a new connection gets the whole budget.
        """
        timeout = self.store.settings.busy_timeout
        first_wait = self.store.dialect.first_wait(timeout)
        deadline = time.monotonic() - first_wait + timeout
        return self._attempts(label, body, write, False, idempotent, deadline, exc, None)

    def _attempts(
        self,
        label: str,
        body: Callable[[Any], T],
        write: bool,
        tx: bool,
        idempotent: bool,
        deadline: float,
        failed: BaseException | None,
        started: float | None,
        wrote: Callable[[], bool] | None = None,
    ) -> T:
        delay = 0.002
        timeout = self.store.settings.busy_timeout
        reconnected = False
        sent = False  # the failed statement may have changed data
        own = None  # transact: the transaction's own cursor
        self.active = True
        try:
            while True:
                if failed is not None:
                    problem = self._settle(failed, label, write, sent, idempotent, reconnected)
                    if problem is Problem.DISCONNECT:
                        if started is None:  # an untimed statement: budget it anew
                            deadline = time.monotonic() + timeout
                        reconnected = True
                    else:  # Problem.RETRY: pause a little, then wait in the database
                        self.store.check_conflict()
                        remaining = deadline - time.monotonic()
                        if remaining > 0:
                            time.sleep(min(delay * (0.5 + random.random()), remaining))
                            delay = min(delay * 2, MAX_BACKOFF)
                            remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise self._busy(label, failed, started) from failed
                cur = self.cur
                borrowed = cur is None
                if borrowed:
                    cur = self.cursor()
                dialect = self.store.dialect
                sent = False
                try:
                    # After a failure, or a slow checkout (a pool wait, a new
                    # connection): wait in the database only for the time left.
                    if failed is not None or borrowed:
                        left = deadline - time.monotonic()
                        if failed is not None or left < dialect.first_wait(timeout) - 0.025:
                            self.wait_changed = True
                            left = max(0.001, left)
                            dialect.set_lock_wait(cur, left)
                            self.wait = dialect.server_wait(left)
                        failed = None
                    if wrote is not None:  # a transaction: see bound_wait
                        self.deadline = deadline
                        if not self.wait_changed:
                            self.wait = dialect.first_wait(self.store.settings.busy_timeout)
                        if cur is not own:
                            cur = own = self._own_cursor()
                        dialect.begin_transact(cur)
                        self.in_tx = True
                    elif tx:
                        cur.execute(dialect.begin_write if write else dialect.begin_read)
                        self.in_tx = True
                    sent = write and not tx
                    result = body(cur)
                    if tx:
                        sent = write if wrote is None else wrote()
                        cur.execute(dialect.commit)
                        self.in_tx = False
                    return result
                except BaseException as exc:
                    failed = exc
        finally:
            self.active = False
            if self.wait_changed and self.cur is not None:
                self._restore_wait()

    def _own_cursor(self) -> Any:
        """Replace the cursor by a new one, closing the old: a binding that
        cached the old one finds it closed and goes through :meth:`Connections.lease`."""
        old, self.cur = self.cur, self.conn.cursor()
        with contextlib.suppress(Exception):
            old.close()
        return self.cur

    def _settle(
        self,
        exc: BaseException,
        label: str,
        write: bool,
        sent: bool,
        idempotent: bool,
        reconnected: bool,
    ) -> Problem:
        """Decide what failure *exc* means: raise, or return how to go on
        (:attr:`Problem.RETRY` or :attr:`Problem.DISCONNECT`)."""
        store = self.store
        if not isinstance(exc, store.dbapi_error):
            # Not the database's: roll back, and keep the connection only if
            # it is certainly in a known state.
            if self.cur is not None and (
                not isinstance(exc, Exception) or (self.in_tx and not self._rollback())
            ):
                self.drop(exc)
            raise exc
        problem = store.dialect.classify(exc, self.conn)
        if self.in_tx and not self._rollback():
            problem = Problem.DISCONNECT
        if problem is Problem.VALUE:
            raise BadValue(reason(exc)) from exc
        if problem is Problem.RETRY:
            return problem
        where = f"state database {store.display_url}"
        if problem is Problem.DISCONNECT:
            self.drop(exc)
            if write and sent and not idempotent:
                raise StateInDoubt(
                    f"{where}: the connection broke during {label}, after the write was"
                    f" sent; it may or may not have been applied: {reason(exc)}"
                ) from exc
            if not reconnected:
                return problem
        elif not _alive(self.conn):
            self.drop(exc)
        raise StateUnavailable(f"{where} failed on {label}: {reason(exc)}") from exc

    def _busy(self, label: str, exc: BaseException, started: float | None) -> StateUnavailable:
        timeout = self.store.settings.busy_timeout
        took = "" if started is None else f" after {time.monotonic() - started:.2f} s"
        return StateUnavailable(
            f"state database {self.store.display_url}: {label} gave up{took} waiting for a"
            f" lock (PLOY_STATE_BUSY_TIMEOUT = {timeout:g} s): {reason(exc)}"
        )

    def _rollback(self) -> bool:
        """Roll back the open transaction; ``False`` if that failed too."""
        self.in_tx = False
        try:
            self.cur.execute(self.store.dialect.rollback)
        except Exception:
            return False
        return True

    def _restore_wait(self) -> None:
        timeout = self.store.settings.busy_timeout
        try:
            self.store.dialect.set_lock_wait(self.cur, self.store.dialect.first_wait(timeout))
        except Exception as exc:
            self.drop(exc)
        self.wait_changed = False


def _alive(conn: Any) -> bool:
    closed = getattr(conn, "closed", False)
    if callable(closed):  # pragma: no cover
        return True
    return conn is not None and not closed


class Connections:
    """The State connections of one app context.

    The context's own thread (the one that pushed it: :attr:`owner`) keeps
    one :class:`Lease` per store from its first operation until
    :meth:`release` (``teardown_appcontext``). Any other thread (a thread
    pool, ``asyncio.to_thread``, a greenlet, a thread that outlives the
    request) borrows a connection for each operation and returns it when
    the operation ends (:meth:`run_once`), so a finished thread holds
    nothing and teardown never takes a connection from under a running
    one. After :meth:`release`, the bindings of the context refuse to
    borrow again.
    """

    __slots__ = ("__weakref__", "_closed", "_leases", "owner")

    def __init__(self, owner: int | None = None) -> None:
        #: The thread whose leases last the context (default: the caller).
        self.owner = get_ident() if owner is None else owner
        self._leases: dict[StateStore, Lease] = {}
        self._closed = False
        _live.add(self)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(
                "A State binding was used after its app context ended (its connections"
                " went back to the pool at teardown). Use g.env inside a request, a CLI"
                " command or 'with app.app_context():'."
            )

    def lease(self, store: StateStore) -> Lease:
        """The owner thread's lease on *store* (made, not yet connected, if new).

        :raises RuntimeError: The context has ended, or the caller is not the
            owner thread (use :meth:`run_once`).
        """
        lease = self._leases.get(store)
        if lease is None:
            self._check_open()
            if get_ident() != self.owner:
                raise RuntimeError("Connections.lease() is for the app context's own thread")
            lease = self._leases[store] = Lease(store, self.owner)
        elif lease.transacting:
            raise RuntimeError(
                f"A State binding on {store.display_url} was used inside a transact() function"
                " on the same database. Inside the function, use only its argument (tx.get,"
                " tx.set...): it is the transaction. Transactions do not nest."
            )
        return lease

    def run_once(
        self,
        store: StateStore,
        label: str,
        body: Callable[[Any], T],
        *,
        write: bool = True,
        tx: bool = False,
        idempotent: bool = False,
    ) -> T:
        """Run one operation for a thread other than the owner, on a
        connection borrowed for it and returned when it ends (see
        :meth:`Lease.run`).

        :raises RuntimeError: The context has ended, or the thread is inside a
            :meth:`Lease.transact` on *store*.
        """
        with self.once(store) as lease:
            return lease.run(label, body, write=write, tx=tx, idempotent=idempotent)

    @contextlib.contextmanager
    def once(self, store: StateStore) -> Iterator[Lease]:
        """A lease on *store* for a thread other than the owner, for one
        operation: its connection goes back when the block ends.

        :raises RuntimeError: The context has ended.
        """
        self._check_open()
        lease = Lease(store, get_ident())
        try:
            yield lease
        finally:
            lease.release()

    def release(self) -> None:
        """Return the owner's connections; refuse to borrow from now on."""
        self._closed = True
        for lease in list(self._leases.values()):
            lease.release()
        self._leases.clear()

    def forget(self) -> None:
        """Drop every connection without closing it (a forked child: they are
        the parent's). The next operation borrows anew."""
        for lease in self._leases.values():
            lease.fairy = lease.conn = lease.cur = None
            lease.in_tx = lease.wait_changed = False


#: Every live :class:`Connections`, to forget in a forked child.
_live: weakref.WeakSet[Connections] = weakref.WeakSet()
_forked: list[Callable[[], None]] = []


def after_fork(hook: Callable[[], None]) -> None:
    """Run *hook* in a forked child, after the inherited connections are forgotten."""
    _forked.append(hook)


def _forget_after_fork() -> None:  # pragma: no cover - runs in forked children
    for connections in list(_live):
        connections.forget()
    for hook in _forked:
        hook()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
