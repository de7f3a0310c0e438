"""The contract of ``State.transact`` and ``State.replace``: every test runs on
SQLite, PostgreSQL and MariaDB (see ``state_url`` in conftest).

Concurrency tests run two app contexts in two threads and meet inside the
transaction function on its first run (each waits at most 0.5 s for the
other, since on SQLite the second cannot begin until the first commits):
the outcome must be one that running the two one after the other gives.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, g

from flask_ploy import StateUnavailable, Transaction

from .test_state_busy import table_locked
from .test_state_contract import _conflict

# -- results, own writes, rollback -------------------------------------------------------


def test_transact_returns_the_result_and_commits(state_env: Any) -> None:
    s = state_env.STATE
    s.set_many({"stock:a": "3", "stock:b": "0"})

    def transfer(tx: Transaction) -> bool:
        a = int(tx.get("stock:a") or 0)
        if a < 1:
            return False
        tx.set("stock:a", str(a - 1))
        tx.incr("stock:b")
        return True

    assert [s.transact(transfer) for _ in range(4)] == [True, True, True, False]
    assert s.get_many(["stock:a", "stock:b"]) == {"stock:a": "0", "stock:b": "3"}


def test_reads_see_the_transactions_own_writes(state_env: Any) -> None:
    s = state_env.STATE
    s.set_many({"a": "1", "b": "2", "doc": "{}", "gone": "x"})

    def fn(tx: Transaction) -> list[Any]:
        seen: list[Any] = [tx.get("a")]
        tx.set("a", "one")
        tx.set("new", "n")
        seen += [tx.get("a"), tx.get("new"), tx.delete("gone"), tx.get("gone"), tx.delete("gone")]
        seen.append(tx.get_many(["a", "b", "gone", "new", "missing", "a"]))
        seen += [tx.incr("b", 40), tx.incr("b"), tx.incr("fresh", -3), tx.get("fresh")]
        seen += [tx.update("doc", {"$inc": {"n": 2}}), tx.update("doc", {"$push": {"t": 1}})]
        seen += [tx.update("missing", {"$set": {"a": 1}}), tx.get("missing")]
        seen.append(tx.list().keys)
        tx.delete("new")
        seen.append(tx.list().keys)
        return seen

    assert s.transact(fn) == [
        "1",
        "one",
        "n",
        True,
        None,
        False,
        {"a": "one", "b": "2", "gone": None, "new": "n", "missing": None},
        42,
        43,
        -3,
        "-3",
        '{"n":2}',
        '{"n":2,"t":[1]}',
        None,
        None,
        ["a", "b", "doc", "fresh", "new"],
        ["a", "b", "doc", "fresh"],
    ]
    assert dict(s.items()) == {"a": "one", "b": "43", "doc": '{"n":2,"t":[1]}', "fresh": "-3"}


def test_list_in_a_transaction_pages_through_its_own_writes(state_env: Any) -> None:
    """Deleted keys vanish from the pages, new ones appear, in byte order,
    each exactly once, however the pages fall."""
    s = state_env.STATE
    before = {f"k{i:03d}": "v" for i in range(0, 60, 2)} | {"é": "v", "other": "v"}
    s.set_many(before)
    deleted = [f"k{i:03d}" for i in range(0, 60, 6)]
    added = [f"k{i:03d}" for i in range(1, 61, 3)] + ["k", "kz", "\U0001f389"]
    want = sorted((set(before) - set(deleted)) | set(added), key=lambda k: k.encode())

    def fn(tx: Transaction) -> list[list[str]]:
        for k in deleted:
            tx.delete(k)
        for k in added:
            tx.set(k, "new")
        pages = []
        for limit in (1, 3, 7, 1000):
            seen: list[str] = []
            cursor = None
            while True:
                page = tx.list(limit=limit, cursor=cursor)
                assert len(page.keys) <= limit
                seen += page.keys
                cursor = page.cursor
                if cursor is None:
                    break
            pages.append(seen)
        pages.append(tx.list("k0", limit=5).keys)
        pages.append(tx.list("k", cursor="k05").keys)
        return pages

    *full, prefixed, after = s.transact(fn)
    assert full == [want] * 4
    assert prefixed == [k for k in want if k.startswith("k0")][:5]
    assert after == [k for k in want if k.startswith("k") and k > "k05"]
    assert s.list().keys == want


class _Interrupt(BaseException):
    """Like KeyboardInterrupt or gevent.Timeout: not an Exception."""


def _raisers(state_url: str) -> dict[str, Callable[[], BaseException]]:
    return {
        "KeyError": lambda: KeyError("x"),
        "BaseException": lambda: _Interrupt("stop"),
        # The driver's own "retry" error, raised by the function itself (not by
        # a statement of its transaction): the caller's, not a conflict.
        "driver error": lambda: _conflict(state_url),
    }


@pytest.mark.parametrize("kind", ["KeyError", "BaseException", "driver error"])
def test_an_exception_from_the_function_rolls_back_and_reaches_the_caller(
    state_env: Any, state_url: str, kind: str
) -> None:
    s = state_env.STATE
    s.set("keep", "me")
    error = _raisers(state_url)[kind]()
    runs = 0

    def fn(tx: Transaction) -> None:
        nonlocal runs
        runs += 1
        tx.set("keep", "changed")
        tx.set("new", "x")
        assert tx.get("keep") == "changed"
        raise error

    with pytest.raises(type(error)) as info:
        s.transact(fn)
    assert info.value is error  # the very exception, not a StateUnavailable
    assert runs == 1  # not taken for a conflict
    assert dict(s.items()) == {"keep": "me"}
    s.set("after", "ok")  # the connection is usable (or was replaced)
    assert s.transact(lambda tx: tx.get("after")) == "ok"


def test_a_value_error_inside_rolls_back_what_came_before(state_env: Any) -> None:
    s = state_env.STATE
    s.set_many({"n": "abc", "m": "1"})

    def fn(tx: Transaction) -> None:
        tx.incr("m")
        tx.incr("n")  # not an integer: ValueError

    with pytest.raises(ValueError, match="not an integer"):
        s.transact(fn)
    assert s.get_many(["n", "m"]) == {"n": "abc", "m": "1"}
    s.set("top", str(2**63 - 1))
    with pytest.raises(ValueError, match="overflow"):
        s.transact(lambda tx: tx.incr("top"))
    assert s.transact(lambda tx: tx.incr("top", -1)) == 2**63 - 2


# -- where tx may be used --------------------------------------------------------------


def test_tx_is_valid_only_inside_the_call_and_its_thread(state_env: Any) -> None:
    s = state_env.STATE
    kept: list[Transaction] = []
    elsewhere: list[BaseException] = []

    def fn(tx: Transaction) -> None:
        kept.append(tx)

        def other() -> None:
            try:
                tx.get("k")
            except BaseException as exc:
                elsewhere.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()

    s.transact(fn)
    assert len(elsewhere) == 1 and isinstance(elsewhere[0], RuntimeError)
    for call in (
        lambda tx: tx.get("k"),
        lambda tx: tx.set("k", "v"),
        lambda tx: tx.list(),
        lambda tx: tx.get_many(["k"]),
        lambda tx: tx.incr("k"),
    ):
        with pytest.raises(RuntimeError, match="usable only inside the function"):
            call(kept[0])
    assert s.get("k") is None


@pytest.mark.parametrize(
    "inner",
    [
        "STATE.get",  # the fast path, on a cursor the binding cached
        "STATE.set",
        "STATE.delete",
        "STATE.transact",
        "ALIAS_STATE.get",  # another binding on the same resource
        "USER_STATE.set",  # another resource on the same database
        "STATE.connection",
    ],
)
def test_bindings_on_the_same_database_refuse_inside_a_transaction(
    state_env: Any, inner: str
) -> None:
    s = state_env.STATE
    s.set("k", "v")
    assert s.get("k") == "v"  # the fast path is warm
    name, op = inner.split(".")
    calls: dict[str, Callable[[Any], Any]] = {
        "get": lambda b: b.get("k"),
        "set": lambda b: b.set("k", "inner"),
        "delete": lambda b: b.delete("k"),
        "transact": lambda b: b.transact(lambda tx: tx.set("k", "nested")),
        "connection": lambda b: b.connection(),
    }

    def fn(tx: Transaction) -> None:
        tx.set("k", "outer")
        calls[op](getattr(g.env, name))

    with pytest.raises(RuntimeError, match="use only its argument"):
        s.transact(fn)
    assert s.get("k") == "v"
    assert state_env.USER_STATE.get("k") is None
    # Everything works again afterwards, fast path included.
    s.set("k", "after")
    assert (s.get("k"), state_env.ALIAS_STATE.get("k")) == ("after", "after")
    assert s.transact(lambda tx: tx.get("k")) == "after"
    assert s.get("k") == "after"


BAD_TX_CALLS: list[tuple[Callable[[Transaction], Any], type[Exception], str]] = [
    (lambda tx: tx.get(1), TypeError, "key must be str, not int"),
    (lambda tx: tx.get(""), ValueError, "must not be empty"),
    (lambda tx: tx.get("k" * 513), ValueError, "513 bytes"),
    (lambda tx: tx.set("k", 5), TypeError, "value must be str, not int.*json.dumps"),
    (lambda tx: tx.set("k", None), TypeError, "not NoneType"),
    (lambda tx: tx.set("k", "\ud800"), ValueError, "surrogate"),
    (lambda tx: tx.delete(["k"]), TypeError, "key must be str, not list"),
    (lambda tx: tx.incr("k", 1.5), TypeError, "amount must be int"),
    (lambda tx: tx.incr("k", 2**64), ValueError, "64-bit"),
    (lambda tx: tx.get_many("k"), TypeError, "iterable of str"),
    (lambda tx: tx.get_many(["k", 1]), TypeError, "key must be str"),
    (lambda tx: tx.update("k", None), TypeError, "must be a dict"),
    (lambda tx: tx.update("doc", {"$rename": {"a": "b"}}), ValueError, "unknown update operator"),
    (lambda tx: tx.list(limit=0), ValueError, "between 1 and 1000"),
    (lambda tx: tx.list(5), TypeError, "prefix must be str"),
    (lambda tx: tx.list(cursor=5), TypeError, "cursor must be str"),
]


@pytest.mark.parametrize(("call", "exc", "match"), BAD_TX_CALLS)
def test_bad_arguments_in_a_transaction_raise_and_write_nothing(
    state_env: Any, call: Callable[[Transaction], Any], exc: type[Exception], match: str
) -> None:
    s = state_env.STATE
    s.set_many({"k": "before", "doc": "{}"})

    def fn(tx: Transaction) -> None:
        tx.set("k", "written?")
        with pytest.raises(exc, match=match):  # at the call, as the binding's
            call(tx)
        raise KeyError("done")

    with pytest.raises(KeyError, match="done"):
        s.transact(fn)
    assert dict(s.items()) == {"k": "before", "doc": "{}"}


def test_transact_inside_a_load_is_refused(state_env: Any) -> None:
    s = state_env.STATE

    def pairs() -> Any:
        yield "a", "1"
        s.transact(lambda tx: tx.set("b", "2"))
        yield "c", "3"

    with pytest.raises(RuntimeError, match="while another State operation ran"):
        s.load(pairs())
    assert s.list().keys == []
    s.load([("a", "1")])
    assert s.transact(lambda tx: tx.get("a")) == "1"


def test_transact_needs_a_function(state_env: Any) -> None:
    with pytest.raises(TypeError, match="needs a function"):
        state_env.STATE.transact("not callable")


# -- conflicts: the outcome of some serial order ------------------------------------------


def _together(
    app: Flask, first: Callable[[Any], Any], second: Callable[[Any], Any]
) -> tuple[Any, Any]:
    """Run *first* and *second* in two app contexts at once; their results."""
    results: list[Any] = [None, None]
    errors: list[BaseException] = []

    def run(i: int, op: Callable[[Any], Any]) -> None:
        try:
            with app.app_context():
                results[i] = op(g.env.STATE)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, op)) for i, op in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return results[0], results[1]


class Meet:
    """Two transactions that read, then wait for each other (0.5 s at most,
    first run only), then write."""

    def __init__(self) -> None:
        self.read = [threading.Event(), threading.Event()]
        self.runs = [0, 0]

    def point(self, i: int) -> None:
        self.runs[i] += 1
        if self.runs[i] == 1:
            self.read[i].set()
            self.read[1 - i].wait(0.5)


@pytest.mark.parametrize("other", ["incr", "set", "replace", "transact"])
def test_a_write_that_comes_between_is_never_lost(
    state_app: Flask, state_env: Any, state_url: str, other: str
) -> None:
    state_env.STATE.set("n", "10")
    meet = Meet()

    def add_one(s: Any) -> None:
        def fn(tx: Transaction) -> None:
            n = int(tx.get("n"))
            meet.point(0)
            tx.set("n", str(n + 1))

        s.transact(fn)

    def then_other(s: Any) -> None:
        meet.read[0].wait(5)
        if other == "incr":
            s.incr("n", 100)
        elif other == "set":
            s.set("n", "110")  # what the incr gives: the serial outcome is the same
        elif other == "replace":
            while not s.replace("n", (n := s.get("n")), str(int(n) + 100)):
                pass
        else:
            s.transact(lambda tx: tx.incr("n", 100))
        meet.read[1].set()

    _together(state_app, add_one, then_other)
    assert state_env.STATE.get("n") in ("111", "110" if other == "set" else "111")
    if other != "set":
        assert state_env.STATE.get("n") == "111"
    if state_url.startswith("postgresql"):
        assert meet.runs[0] == 2  # read without locks; the conflict retried it


def test_write_skew_on_keys_that_do_not_exist_yet(state_app: Flask, state_env: Any) -> None:
    """Each sets its key only if the other's is absent: never both."""
    meet = Meet()

    def claim(i: int, mine: str, theirs: str) -> Callable[[Any], bool]:
        def fn(tx: Transaction) -> bool:
            free = tx.get(theirs) is None
            meet.point(i)
            if free:
                tx.set(mine, "on call")
            return free

        return lambda s: s.transact(fn)

    got = _together(state_app, claim(0, "a", "b"), claim(1, "b", "a"))
    assert sorted(got) == [False, True]
    assert len(state_env.STATE.list().keys) == 1


