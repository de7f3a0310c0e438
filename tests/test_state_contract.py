"""The state contract: every test runs on SQLite, PostgreSQL and MariaDB
(see ``state_url`` in conftest)."""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import pytest
from flask import g

from .test_cache_contract import ODD_STRINGS


def test_get_missing_is_none(state_env: Any) -> None:
    assert state_env.STATE.get("missing") is None


@pytest.mark.parametrize("value", ODD_STRINGS + ["x" * 100_000])
def test_set_get_round_trip(state_env: Any, value: str) -> None:
    state_env.STATE.set("k", value)
    assert state_env.STATE.get("k") == value


@pytest.mark.parametrize(
    "key", [s for s in ODD_STRINGS if s] + ["k" * 512, "é" * 256, "\U0010ffff"]
)
def test_odd_keys(state_env: Any, key: str) -> None:
    s = state_env.STATE
    s.set(key, "v")
    assert s.get(key) == "v"
    assert s.get_many([key]) == {key: "v"}
    assert s.list(key).keys == [key]
    assert s.delete(key) is True
    assert s.get(key) is None


def test_set_overwrites_and_delete(state_env: Any) -> None:
    s = state_env.STATE
    s.set("k", "one")
    s.set("k", "two")
    assert s.get("k") == "two"
    assert s.delete("k") is True
    assert s.delete("k") is False
    assert s.get("k") is None


def test_keys_are_case_sensitive_and_exact(state_env: Any) -> None:
    s = state_env.STATE
    s.set("Key", "upper")
    s.set("key", "lower")
    s.set("key ", "trailing space")
    assert (s.get("Key"), s.get("key"), s.get("key ")) == ("upper", "lower", "trailing space")


def test_state_survives_a_new_app(make_app: Any, state_url: str, state_table: str) -> None:
    first = make_app(PLOY_STATE_URL=state_url, PLOY_STATE_TABLE=state_table)
    with first.app_context():
        g.env.STATE.set("durable", "yes")
    first.extensions["ploy"].app_bindings(first).close()
    second = make_app(PLOY_STATE_URL=state_url, PLOY_STATE_TABLE=state_table)
    with second.app_context():
        assert g.env.STATE.get("durable") == "yes"
        g.env.STATE.delete("durable")


def test_incr(state_env: Any) -> None:
    s = state_env.STATE
    assert s.incr("n") == 1
    assert s.incr("n", 41) == 42
    assert s.incr("n", -50) == -8
    assert s.get("n") == "-8"
    s.set("preset", "9")
    assert s.incr("preset") == 10


def test_incr_64bit_limits(state_env: Any) -> None:
    s = state_env.STATE
    s.set("top", str(2**63 - 2))
    assert s.incr("top") == 2**63 - 1
    with pytest.raises(ValueError, match="overflow"):
        s.incr("top")
    assert s.get("top") == str(2**63 - 1)
    s.set("bottom", str(-(2**63) + 1))
    assert s.incr("bottom", -1) == -(2**63)
    with pytest.raises(ValueError, match="overflow"):
        s.incr("bottom", -1)
    assert s.get("bottom") == str(-(2**63))


@pytest.mark.parametrize(
    "value", ["abc", "1.5", "007", " 5", "+5", "-0", "", "1e3", str(2**63), "5\x00"]
)
def test_incr_refuses_a_non_integer_and_leaves_it(state_env: Any, value: str) -> None:
    state_env.STATE.set("k", value)
    with pytest.raises(ValueError, match="not an integer"):
        state_env.STATE.incr("k")
    assert state_env.STATE.get("k") == value


def test_incr_is_atomic_across_threads(state_app: Any, state_env: Any) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with state_app.app_context():
                for _ in range(50):
                    g.env.STATE.incr("hits")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert state_env.STATE.get("hits") == "200"


def test_add(state_env: Any) -> None:
    s = state_env.STATE
    assert s.add("k", "first") is True
    assert s.add("k", "second") is False
    assert s.get("k") == "first"


