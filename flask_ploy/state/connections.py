"""The State connections of one app context, and how an operation runs on one.

A :class:`Connections` belongs to one app context (it is ``g.env``'s). It
lends each thread that uses a State binding one :class:`Lease` per store: a
pooled DBAPI connection, borrowed on the thread's first operation and
returned by :meth:`Connections.release` in ``teardown_appcontext``. Threads
never share a connection, so a binding may be used from a thread pool or
``asyncio.to_thread`` inside a view.

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
import random
import time
from collections.abc import Callable
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
        "orphaned",
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
        #: An operation is running on it (only set by :meth:`run`).
        self.active = False
        #: Released while :attr:`active`: return it when the operation ends.
        self.orphaned = False
        #: The database's lock wait differs from the session default.
        self.wait_changed = False
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
        self.orphaned = False
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
        deadline = time.monotonic() + self.store.settings.busy_timeout
        return self._attempts(label, body, write, tx, idempotent, deadline, None)

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
        deadline = time.monotonic() + self.store.settings.busy_timeout
        self.transacting = True
        try:
            return self._attempts(label, body, True, True, False, deadline, None, wrote)
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
        as long as the database waits on a first attempt.
        """
        timeout = self.store.settings.busy_timeout
        first_wait = self.store.dialect.first_wait(timeout)
        deadline = time.monotonic() - first_wait + timeout
        return self._attempts(label, body, write, False, idempotent, deadline, exc)

    def _attempts(
        self,
        label: str,
        body: Callable[[Any], T],
        write: bool,
        tx: bool,
        idempotent: bool,
        deadline: float,
        failed: BaseException | None,
        wrote: Callable[[], bool] | None = None,
    ) -> T:
        delay = 0.002
        reconnected = False
        sent = False  # the failed statement may have changed data
        fresh = None  # transact: the transaction's own cursor
        self.active = True
        try:
            while True:
                if failed is not None:
                    problem = self._settle(failed, label, write, sent, idempotent, reconnected)
                    if problem is Problem.DISCONNECT:
                        # A new connection, and the whole lock budget again:
                        # the broken one may have been cut off at any time.
                        reconnected = True
                        deadline = time.monotonic() + self.store.settings.busy_timeout
                    else:  # Problem.RETRY: pause a little, then wait in the database
                        self.store.check_conflict()
                        remaining = deadline - time.monotonic()
                        if remaining > 0:
                            time.sleep(min(delay * (0.5 + random.random()), remaining))
                            delay = min(delay * 2, MAX_BACKOFF)
                            remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise self._busy(label, failed) from failed
                cur = self.cursor()
                dialect = self.store.dialect
                sent = False
                try:
                    if failed is not None:  # wait in the database only for the time left
                        self.wait_changed = True
                        left = max(0.001, deadline - time.monotonic())
                        dialect.set_lock_wait(cur, left)
                        self.wait = dialect.server_wait(left)
                        failed = None
                    if wrote is not None:  # a transaction: see bound_wait
                        self.deadline = deadline
                        if not self.wait_changed:
                            self.wait = dialect.first_wait(self.store.settings.busy_timeout)
                        if cur is not fresh:
                            cur = fresh = self._own_cursor()
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
            if self.orphaned:
                self.release()

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

    def _busy(self, label: str, exc: BaseException) -> StateUnavailable:
        timeout = self.store.settings.busy_timeout
        return StateUnavailable(
            f"state database {self.store.display_url}: {label} gave up after {timeout:g} s"
            f" (PLOY_STATE_BUSY_TIMEOUT) waiting for a lock: {reason(exc)}"
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
    """The State connections of one app context: a :class:`Lease` per store and thread.

    Nothing is borrowed until an operation needs it. :meth:`release` returns
    every connection (``teardown_appcontext``); afterwards the bindings of
    the context refuse to borrow again.
    """

    __slots__ = ("_closed", "_leases")

    def __init__(self) -> None:
        self._leases: dict[tuple[StateStore, int], Lease] = {}
        self._closed = False

    def lease(self, store: StateStore) -> Lease:
        """The calling thread's lease on *store* (made, not yet connected, if new).

        :raises RuntimeError: The context has ended, or the thread is inside a
            :meth:`Lease.transact` on *store*.
        """
        thread = get_ident()
        lease = self._leases.get((store, thread))
        if lease is None:
            if self._closed:
                raise RuntimeError(
                    "A State binding was used after its app context ended (its connections"
                    " went back to the pool at teardown). Use g.env inside a request, a CLI"
                    " command or 'with app.app_context():'."
                )
            lease = self._leases[store, thread] = Lease(store, thread)
        elif lease.transacting:
            raise RuntimeError(
                f"A State binding on {store.display_url} was used inside a transact() function"
                " on the same database. Inside the function, use only its argument (tx.get,"
                " tx.set...): it is the transaction. Transactions do not nest."
            )
        return lease

    def release(self) -> None:
        """Return every borrowed connection; a lease busy in another thread is
        returned by that thread when its operation ends."""
        self._closed = True
        me = get_ident()
        for lease in list(self._leases.values()):
            if lease.active and lease.thread != me:
                lease.orphaned = True
            else:
                lease.release()
        self._leases.clear()