def test_phantoms_in_a_listed_range(state_app: Flask, state_env: Any) -> None:
    """Each takes the lock only if no key under ``lock:`` exists: one wins."""
    state_env.STATE.set_many({"lo": "x", "lock": "x", "lock;": "x"})  # around the range
    meet = Meet()

    def take(i: int) -> Callable[[Any], bool]:
        def fn(tx: Transaction) -> bool:
            free = not tx.list("lock:").keys
            meet.point(i)
            if free:
                tx.set(f"lock:{i}", "mine")
            return free

        return lambda s: s.transact(fn)

    got = _together(state_app, take(0), take(1))
    assert sorted(got) == [False, True]
    assert len(state_env.STATE.list("lock:").keys) == 1


def test_a_caught_database_error_still_fails_the_transaction(
    make_app: Any, server_state_url: str, state_table: str
) -> None:
    """The function catches the error of a read that waited too long, and
    returns: the transaction is failed anyway, retried, then given up."""
    url = server_state_url
    timeout = 1.3
    app = make_app(
        PLOY_STATE_URL=url, PLOY_STATE_TABLE=state_table, PLOY_STATE_BUSY_TIMEOUT=timeout
    )
    caught: list[BaseException] = []

    def fn(tx: Transaction) -> str:
        tx.set("x", "written?")
        try:
            tx.get("k")
        except Exception as exc:
            caught.append(exc)
        return "swallowed"

    with app.app_context():
        s = g.env.STATE
        s.clear()
        s.set("k", "v")
        for _ in range(3):  # a loaded machine's scheduling adds to one measurement
            caught.clear()
            with table_locked(url, state_table):
                start = time.monotonic()
                with pytest.raises(StateUnavailable, match="PLOY_STATE_BUSY_TIMEOUT"):
                    s.transact(fn)
                elapsed = time.monotonic() - start
            if elapsed <= timeout + 0.05:
                break
        assert caught
        assert timeout - 0.02 <= elapsed <= timeout + 0.05, elapsed
        assert s.get("x") is None