def test_get_many_set_many_delete_many(state_env: Any) -> None:
    s = state_env.STATE
    s.set_many({"a": "1", "b": "2", "c": "3"})
    assert s.get_many(["a", "b", "zz", "a"]) == {"a": "1", "b": "2", "zz": None}
    assert s.get_many([]) == {}
    assert s.delete_many(["a", "zz", "a"]) == 1
    assert s.get_many(["a", "b"]) == {"a": None, "b": "2"}
    assert s.delete_many([]) == 0
    s.set_many({})


def test_bulk_operations_span_chunks(state_env: Any) -> None:
    s = state_env.STATE
    data = {f"k{i:05d}": f"v{i}" for i in range(1234)}
    s.set_many(data)
    assert s.get_many(list(data)) == data
    assert s.count() == 1234
    assert s.delete_many(list(data)[:1100]) == 1100
    assert s.count() == 134


def test_set_many_is_all_or_nothing(state_env: Any) -> None:
    s = state_env.STATE
    with pytest.raises(TypeError):
        s.set_many({"a": "1", "b": 2})
    with pytest.raises(ValueError):
        s.set_many({"a": "1", "b": "\ud800"})
    assert s.get_many(["a", "b"]) == {"a": None, "b": None}


def test_list_orders_and_pages(state_env: Any) -> None:
    s = state_env.STATE
    keys = [f"user:{i:03d}" for i in range(25)] + ["other", "user", "usex"]
    s.set_many({k: "v" for k in keys})
    page = s.list("user:", limit=10)
    assert page.keys == [f"user:{i:03d}" for i in range(10)]
    assert page.cursor == "user:009"
    seen = list(page.keys)
    while page.cursor is not None:
        page = s.list("user:", limit=10, cursor=page.cursor)
        seen += page.keys
    assert seen == [f"user:{i:03d}" for i in range(25)]
    assert page.list_complete
    assert s.list().keys == sorted(keys)
    assert s.list(limit=1000).cursor is None


def test_list_last_full_page_has_no_cursor(state_env: Any) -> None:
    s = state_env.STATE
    s.set_many({f"k{i}": "v" for i in range(10)})
    assert s.list(limit=10).cursor is None
    assert s.list(limit=9).cursor == "k8"


def test_list_prefix_is_literal(state_env: Any) -> None:
    s = state_env.STATE
    s.set_many({"a%b": "1", "a_b": "1", "axb": "1", "a%c": "1", "a": "1", "b": "1"})
    assert s.list("a%").keys == ["a%b", "a%c"]
    assert s.list("a_").keys == ["a_b"]
    assert s.list("a").keys == ["a", "a%b", "a%c", "a_b", "axb"]


def test_list_orders_bytewise(state_env: Any) -> None:
    s = state_env.STATE
    keys = ["B", "a", "Z", "é", "e", "\x01", "~", "日本", "🎉", "ab", "a b"]
    s.set_many({k: "v" for k in keys})
    assert s.list().keys == sorted(keys, key=lambda k: k.encode())
    assert s.list("\U0001f389").keys == ["🎉"]


