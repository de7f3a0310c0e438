"""The cache contract, continued: what Flask-Caching users reach for (``has``,
``in``, ``ttl``, ``touch``, ``delete_many``, ``count``, a default TTL) and the
values that must read back exactly. Every test runs on every backend
(``cache_url`` in conftest: memory://, SQLite, Redis, Cluster, Sentinel)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from flask import g

from flask_ploy import CacheUnavailable

from .test_cache_contract import _open_breaker


def test_has_and_in(cache_env: Any) -> None:
    c = cache_env.CACHE
    c.set("k", "v")
    c.set("empty", "")
    c.set("brief", "v", ttl=1)
    assert c.has("k") and "k" in c and c.has("empty")
    assert not c.has("missing") and "missing" not in c
    assert not cache_env.SESSION_CACHE.has("k")  # another resource
    time.sleep(1.2)
    assert not c.has("brief") and "brief" not in c


def test_ttl(cache_env: Any) -> None:
    c = cache_env.CACHE
    c.set("hundred", "v", ttl=100)
    c.set("week", "v", ttl=timedelta(days=7))
    c.set("forever", "v")
    c.set("brief", "v", ttl=1)
    assert c.ttl("hundred") == 100  # rounded up: a live key never shows 0
    assert 7 * 86400 - 2 <= c.ttl("week") <= 7 * 86400
    assert c.ttl("forever") is None
    assert c.ttl("missing") == 0
    assert c.incr("n", ttl=30) == 1 and 29 <= c.ttl("n") <= 30
    time.sleep(1.2)
    assert c.ttl("brief") == 0 and c.ttl("hundred") == 99


def test_touch(cache_env: Any) -> None:
    c = cache_env.CACHE
    c.set("k", "v", ttl=1)
    assert c.touch("k", 100) is True
    assert c.ttl("k") == 100
    assert c.touch("k", None) is True  # no default TTL here: no expiry
    assert c.ttl("k") is None and c.get("k") == "v"
    assert c.touch("k", timedelta(seconds=1)) is True
    assert c.touch("missing", 10) is False and c.get("missing") is None
    time.sleep(1.2)
    assert c.touch("k", 10) is False  # expired: not brought back
    assert c.get("k") is None


def test_delete_many(cache_env: Any) -> None:
    c = cache_env.CACHE
    c.set_many({f"k{i}": str(i) for i in range(30)})
    c.set("brief", "v", ttl=1)
    cache_env.SESSION_CACHE.set("k0", "session's")
    assert c.delete_many(["k0", "k1", "missing", "k0"]) == 2  # each key once
    assert c.get_many(["k0", "k1", "k2"]) == {"k0": None, "k1": None, "k2": "2"}
    assert cache_env.SESSION_CACHE.get("k0") == "session's"
    assert c.delete_many([]) == 0
    assert c.delete_many(iter([f"k{i}" for i in range(2, 30)])) == 28  # spread over nodes
    time.sleep(1.2)
    assert c.delete_many(["brief"]) == 0  # an expired key was not present


def test_count(cache_env: Any) -> None:
    c = cache_env.CACHE
    assert c.count() == 0
    c.set_many({f"k{i}": "v" for i in range(25)})
    c.set("brief", "v", ttl=1)
    cache_env.SESSION_CACHE.set("other", "v")
    assert c.count() == 26 and cache_env.ALIAS_CACHE.count() == 26
    assert cache_env.SESSION_CACHE.count() == 1
    time.sleep(1.2)
    assert c.count() == 25


def test_the_default_ttl(make_app: Any, cache_url: str) -> None:
    """PLOY_CACHE_DEFAULT_TTL: every entry written without a TTL gets it;
    an explicit TTL wins; incr only when it creates the key."""
    app = make_app(
        PLOY_CACHE_URL=cache_url,
        PLOY_CACHE_KEY_PREFIX=f"dttl{time.time_ns()}",
        PLOY_CACHE_DEFAULT_TTL=1,
    )
    with app.app_context():
        c = g.env.CACHE
        c.set("set", "v")
        c.set_many({"many": "v"})
        assert c.add("add", "v")
        assert c.incr("incr") == 1
        assert c.get_or_set("computed", lambda: "v") == "v"
        c.set("long", "v", ttl=100)
        c.set("counter", "5", ttl=100)
        assert c.incr("counter") == 6  # an existing key keeps its TTL
        c.set("touched", "v", ttl=100)
        assert c.touch("touched", None)  # the default, not "no expiry"
        defaults = ["set", "many", "add", "incr", "computed", "touched"]
        assert [c.ttl(k) for k in defaults] == [1] * len(defaults)
        time.sleep(1.2)
        assert c.get_many([*defaults, "long", "counter"]) == {
            **dict.fromkeys(defaults), "long": "v", "counter": "6"
        }
        c.clear()


@pytest.mark.parametrize(
    "value",
    ["\x00", "\x00ploy:1:5:0:x", "\x00ploy:1:", "\x00ploy:1:a:b:c", "\x00\x00", "x\x00ploy:1:0:0:"],
)
def test_values_that_look_like_an_envelope_read_back_exactly(cache_env: Any, value: str) -> None:
    """get_or_set stores a header before its values (NUL first); a value of
    the caller's own that starts with NUL reads back exactly all the same."""
    c = cache_env.CACHE
    c.set("k", value)
    c.set_many({"m": value})
    assert c.add("a", value)
    assert c.get("k") == value
    assert c.get_many(["k", "m", "a"]) == {"k": value, "m": value, "a": value}
    assert c.get_or_set("k", lambda: "computed") == value