# -- replace ---------------------------------------------------------------------------------


def test_replace_is_compare_and_set(state_env: Any) -> None:
    s = state_env.STATE
    assert s.replace("flag", "off", "on") is False  # absent is not "off"
    assert s.get("flag") is None
    assert s.replace("flag", None, "off") is True  # None: only if absent
    assert s.replace("flag", None, "other") is False
    assert s.replace("flag", "on", "x") is False
    assert s.get("flag") == "off"
    assert s.replace("flag", "off", "on") is True
    assert s.get("flag") == "on"
    assert s.replace("flag", "on", "on") is True  # only reads
    assert s.replace("flag", "off", "off") is False
    assert s.replace("missing", "", "") is False
    s.set("empty", "")
    assert s.replace("empty", None, "x") is False  # "" is a value, not absence
    assert s.replace("empty", "", "x") is True
    assert s.get("empty") == "x"


@pytest.mark.parametrize(
    ("stored", "expected"),
    [("a", "a "), ("a", "A"), ("a ", "a"), ("a", "a\x00"), ("e", "é"), ("日本", "日"), ("1", "01")],
)
def test_replace_compares_exactly(state_env: Any, stored: str, expected: str) -> None:
    s = state_env.STATE
    s.set("k", stored)
    assert s.replace("k", expected, "new") is False
    assert s.get("k") == stored
    assert s.replace("k", stored, "new") is True
    assert s.get("k") == "new"


