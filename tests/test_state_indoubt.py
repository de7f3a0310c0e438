"""Contract: a connection that breaks mid-write says what is known.

The database server kills the session while a write waits for a row lock,
so the statement was sent and no answer came: the outcome is unknown. A
non-idempotent write (``incr``, ``add``, ``delete``, ``update``) raises
:class:`~flask_ploy.StateInDoubt`; ``set`` runs once more on a new
connection and returns; a read is retried. Before, every case raised plain
``StateUnavailable``, which tells a caller nothing was written.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import g

from flask_ploy import StateInDoubt

from .conftest import _state_url
from .test_state_busy import _raw


def _session_id(conn: Any, url: str) -> int:
    cur = conn.cursor()
    cur.execute(
        "SELECT pg_backend_pid()" if url.startswith("postgresql") else "SELECT CONNECTION_ID()"
    )
    return int(cur.fetchone()[0])


def _kill_when_waiting(url: str, session: int, wait: str = "Lock") -> threading.Thread:
    """Kill *session* once it waits for a lock (PostgreSQL: for *wait*, a
    ``wait_event_type``), from a connection of our own."""

    def run() -> None:
        conn = _raw(url)
        cur = conn.cursor()
        deadline = time.monotonic() + 1  # then kill anyway: it waits by then
        while time.monotonic() < deadline:
            if url.startswith("postgresql"):
                cur.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (session,)
                )
                row = cur.fetchone()
                waiting = row is not None and row[0] == wait
            else:
                cur.execute(
                    "SELECT COUNT(*) FROM information_schema.INNODB_TRX"
                    " WHERE trx_mysql_thread_id = %s AND trx_state = 'LOCK WAIT'",
                    (session,),
                )
                waiting = cur.fetchone()[0] > 0
            if waiting:
                break
            time.sleep(0.01)
        if url.startswith("postgresql"):
            cur.execute("SELECT pg_terminate_backend(%s)", (session,))
        else:
            cur.execute(f"KILL CONNECTION {int(session)}")
        conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@contextlib.contextmanager
def cut_off_once(
    url: str, table: str, session: int, keys: list[str], new: str | None = None
) -> Iterator[None]:
    """Row-lock *keys* (and insert *new*, uncommitted), kill *session* once it
    waits for them, then let go."""
    locker = _raw(url)
    cur = locker.cursor()
    cur.execute("BEGIN")
    q = '"' if url.startswith("postgresql") else "`"
    for key in keys:
        cur.execute(
            f"SELECT value FROM {q}{table}{q} WHERE resource = 'default'"
            f" AND {q}key{q} = %s FOR UPDATE",
            (key.encode(),),
        )
    if new is not None:
        cur.execute(
            f"INSERT INTO {q}{table}{q} (resource, {q}key{q}, value) VALUES ('default', %s, %s)",
            (new.encode(), b"theirs"),
        )
    killer = _kill_when_waiting(url, session)

    def release() -> None:  # after the kill, let a second attempt through
        killer.join(10)
        time.sleep(0.2)
        locker.rollback()

    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        yield
    finally:
        releaser.join(10)
        locker.close()


def _state(make_app: Any, url: str, table: str) -> tuple[Any, Any]:
    app = make_app(PLOY_STATE_URL=url, PLOY_STATE_TABLE=table, PLOY_STATE_BUSY_TIMEOUT=5)
    ctx = app.app_context()
    ctx.push()
    s = g.env.STATE
    s.clear()
    s.set_many({"k": "v", "n": "1", "doc": "{}"})
    return ctx, s


#: Writes that are one statement in autocommit mode: when the connection
#: breaks after it was sent, the database may have applied it.
IN_DOUBT: dict[str, Callable[[Any], Any]] = {
    "delete": lambda s: s.delete("k"),
    "add": lambda s: s.add("new", "mine"),
    "incr (PostgreSQL: one statement)": lambda s: s.incr("n"),
    "replace": lambda s: s.replace("k", "v", "w"),
}


@pytest.mark.parametrize("op", IN_DOUBT)
def test_a_write_cut_off_after_it_was_sent_is_in_doubt(
    make_app: Any, server_state_url: str, state_table: str, op: str
) -> None:
    url = server_state_url
    if op.startswith("incr") and not url.startswith("postgresql"):
        op = "delete"  # MariaDB's incr is a transaction: see the next test
    ctx, s = _state(make_app, url, state_table)
    try:
        session = _session_id(s.connection(), url)
        with (
            cut_off_once(url, state_table, session, ["k", "n"], new="new"),
            pytest.raises(StateInDoubt, match="may or may not have been applied"),
        ):
            IN_DOUBT[op](s)
        # The binding works again, on a new connection.
        assert s.get("n") == "1"
        assert _session_id(s.connection(), url) != session
    finally:
        ctx.pop()


#: Writes that run in a transaction, or are idempotent: cut off before their
#: commit, they run again on a new connection, and apply exactly once.
RETRIED: dict[str, tuple[Callable[[Any], Any], dict[str, str | None]]] = {
    "set": (lambda s: s.set("k", "new"), {"k": "new"}),
    "set_many": (lambda s: s.set_many({"k": "a", "n": "b"}), {"k": "a", "n": "b"}),
    "update": (lambda s: s.update("doc", {"$inc": {"n": 1}}), {"doc": '{"n":1}'}),
    "delete_many": (lambda s: s.delete_many(["k", "n"]), {"k": None, "n": None}),
    "incr (MariaDB: a transaction)": (lambda s: s.incr("n"), {"n": "2"}),
    "transact": (
        lambda s: s.transact(lambda tx: tx.set("k", tx.get("k") + "!") or tx.incr("n")),
        {"k": "v!", "n": "2"},
    ),
}


@pytest.mark.parametrize("op", RETRIED)
def test_a_write_cut_off_before_its_commit_runs_again(
    make_app: Any, server_state_url: str, state_table: str, op: str
) -> None:
    url = server_state_url
    if op.startswith("incr") and url.startswith("postgresql"):
        op = "update"  # PostgreSQL's incr is one statement: see the previous test
    run, expected = RETRIED[op]
    ctx, s = _state(make_app, url, state_table)
    try:
        session = _session_id(s.connection(), url)
        with cut_off_once(url, state_table, session, ["k", "n", "doc"]):
            run(s)
        assert s.get_many(list(expected)) == expected
        assert _session_id(s.connection(), url) != session
    finally:
        ctx.pop()


def test_a_read_cut_off_is_retried(make_app: Any, server_state_url: str, state_table: str) -> None:
    url = server_state_url
    app = make_app(PLOY_STATE_URL=url, PLOY_STATE_TABLE=state_table)
    with app.app_context():
        s = g.env.STATE
        s.clear()
        s.set("k", "v")
        session = _session_id(s.connection(), url)
        conn = _raw(url)
        cur = conn.cursor()
        if url.startswith("postgresql"):
            cur.execute("SELECT pg_terminate_backend(%s)", (session,))
        else:
            cur.execute(f"KILL CONNECTION {int(session)}")
        conn.close()
        time.sleep(0.1)
        assert s.get("k") == "v"  # the dead connection is replaced transparently
        assert s.count() == 1


def test_a_transaction_cut_off_at_commit_is_in_doubt(
    make_app: Any, state_table: str, tmp_path: Any
) -> None:
    """PostgreSQL: a deferred constraint trigger makes ``COMMIT`` itself slow
    (``pg_sleep``), and the session is killed then: a transaction that wrote
    raises StateInDoubt, and its function is not run again."""
    url = _state_url("postgresql", tmp_path)
    ctx, s = _state(make_app, url, state_table)
    slow = f"{state_table}_slow_commit"
    admin = _raw(url)
    cur = admin.cursor()
    try:
        cur.execute(
            f'CREATE OR REPLACE FUNCTION "{slow}"() RETURNS trigger LANGUAGE plpgsql'
            " AS $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$"
        )
        cur.execute(
            f'CREATE CONSTRAINT TRIGGER "{slow}" AFTER INSERT OR UPDATE ON "{state_table}"'
            f' DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "{slow}"()'
        )
        runs = 0

        def fn(tx: Any) -> None:
            nonlocal runs
            runs += 1
            tx.incr("n")

        session = _session_id(s.connection(), url)
        killer = _kill_when_waiting(url, session, wait="Timeout")
        with pytest.raises(StateInDoubt, match="may or may not have been applied"):
            s.transact(fn)
        killer.join(10)
        assert runs == 1
        cur.execute(f'DROP TRIGGER "{slow}" ON "{state_table}"')
        assert s.get("n") == "1"  # the commit did not happen, but nobody could know
        assert s.transact(lambda tx: tx.get("n")) == "1"  # working on a new connection
    finally:
        cur.execute(f'DROP TRIGGER IF EXISTS "{slow}" ON "{state_table}"')
        cur.execute(f'DROP FUNCTION IF EXISTS "{slow}"()')
        admin.close()
        ctx.pop()