def test_list_sees_every_key_once_under_random_paging(state_env: Any) -> None:
    s = state_env.STATE
    rnd = random.Random(7)
    keys = {"".join(rnd.choice("ab%_:é\x00") for _ in range(rnd.randint(1, 6))) for _ in range(300)}
    s.set_many({k: "v" for k in keys})
    seen: list[str] = []
    cursor = None
    while True:
        page = s.list(limit=rnd.randint(1, 40), cursor=cursor)
        seen += page.keys
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == sorted(keys, key=lambda k: k.encode())


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"limit": 0}, ValueError, "between 1 and 1000"),
        ({"limit": 1001}, ValueError, "between 1 and 1000"),
        ({"limit": "5"}, TypeError, "limit must be int"),
        ({"limit": True}, TypeError, "limit must be int"),
        ({"prefix": 5}, TypeError, "prefix must be str"),
        ({"cursor": 5}, TypeError, "cursor must be str"),
    ],
)
def test_list_bad_arguments(
    state_env: Any, kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        state_env.STATE.list(**kwargs)


def test_update_of_a_missing_key_writes_nothing(state_env: Any) -> None:
    # As on Ploy: update is an UPDATE of an existing row.
    s = state_env.STATE
    assert s.update("doc", {"$set": {"a": 1}}) is None
    assert s.get("doc") is None
    assert s.list().keys == []


def test_update_operators(state_env: Any) -> None:
    s = state_env.STATE
    s.set("doc", "{}")
    out = s.update("doc", {"$set": {"name": "Alice", "prefs.theme": "dark"}, "$inc": {"visits": 1}})
    assert json.loads(out) == {"name": "Alice", "prefs": {"theme": "dark"}, "visits": 1}
    assert s.get("doc") == out
    out = s.update(
        "doc", {"$inc": {"visits": 2.5}, "$push": {"tags": "a"}, "$unset": {"name": True}}
    )
    assert json.loads(out) == {"prefs": {"theme": "dark"}, "visits": 3.5, "tags": ["a"]}
    s.update("doc", {"$push": {"tags": "b"}})
    s.update("doc", {"$push": {"tags": "c"}})
    assert json.loads(s.update("doc", {"$pop": {"tags": -1}}))["tags"] == ["b", "c"]
    assert json.loads(s.update("doc", {"$pop": {"tags": 1}}))["tags"] == ["b"]
    assert json.loads(s.update("doc", {"$pop": {"missing": 1}, "$unset": {"nope.deeper": ""}}))[
        "tags"
    ] == ["b"]


@pytest.mark.parametrize(
    ("stored", "ops", "exc", "match"),
    [
        ('"just a string"', {"$set": {"a": 1}}, ValueError, "not a JSON object"),
        ("[1, 2]", {"$set": {"a": 1}}, ValueError, "not a JSON object"),
        ("not json", {"$set": {"a": 1}}, ValueError, "not a JSON object"),
        ('{"a": "x"}', {"$inc": {"a": 1}}, ValueError, "not a number"),
        ('{"a": 1}', {"$push": {"a": 1}}, ValueError, "not an array"),
        ('{"a": 1}', {"$pop": {"a": 1}}, ValueError, "not an array"),
        ('{"a": 1}', {"$set": {"a.b": 1}}, ValueError, "'a' is not an object"),
        ('{"a": 1}', {"$rename": {"a": "b"}}, ValueError, "unknown update operator"),
        ('{"a": 1}', {}, ValueError, "at least one operator"),
        ('{"a": 1}', {"$set": {}}, TypeError, "non-empty dict"),
        ('{"a": 1}', {"$set": {"": 1}}, ValueError, "non-empty str"),
        ('{"a": 1}', {"$set": {"a..b": 1}}, ValueError, "empty segment"),
        ('{"a": 1}', {"$inc": {"a": "1"}}, ValueError, "finite number"),
        ('{"a": 1}', {"$inc": {"a": True}}, ValueError, "finite number"),
        ('{"a": 1}', {"$pop": {"a": 2}}, ValueError, "1 \\(last\\) or -1"),
        ('{"a": 1}', {"$set": {"a": 1}, "$inc": {"a": 1}}, ValueError, "conflicts"),
        ('{"a": 1}', {"$set": {"a": {1, 2}}}, TypeError, "not JSON-serializable"),
        ('{"a": 1}', "$set", TypeError, "must be a dict"),
    ],
)
def test_update_refuses_and_changes_nothing(
    state_env: Any, stored: str, ops: Any, exc: type[Exception], match: str
) -> None:
    state_env.STATE.set("doc", stored)
    with pytest.raises(exc, match=match):
        state_env.STATE.update("doc", ops)
    assert state_env.STATE.get("doc") == stored


def test_update_is_atomic_across_threads(state_app: Any, state_env: Any) -> None:
    state_env.STATE.set("doc", "{}")

    def worker(i: int) -> None:
        with state_app.app_context():
            for _ in range(20):
                g.env.STATE.update("doc", {"$inc": {"n": 1}, "$push": {f"t{i}": 1}})

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    doc = json.loads(state_env.STATE.get("doc"))
    assert doc["n"] == 80
    assert all(len(doc[f"t{i}"]) == 20 for i in range(4))


def test_resources_are_separate(state_env: Any) -> None:
    state_env.STATE.set("user:abc", "general")
    assert state_env.USER_STATE.get("user:abc") is None
    state_env.USER_STATE.set("user:abc", "user")
    assert state_env.STATE.get("user:abc") == "general"
    assert state_env.USER_STATE.list().keys == ["user:abc"]
    assert state_env.STATE.delete_many(["user:abc"]) == 1
    assert state_env.USER_STATE.get("user:abc") == "user"


def test_bindings_on_one_resource_share_data(state_env: Any) -> None:
    state_env.STATE.set("shared", "yes")
    assert state_env.ALIAS_STATE.get("shared") == "yes"


BAD_CALLS: list[tuple[str, tuple[Any, ...], type[Exception], str]] = [
    ("get", (1,), TypeError, "key must be str, not int"),
    ("get", ("",), ValueError, "must not be empty"),
    ("get", ("k" * 513,), ValueError, "513 bytes"),
    ("set", ("k", 5), TypeError, "value must be str, not int.*json.dumps"),
    ("set", ("k", b"x"), TypeError, "not bytes"),
    ("set", ("k", None), TypeError, "not NoneType"),
    ("set", ("k", {"a": 1}), TypeError, "not dict"),
    ("set", ("k", "\ud800"), ValueError, "surrogate"),
    ("set", (None, "v"), TypeError, "key must be str"),
    ("delete", (["k"],), TypeError, "key must be str, not list"),
    ("incr", ("k", 1.5), TypeError, "amount must be int"),
    ("incr", ("k", 2**64), ValueError, "64-bit"),
    ("add", ("k", 3), TypeError, "value must be str"),
    ("get_many", ("k",), TypeError, "iterable of str"),
    ("set_many", ({"a": 1},), TypeError, "value must be str"),
    ("delete_many", ([1],), TypeError, "key must be str"),
    ("update", ("k", None), TypeError, "must be a dict"),
]


@pytest.mark.parametrize(("op", "args", "exc", "match"), BAD_CALLS)
def test_bad_input_raises_and_writes_nothing(
    state_env: Any, op: str, args: tuple[Any, ...], exc: type[Exception], match: str
) -> None:
    state_env.STATE.set("k", "before")
    with pytest.raises(exc, match=match):
        getattr(state_env.STATE, op)(*args)
    assert state_env.STATE.get("k") == "before"
    assert state_env.STATE.list().keys == ["k"]


def test_value_size_limit(make_app: Any, state_url: str, state_table: str) -> None:
    app = make_app(PLOY_STATE_URL=state_url, PLOY_STATE_TABLE=state_table, PLOY_MAX_VALUE_BYTES=64)
    with app.app_context():
        s = g.env.STATE
        s.clear()
        s.set("k", "x" * 64)
        with pytest.raises(ValueError, match="65 bytes.*PLOY_MAX_VALUE_BYTES"):
            s.set("k", "x" * 65)
        s.set("k2", "{}")
        with pytest.raises(ValueError, match="PLOY_MAX_VALUE_BYTES"):
            s.update("k2", {"$set": {"a": "x" * 80}})
        assert s.get("k") == "x" * 64
        assert s.get("k2") == "{}"


def test_load_and_items(state_env: Any) -> None:
    s = state_env.STATE
    s.set("old", "x")
    assert s.load([("a", "1"), ("b", "2")]) == 2
    assert dict(s.items()) == {"a": "1", "b": "2", "old": "x"}
    assert s.load([("c", "3")], replace=True) == 1
    assert dict(s.items()) == {"c": "3"}
    with pytest.raises(TypeError):
        s.load([("d", "4"), ("e", 5)], replace=True)
    assert dict(s.items()) == {"c": "3"}


def test_items_pages_through_everything(state_env: Any) -> None:
    data = {f"k{i:04d}": str(i) for i in range(2500)}
    state_env.STATE.set_many(data)
    assert list(state_env.STATE.items(page_size=1000)) == sorted(data.items())
    assert list(state_env.STATE.items("k00", page_size=7)) == [
        (k, v) for k, v in sorted(data.items()) if k.startswith("k00")
    ]


def _conflict(state_url: str) -> Exception:
    """The error each driver raises when the database asks for a retry (a deadlock)."""
    if state_url.startswith("sqlite"):
        import sqlite3

        return sqlite3.OperationalError("database is locked")
    if state_url.startswith("postgresql"):
        import psycopg

        return psycopg.errors.DeadlockDetected("deadlock detected")
    import pymysql

    return pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock")


def test_load_of_a_one_shot_iterator_is_never_half_retried(state_env: Any, state_url: str) -> None:
    from flask_ploy import StateUnavailable

    s = state_env.STATE
    s.set("keep", "me")

    def pairs() -> Any:
        yield "a", "1"
        yield "b", "2"
        raise _conflict(state_url)  # as if the database reported a deadlock mid-load

    with pytest.raises(StateUnavailable, match="lock conflict.*nothing was written"):
        s.load(pairs(), replace=True)
    assert dict(s.items()) == {"keep": "me"}


def test_update_of_deeply_nested_json_is_a_value_error(state_env: Any) -> None:
    """Not the database's failure (it was reported as StateUnavailable, a 503)."""
    s = state_env.STATE
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    s.set("deep", deep)
    with pytest.raises(ValueError, match="nested too deeply"):
        s.update("deep", {"$set": {"b": 1}})
    nested: Any = 1
    for _ in range(100_000):
        nested = [nested]
    s.set("doc", "{}")
    with pytest.raises(ValueError, match="nested too deeply"):
        s.update("doc", {"$set": {"b": nested}})
    assert s.get("deep") == deep and s.get("doc") == "{}"
    with pytest.raises(ValueError, match="over 100 segments"):
        s.update("doc", {"$set": {".".join(["a"] * 1500): 1}})
    with pytest.raises(ValueError, match="over 100 segments"):
        s.update("doc", {"$set": {"a" + "[0]" * 200: 1}})
    s.update("doc", {"$set": {".".join(["a"] * 100): 1}})  # the most there may be
    s.set("huge", '{"n": ' + "9" * 5000 + "}")
    with pytest.raises(ValueError, match="cannot be decoded"):
        s.update("huge", {"$set": {"b": 1}})
    assert s.get("huge") == '{"n": ' + "9" * 5000 + "}"


class _Interrupt(BaseException):
    """Like KeyboardInterrupt or gevent.Timeout: not an Exception."""


def test_exceptions_that_are_not_the_databases_propagate_unchanged(state_env: Any) -> None:
    s = state_env.STATE
    s.set("keep", "me")

    def pairs(error: BaseException) -> Any:
        yield "a", "1"
        raise error

    for error in (_Interrupt("stop"), RecursionError("deep"), KeyError("x")):
        with pytest.raises(type(error)) as info:
            s.load(pairs(error))
        assert info.value is error  # the very exception, not a StateUnavailable
        assert dict(s.items()) == {"keep": "me"}  # rolled back
    s.set("after", "ok")  # the connection is usable (or was replaced)
    assert s.get("after") == "ok"


# -- Ploy's put options: metadata and expiry (@meetploy/types 1.18) -------------------


def _write_expired(state: Any, key: str, value: str, metadata: str | None = None) -> None:
    """Write a row of *key* that expired a second ago, with the dialect's own
    ``put`` statement on the binding's connection (ttl is at least 1 s)."""
    import time

    from flask import current_app

    store = current_app.extensions["ploy"].state_store(state.name)
    dialect = store.dialect
    enc = (lambda s: s.encode()) if dialect.binary else (lambda s: s)
    cur = state.connection().cursor()
    cur.execute(dialect.put, (state.resource, enc(key), enc(value), metadata, time.time() - 1))
    cur.close()


def test_set_with_metadata_and_get_with_metadata(state_env: Any) -> None:
    s = state_env.STATE
    meta = {"owner": "ann", "n": 3, "tags": ["a", "é"], "nested": {"ok": True, "x": None}}
    s.set("k", "v", metadata=meta)
    assert s.get("k") == "v"
    assert s.get_with_metadata("k") == ("v", meta)
    value, got = s.get_with_metadata("k")
    assert (value, got) == ("v", meta)
    assert s.get_with_metadata("missing") == (None, None)
    s.set("k", "w")  # a set without options replaces the whole entry, as Ploy's put
    assert s.get_with_metadata("k") == ("w", None)
    s.put("p", "1", metadata={"a": 1})
    assert s.get_with_metadata("p").metadata == {"a": 1}


def test_get_of_a_list_is_get_many(state_env: Any) -> None:
    s = state_env.STATE
    s.set("a", "1")
    s.set("b", "2", ttl=60)
    assert s.get(["a", "b", "zz"]) == {"a": "1", "b": "2", "zz": None}
    assert s.get(("a",)) == {"a": "1"}
    assert s.get([]) == {}


def test_list_entries_carry_metadata_and_expiration(state_env: Any) -> None:
    import time

    s = state_env.STATE
    before = time.time()
    s.set("a", "1", metadata={"m": 1})
    s.set("b", "2", ttl=100)
    s.set("c", "3", expires_at=before + 500.5, metadata={"m": 3})
    s.set("d", "4")
    page = s.list_entries(limit=2)
    assert page.keys == ["a", "b"] and page.cursor == "b" and not page.list_complete
    a, b = page.entries
    assert (a.key, a.metadata, a.expiration) == ("a", {"m": 1}, None)
    assert b.metadata is None and b.expiration is not None
    assert before + 100 <= b.expiration <= time.time() + 100
    rest = s.list_entries(cursor=page.cursor)
    assert rest.list_complete and [tuple(e) for e in rest.entries] == [
        ("c", {"m": 3}, before + 500.5),
        ("d", None, None),
    ]
    assert s.list().keys == ["a", "b", "c", "d"]  # list keeps its shape: names only
    assert tuple(next(s.entries())) == ("a", "1", {"m": 1}, None)


def test_expired_keys_are_absent_from_every_read(state_env: Any) -> None:
    s = state_env.STATE
    s.set("live", "1")
    _write_expired(s, "dead", "2", '{"m":1}')
    _write_expired(s, "n", "5")
    assert s.get("dead") is None
    assert s.get_with_metadata("dead") == (None, None)
    assert s.get_many(["dead", "live"]) == {"dead": None, "live": "1"}
    assert s.list().keys == ["live"]
    assert s.list_entries().keys == ["live"]
    assert list(s.items()) == [("live", "1")]
    assert [e.key for e in s.entries()] == ["live"]
    assert s.count() == 1
    assert s.update("dead", {"$set": {"a": 1}}) is None
    assert s.replace("dead", "2", "3") is False
    assert s.incr("n") == 1  # counts from 0, and the entry is a new one
    assert s.get_with_metadata("n") == ("1", None)
    assert s.add("dead", "new") is True
    assert s.get_with_metadata("dead") == ("new", None)
    _write_expired(s, "word", "not a number")
    assert s.incr("word", 3) == 3  # an expired non-integer is absent too
    _write_expired(s, "top", "9223372036854775807")  # the database refuses to add 1
    assert s.incr("top") == 1
    _write_expired(s, "bottom", "-9223372036854775808")
    assert s.incr("bottom", -1) == -1
    _write_expired(s, "lock", "other")
    assert s.replace("lock", None, "me") is True and s.get("lock") == "me"
    with pytest.raises(ValueError, match="not an integer"):
        s.incr("lock")  # a live non-integer still is an error
    assert s.get("lock") == "me"
    s.delete_many(["word", "lock", "top", "bottom"])

    def fn(tx: Any) -> Any:
        return tx.get("gone"), tx.get_many(["gone"]), tx.list().keys

    _write_expired(s, "gone", "x")
    assert s.transact(fn) == (None, {"gone": None}, ["dead", "live", "n"])


def test_ttl_expires_for_real(state_env: Any) -> None:
    import time

    s = state_env.STATE
    s.set("short", "v", ttl=1, metadata={"a": 1})
    s.set("long", "v", ttl=3600)
    assert s.get("short") == "v"
    time.sleep(1.1)
    assert s.get("short") is None
    assert s.get("long") == "v"
    assert s.count() == 1
    assert s.purge_expired() == 1  # the row was still there, invisible
    assert s.purge_expired() == 0
    assert s.get("long") == "v"


def test_purge_expired_is_bounded_and_leaves_live_keys(state_env: Any) -> None:
    s = state_env.STATE
    s.set("keep", "1", ttl=3600)  # before: a write with an expiry may purge a batch itself
    s.set("forever", "2")
    for i in range(7):
        _write_expired(s, f"d{i}", "x")
    assert s.purge_expired(limit=3) == 3
    assert s.purge_expired() == 4
    assert sorted(k for k, _ in s.items()) == ["forever", "keep"]
    with pytest.raises(ValueError, match="positive"):
        s.purge_expired(limit=0)


def test_writes_with_an_expiry_purge_a_bounded_batch(state_env: Any) -> None:
    from flask import current_app

    s = state_env.STATE
    store = current_app.extensions["ploy"].state_store("STATE")
    for i in range(3):
        _write_expired(s, f"d{i}", "x")
    store.purge_due(full=True)  # as after a full batch: the next expiring write purges
    s.set("plain", "1")  # a write without an expiry never purges (the hot path)
    assert s.purge_expired(limit=1) == 1
    s.set("k", "v", ttl=60)
    assert s.purge_expired() == 0
    assert sorted(k for k, _ in s.items()) == ["k", "plain"]


def test_incr_and_update_keep_metadata_and_expiry(state_env: Any) -> None:
    s = state_env.STATE
    s.set("n", "1", metadata={"kind": "counter"}, ttl=3600)
    assert s.incr("n") == 2
    assert s.get_with_metadata("n") == ("2", {"kind": "counter"})
    s.set("doc", "{}", metadata={"kind": "doc"})
    assert s.update("doc", {"$set": {"a": 1}}) == '{"a":1}'
    assert s.get_with_metadata("doc") == ('{"a":1}', {"kind": "doc"})
    assert s.replace("doc", '{"a":1}', "{}") is True  # a replace is a set
    assert s.get_with_metadata("doc") == ("{}", None)
    assert s.list_entries("n").entries[0].expiration is not None


def test_transaction_writes_metadata_and_expiry(state_env: Any) -> None:
    s = state_env.STATE
    s.set("c", "1", metadata={"k": "c"})

    def fn(tx: Any) -> None:
        tx.set("a", "1", metadata={"x": 1}, ttl=3600)
        tx.put("b", "2")
        tx.incr("c")

    s.transact(fn)
    assert s.get_with_metadata("a") == ("1", {"x": 1})
    assert s.list_entries("a").entries[0].expiration is not None
    assert s.get_with_metadata("b") == ("2", None)
    assert s.get_with_metadata("c") == ("2", {"k": "c"})


BAD_OPTIONS = [
    ({"metadata": ["not", "a", "dict"]}, TypeError, "metadata of 'k' must be a dict"),
    ({"metadata": {"a": b"bytes"}}, TypeError, "metadata of 'k' is not JSON"),
    ({"metadata": {"a": (1, 2)}}, TypeError, "would not come back"),
    ({"metadata": {1: "int key"}}, TypeError, "would not come back"),
    ({"metadata": {"a": float("nan")}}, ValueError, "metadata of 'k' is not JSON"),
    ({"metadata": {"a": "x" * 1100}}, ValueError, "over the limit of 1024"),
    ({"metadata": {"a": "\ud800"}}, ValueError, "metadata of 'k'"),
    ({"ttl": 0}, ValueError, "set 'k': ttl must be at least 1"),
    ({"ttl": -5}, ValueError, "at least 1"),
    ({"ttl": 1.5}, TypeError, "ttl must be an int"),
    ({"ttl": True}, TypeError, "ttl must be an int"),
    ({"expires_at": 1.0}, ValueError, "set 'k': expires_at must be in the future"),
    ({"expires_at": float("inf")}, ValueError, "in the future"),
    ({"expires_at": "tomorrow"}, TypeError, "epoch seconds"),
    ({"ttl": 10, "expires_at": 4e9}, ValueError, "not both"),
]


@pytest.mark.parametrize(("options", "exc", "match"), BAD_OPTIONS)
def test_bad_options_raise_naming_the_key_and_write_nothing(
    state_env: Any, options: dict[str, Any], exc: type[Exception], match: str
) -> None:
    s = state_env.STATE
    s.set("k", "before", metadata={"m": 0})
    with pytest.raises(exc, match=match):
        s.set("k", "after", **options)
    with pytest.raises(exc, match=match):
        s.transact(lambda tx: tx.set("k", "after", **options))
    assert s.get_with_metadata("k") == ("before", {"m": 0})


def test_expires_at_takes_an_aware_datetime(state_env: Any) -> None:
    from datetime import datetime, timedelta, timezone

    s = state_env.STATE
    at = datetime.now(timezone.utc) + timedelta(hours=1)
    s.set("k", "v", expires_at=at)
    assert s.list_entries().entries[0].expiration == pytest.approx(at.timestamp())
    with pytest.raises(TypeError, match="timezone-aware"):
        s.set("k", "v", expires_at=datetime.now() + timedelta(hours=1))


def test_load_and_entries_round_trip_metadata_and_expiry(state_env: Any) -> None:
    import time

    s = state_env.STATE
    far = time.time() + 3600
    s.set("d", "live before the load")
    n = s.load(
        [("a", "1"), ("b", "2", {"m": 2}, None), ("c", "3", None, far), ("d", "4", None, 5.0)]
    )
    assert n == 3  # d had expired: written (it replaced the live d), not counted
    assert s.get("d") is None
    assert [tuple(e) for e in s.entries()] == [
        ("a", "1", None, None),
        ("b", "2", {"m": 2}, None),
        ("c", "3", None, far),
    ]
    with pytest.raises(TypeError, match="metadata of 'x'"):
        s.load([("x", "1", ["no"], None)])
    assert s.count() == 3


def test_purge_keeps_a_key_made_live_by_a_transaction_it_waited_for(
    state_app: Any, state_env: Any
) -> None:
    """A write rewrites expired keys (live again) in a transaction that holds
    their locks while purge_expired runs: purge waits, then keeps every one
    (PostgreSQL deleted all 200: the expiry was tested in a subquery only)."""
    import threading
    import time

    s = state_env.STATE
    for i in range(200):
        _write_expired(s, f"k{i:03}", "old")
    store = state_app.extensions["ploy"].state_store("STATE")
    dialect = store.dialect
    enc = (lambda t: t.encode()) if dialect.binary else (lambda t: t)
    raw = store.engine.raw_connection()
    cur = raw.cursor()
    if dialect.binary:  # a transaction of the driver's own
        cur.execute(dialect.sql("UPDATE " + dialect.t + " SET " + dialect.v + " = ?, "
                                + dialect.x + " = NULL WHERE resource = ?"),
                    (enc("live"), s.resource))  # fmt: skip
    else:
        cur.execute("BEGIN IMMEDIATE")
        cur.execute(
            f"UPDATE {dialect.t} SET {dialect.v} = ?, {dialect.x} = NULL WHERE resource = ?",
            ("live", s.resource),
        )
    committer = threading.Timer(0.5, raw.commit)
    committer.start()
    try:
        start = time.monotonic()
        assert s.purge_expired() == 0
        assert time.monotonic() - start >= 0.3  # it did wait for the writer
    finally:
        committer.join()
        cur.close()
        raw.close()
    assert s.count() == 200 and s.get("k000") == "live"