def test_replace_of_large_and_odd_values(state_env: Any) -> None:
    s = state_env.STATE
    big = "x" * 200_000 + "\x00é"
    s.set("k", big)
    assert s.replace("k", big[:-1], "no") is False
    assert s.replace("k", big, big + "!") is True
    assert s.get("k") == big + "!"


def test_an_optimistic_replace_loop_never_loses_an_increment(
    state_app: Flask, state_env: Any
) -> None:
    state_env.STATE.set("n", "0")
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with state_app.app_context():
                s = g.env.STATE
                for _ in range(25):
                    while True:
                        old = s.get("n")
                        if s.replace("n", old, str(int(old) + 1)):
                            break
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert state_env.STATE.get("n") == "100"


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        ((1, "a", "b"), TypeError, "key must be str"),
        (("", "a", "b"), ValueError, "must not be empty"),
        (("k", 1, "b"), TypeError, "value must be str, not int"),
        (("k", b"a", "b"), TypeError, "not bytes"),
        (("k", "a", None), TypeError, "not NoneType"),
        (("k", None, 5), TypeError, "value must be str, not int"),
        (("k", "v", "\ud800"), ValueError, "surrogate"),
    ],
)
def test_replace_bad_arguments(
    state_env: Any, args: tuple[Any, ...], exc: type[Exception], match: str
) -> None:
    s = state_env.STATE
    s.set("k", "v")
    with pytest.raises(exc, match=match):
        s.replace(*args)
    assert s.get("k") == "v"