def test_a_backend_that_is_out(make_app: Any, cache_url: str) -> None:
    """Breaker open: misses and no-ops in "miss" mode; delete_many's keys are
    remembered and deleted before they are served again; count raises."""
    app = make_app(PLOY_CACHE_URL=cache_url, PLOY_CACHE_KEY_PREFIX=f"out{time.time_ns()}")
    with app.app_context():
        c = g.env.CACHE
        c.set_many({"a": "1", "b": "2", "c": "3"})
        _open_breaker(c.backend)
        assert (c.has("a"), "a" in c, c.ttl("a"), c.touch("a", 5)) == (False, False, 0, False)
        assert c.delete_many(["a", "b"]) == 0
        with pytest.raises(CacheUnavailable):
            c.count()
        c.backend.breaker.open_until = time.monotonic()  # the cooldown is over
        assert c.has("a") is False and c.ttl("b") == 0  # deleted before being served
        assert c.has("c") is True and c.count() == 1
        assert not c.backend.pending
        c.clear()


BAD = [
    ("has", (1,), {}, TypeError, "key must be str"),
    ("has", ("",), {}, ValueError, "must not be empty"),
    ("ttl", (b"k",), {}, TypeError, "key must be str"),
    ("touch", ("k", 0), {}, ValueError, "at least 1 second"),
    ("touch", ("k", 1.5), {}, TypeError, "not float"),
    ("delete_many", ("abc",), {}, TypeError, "iterable of str"),
    ("delete_many", (["k", 2],), {}, TypeError, "key must be str"),
    ("get_or_set", ("k", "not callable"), {}, TypeError, "compute must be callable"),
    ("get_or_set", ("k", lambda: 5), {}, TypeError, "compute must return a str, not int"),
    ("get_or_set", ("k", lambda: "v"), {"ttl": 0}, ValueError, "at least 1 second"),
    ("get_or_set", ("k", lambda: "v"), {"lock_timeout": 0}, ValueError, "lock_timeout"),
    ("get_or_set", ("k", lambda: "v"), {"lock_timeout": "5"}, TypeError, "lock_timeout"),
    ("get_or_set", ("k", lambda: "v"), {"beta": -1}, ValueError, "beta must be 0 or more"),
    ("get_or_set", ("x" * 513, lambda: "v"), {}, ValueError, "513 bytes"),
]


@pytest.mark.parametrize(("op", "args", "kwargs", "exc", "match"), BAD)
def test_bad_input_raises_and_writes_nothing(
    cache_env: Any, op: str, args: tuple[Any, ...], kwargs: dict[str, Any], exc: Any, match: str
) -> None:
    cache_env.CACHE.set("k", "before")
    miss = op == "get_or_set" and args[0] == "k"
    if miss:
        cache_env.CACHE.delete("k")  # a miss, so that compute would run
    with pytest.raises(exc, match=match):
        getattr(cache_env.CACHE, op)(*args, **kwargs)
    assert cache_env.CACHE.get("k") == (None if miss else "before")
