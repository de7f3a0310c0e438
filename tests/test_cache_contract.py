"""The cache contract: every test runs on memory://, a SQLite file, Redis,
Redis Cluster and Redis Sentinel (see ``cache_url`` in conftest)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from flask import g

from flask_ploy._validate import MAX_TTL

ODD_STRINGS = [
    "",
    "plain",
    "ünïcödé ✓ 日本語 🎉",
    "line1\nline2\r\n",
    "nul\x00inside",
    "%_*?[]{}:\\",
    "'; DROP TABLE ploy_state; --",
    "*3\r\n$3\r\nSET\r\n",
    " padded ",
]


def test_get_missing_is_none(cache_env: Any) -> None:
    assert cache_env.CACHE.get("missing") is None


@pytest.mark.parametrize("value", ODD_STRINGS)
def test_set_get_round_trip(cache_env: Any, value: str) -> None:
    cache_env.CACHE.set("k", value)
    assert cache_env.CACHE.get("k") == value


@pytest.mark.parametrize("key", [s for s in ODD_STRINGS if s] + ["k" * 512, "é" * 256])
def test_odd_keys(cache_env: Any, key: str) -> None:
    cache_env.CACHE.set(key, "v")
    assert cache_env.CACHE.get(key) == "v"
    assert cache_env.CACHE.get_many([key]) == {key: "v"}
    assert cache_env.CACHE.delete(key) is True


def test_set_overwrites(cache_env: Any) -> None:
    cache_env.CACHE.set("k", "one")
    cache_env.CACHE.set("k", "two")
    assert cache_env.CACHE.get("k") == "two"


def test_ttl_expires_after_a_real_wait(cache_env: Any) -> None:
    cache_env.CACHE.set("short", "v", ttl=1)
    cache_env.CACHE.set("forever", "v")
    cache_env.CACHE.set("long", "v", ttl=timedelta(minutes=5))
    assert cache_env.CACHE.get("short") == "v"
    time.sleep(1.2)
    assert cache_env.CACHE.get("short") is None
    assert cache_env.CACHE.get("forever") == "v"
    assert cache_env.CACHE.get("long") == "v"


def test_set_without_ttl_clears_an_old_ttl(cache_env: Any) -> None:
    cache_env.CACHE.set("k", "v", ttl=1)
    cache_env.CACHE.set("k", "w")
    time.sleep(1.2)
    assert cache_env.CACHE.get("k") == "w"


def test_delete(cache_env: Any) -> None:
    cache_env.CACHE.set("k", "v")
    assert cache_env.CACHE.delete("k") is True
    assert cache_env.CACHE.get("k") is None
    assert cache_env.CACHE.delete("k") is False


def test_incr_counts_from_zero_and_stays_a_string(cache_env: Any) -> None:
    c = cache_env.CACHE
    assert c.incr("n") == 1
    assert c.incr("n") == 2
    assert c.incr("n", 10) == 12
    assert c.incr("n", -20) == -8
    assert c.get("n") == "-8"
    assert c.incr("fresh", -3) == -3
    c.set("preset", "41")
    assert c.incr("preset") == 42


def test_incr_64bit_limits(cache_env: Any) -> None:
    c = cache_env.CACHE
    c.set("top", str(2**63 - 2))
    assert c.incr("top") == 2**63 - 1
    with pytest.raises(ValueError, match="overflow"):
        c.incr("top")
    assert c.get("top") == str(2**63 - 1)
    c.set("bottom", str(-(2**63) + 1))
    assert c.incr("bottom", -1) == -(2**63)
    with pytest.raises(ValueError, match="overflow"):
        c.incr("bottom", -1)
    with pytest.raises(ValueError, match="64-bit"):
        c.incr("x", 2**63)


@pytest.mark.parametrize(
    "value", ["abc", "1.5", "007", " 5", "5 ", "+5", "-0", "", "1e3", str(2**63)]
)
def test_incr_refuses_a_non_integer_and_leaves_it(cache_env: Any, value: str) -> None:
    cache_env.CACHE.set("k", value)
    with pytest.raises(ValueError, match="not an integer"):
        cache_env.CACHE.incr("k")
    assert cache_env.CACHE.get("k") == value


def test_incr_ttl_applies_only_on_create(cache_env: Any) -> None:
    c = cache_env.CACHE
    assert c.incr("window", ttl=2) == 1
    time.sleep(1.0)
    assert c.incr("window", ttl=2) == 2  # does not extend the window
    time.sleep(1.3)
    assert c.get("window") is None
    assert c.incr("window", ttl=2) == 1  # a new window


def test_incr_without_ttl_keeps_an_existing_ttl(cache_env: Any) -> None:
    c = cache_env.CACHE
    c.set("k", "1", ttl=1)
    assert c.incr("k") == 2
    time.sleep(1.2)
    assert c.get("k") is None


def test_incr_is_atomic_across_threads(cache_env: Any, cache_app: Any) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with cache_app.app_context():
                for _ in range(100):
                    g.env.CACHE.incr("hits")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache_env.CACHE.get("hits") == "800"


def test_add_sets_only_if_absent(cache_env: Any) -> None:
    c = cache_env.CACHE
    assert c.add("lock", "me") is True
    assert c.add("lock", "you") is False
    assert c.get("lock") == "me"


def test_add_after_expiry(cache_env: Any) -> None:
    c = cache_env.CACHE
    assert c.add("lock", "a", ttl=1) is True
    time.sleep(1.2)
    assert c.add("lock", "b", ttl=1) is True
    assert c.get("lock") == "b"


def test_add_is_exclusive_across_threads(cache_app: Any) -> None:
    winners: list[int] = []

    def worker(i: int) -> None:
        with cache_app.app_context():
            if g.env.CACHE.add("job:1", str(i), ttl=30):
                winners.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1


def test_get_many_and_set_many(cache_env: Any) -> None:
    c = cache_env.CACHE
    c.set_many({"a": "1", "b": "2", "ü": "3"})
    assert c.get_many(["a", "b", "ü", "missing"]) == {"a": "1", "b": "2", "ü": "3", "missing": None}
    assert c.get_many([]) == {}
    assert c.get_many(iter(["a", "a"])) == {"a": "1"}
    c.set_many({})
    c.set_many({"t1": "x", "t2": "y"}, ttl=1)
    time.sleep(1.2)
    assert c.get_many(["t1", "t2", "a"]) == {"t1": None, "t2": None, "a": "1"}


def test_get_many_spans_many_keys(cache_env: Any) -> None:
    data = {f"key:{i}": str(i) for i in range(300)}
    cache_env.CACHE.set_many(data)
    assert cache_env.CACHE.get_many(list(data)) == data


def test_resources_are_separate_namespaces(cache_env: Any) -> None:
    cache_env.CACHE.set("user:1", "cache")
    assert cache_env.SESSION_CACHE.get("user:1") is None
    cache_env.SESSION_CACHE.set("user:1", "session")
    assert cache_env.CACHE.get("user:1") == "cache"
    assert cache_env.CACHE.delete("user:1")
    assert cache_env.SESSION_CACHE.get("user:1") == "session"


def test_bindings_on_one_resource_share_data(cache_env: Any) -> None:
    cache_env.CACHE.set("shared", "yes")
    assert cache_env.ALIAS_CACHE.get("shared") == "yes"
    assert cache_env.ALIAS_CACHE.incr("n") == 1
    assert cache_env.CACHE.incr("n") == 2


def test_key_prefix_separates_apps(make_app: Any, cache_url: str) -> None:
    a = make_app(PLOY_CACHE_URL=cache_url, PLOY_CACHE_KEY_PREFIX="appa")
    b = make_app(PLOY_CACHE_URL=cache_url, PLOY_CACHE_KEY_PREFIX="appb")
    try:
        with a.app_context():
            g.env.CACHE.set("k", "from a")
        with b.app_context():
            assert g.env.CACHE.get("k") is None
            g.env.CACHE.set("k", "from b")
        with a.app_context():
            assert g.env.CACHE.get("k") == "from a"
    finally:
        for app in (a, b):
            with app.app_context():
                g.env.CACHE.clear()


BAD_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    ("get", (1,), {}, TypeError, "key must be str, not int"),
    ("get", (b"k",), {}, TypeError, "key must be str, not bytes"),
    ("get", (None,), {}, TypeError, "key must be str, not NoneType"),
    ("get", ("",), {}, ValueError, "key must not be empty"),
    ("get", ("k" * 513,), {}, ValueError, "513 bytes"),
    ("get", ("é" * 257,), {}, ValueError, "514 bytes"),
    ("set", ("k", 1), {}, TypeError, "value must be str, not int.*json.dumps"),
    ("set", ("k", b"v"), {}, TypeError, "value must be str, not bytes.*decode"),
    ("set", ("k", None), {}, TypeError, "value must be str, not NoneType"),
    ("set", ("k", {"a": 1}), {}, TypeError, "value must be str, not dict.*json.dumps"),
    ("set", ("k", ["a"]), {}, TypeError, "value must be str, not list"),
    ("set", ("k", 1.5), {}, TypeError, "value must be str, not float"),
    ("set", ("k", "v"), {"ttl": 0}, ValueError, "at least 1 second"),
    ("set", ("k", "v"), {"ttl": -5}, ValueError, "at least 1 second"),
    ("set", ("k", "v"), {"ttl": True}, TypeError, "not bool"),
    ("set", ("k", "v"), {"ttl": 1.5}, TypeError, "not float"),
    ("set", ("k", "v"), {"ttl": "60"}, TypeError, "not str"),
    ("set", ("k", "v"), {"ttl": timedelta(seconds=1.5)}, ValueError, "whole seconds"),
    ("set", ("k", "v"), {"ttl": timedelta(0)}, ValueError, "at least 1 second"),
    ("set", ("k", "\ud800"), {}, ValueError, "surrogate"),
    ("set", ("\udfff", "v"), {}, ValueError, "surrogate"),
    ("incr", ("k",), {"amount": 1.0}, TypeError, "amount must be int"),
    ("incr", ("k",), {"amount": True}, TypeError, "amount must be int"),
    ("incr", ("k",), {"amount": "1"}, TypeError, "amount must be int"),
    ("incr", ("k",), {"ttl": 0}, ValueError, "at least 1 second"),
    ("add", ("k", 5), {}, TypeError, "value must be str"),
    ("add", ("k", "v"), {"ttl": -1}, ValueError, "at least 1 second"),
    ("delete", (5,), {}, TypeError, "key must be str"),
    ("get_many", ("abc",), {}, TypeError, "iterable of str"),
    ("get_many", ([1],), {}, TypeError, "key must be str"),
    ("set_many", ({"k": 1},), {}, TypeError, "value must be str"),
    ("set_many", ({"ok": "v", 2: "v"},), {}, TypeError, "key must be str"),
    ("set_many", ([("k", "v")],), {}, TypeError, "dict of str to str"),
    ("set_many", ({"k": "v"},), {"ttl": 0}, ValueError, "at least 1 second"),
]


@pytest.mark.parametrize(("op", "args", "kwargs", "exc", "match"), BAD_CALLS)
def test_bad_input_raises_and_writes_nothing(
    cache_env: Any,
    op: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    exc: type[Exception],
    match: str,
) -> None:
    cache_env.CACHE.set("k", "before")
    with pytest.raises(exc, match=match):
        getattr(cache_env.CACHE, op)(*args, **kwargs)
    assert cache_env.CACHE.get("k") == "before"
    assert cache_env.CACHE.get("ok") is None


def test_value_size_limit(make_app: Any, cache_url: str) -> None:
    app = make_app(
        PLOY_CACHE_URL=cache_url, PLOY_MAX_VALUE_BYTES=100, PLOY_CACHE_KEY_PREFIX="tvalsize"
    )
    with app.app_context():
        c = g.env.CACHE
        c.set("k", "x" * 100)
        c.set("k2", "é" * 50)
        with pytest.raises(ValueError, match="101 bytes.*PLOY_MAX_VALUE_BYTES"):
            c.set("k", "x" * 101)
        with pytest.raises(ValueError, match="102 bytes"):
            c.set_many({"a": "ok", "b": "é" * 51})
        assert c.get("k") == "x" * 100
        assert c.get("a") is None
        c.clear()


def test_clear_empties_only_its_resource(cache_env: Any) -> None:
    cache_env.CACHE.set_many({"a": "1", "b": "2"})
    cache_env.SESSION_CACHE.set("a", "s")
    assert cache_env.CACHE.clear() == 2
    assert cache_env.CACHE.get("a") is None
    assert cache_env.SESSION_CACHE.get("a") == "s"


def test_repr_names_binding_and_backend(cache_env: Any, cache_url: str) -> None:
    r = repr(cache_env.CACHE)
    assert "CACHE" in r and "default" in r and cache_url.split("://")[0] in r


# -- bounds and failures every backend shares ------------------------------------


@pytest.mark.parametrize("ttl", [10**16, 2**62, MAX_TTL + 1, timedelta(days=999_999_999)])
def test_a_ttl_over_the_maximum_is_refused_before_any_write(cache_env: Any, ttl: Any) -> None:
    """Issue 12 #14: one maximum TTL (100 years), checked before anything is written."""
    c = cache_env.CACHE
    c.set("n", "5")
    with pytest.raises(ValueError, match="at most 3155760000 seconds"):
        c.incr("n", ttl=ttl)
    with pytest.raises(ValueError, match="at most"):
        c.incr("fresh", ttl=ttl)
    with pytest.raises(ValueError, match="at most"):
        c.set("k", "v", ttl=ttl)
    with pytest.raises(ValueError, match="at most"):
        c.add("k", "v", ttl=ttl)
    with pytest.raises(ValueError, match="at most"):
        c.set_many({"k": "v"}, ttl=ttl)
    assert c.get_many(["n", "fresh", "k"]) == {"n": "5", "fresh": None, "k": None}


def test_the_maximum_ttl_is_accepted(cache_env: Any) -> None:
    c = cache_env.CACHE
    c.set("k", "v", ttl=MAX_TTL)
    c.set_many({"m": "v"}, ttl=timedelta(seconds=MAX_TTL))
    assert c.add("a", "v", ttl=MAX_TTL)
    assert c.incr("n", ttl=MAX_TTL) == 1
    assert c.get_many(["k", "m", "a", "n"]) == {"k": "v", "m": "v", "a": "v", "n": "1"}


def _open_breaker(backend: Any) -> None:
    """The state after a failed operation: the breaker open for its cooldown."""
    backend.breaker.record("test", ConnectionError("simulated outage"), "down")
    backend.update_degraded()


def test_an_invalidation_made_while_the_backend_is_out_is_not_lost(
    make_app: Any, cache_url: str
) -> None:
    """Issue 12 #12: delete and set while the breaker is open are remembered,
    and applied on the server before the keys are served again."""
    app = make_app(PLOY_CACHE_URL=cache_url, PLOY_CACHE_KEY_PREFIX=f"inv{time.time_ns()}")
    with app.app_context():
        c = g.env.CACHE
        c.set_many({"a": "old", "b": "old", "c": "old", "d": "5", "e": "old"})
        _open_breaker(c.backend)
        assert c.delete("a") is False
        c.set("b", "new")
        c.set_many({"c": "new"})
        c.delete("d")
        c.delete("e")
        assert c.get_many(["a", "b", "c"]) == {"a": None, "b": None, "c": None}
        c.backend.breaker.open_until = time.monotonic()  # the cooldown is over
        assert c.get("a") is None  # applied before it is served
        assert c.get_many(["b", "c", "x"]) == {"b": None, "c": None, "x": None}
        assert c.incr("d") == 1  # counts from a deleted key, not from the old 5
        assert c.add("e", "mine") is True
        assert not c.backend.pending and not c.backend.degraded
        c.set("b", "fresh")
        assert c.get("b") == "fresh"
        c.clear()


def test_too_many_lost_invalidations_clear_the_resource(make_app: Any, cache_url: str) -> None:
    """Past the bound of remembered invalidations, the resource is cleared
    when the backend answers again: entries lost, none served stale."""
    app = make_app(PLOY_CACHE_URL=cache_url, PLOY_CACHE_KEY_PREFIX=f"lim{time.time_ns()}")
    with app.app_context():
        c = g.env.CACHE
        c.set_many({f"k{i}": "old" for i in range(6)})
        g.env.SESSION_CACHE.set("s", "kept")
        c.backend.pending.limit = 3
        _open_breaker(c.backend)
        for i in range(5):
            c.delete(f"k{i}")
        assert c.backend.pending.lost(f"{app.config['PLOY_CACHE_KEY_PREFIX']}:default:")
        c.backend.breaker.open_until = time.monotonic()
        # The clear goes a bounded step per operation (a SCAN of 1,000 keys
        # on Redis): until it is done, the resource reads as misses.
        for _ in range(10_000):
            assert c.get("k0") is None
            if not c.backend.pending:
                break
        assert c.get_many(["k4", "k5"]) == {"k4": None, "k5": None}  # k5 went too
        assert g.env.SESSION_CACHE.get("s") == "kept"
        assert not c.backend.pending
        g.env.SESSION_CACHE.clear()


def test_a_full_pool_waits_and_is_not_an_outage(
    make_app: Any, shared_cache_url: str, record_property: Any
) -> None:
    """Issue 12 #4: 8 threads over max_connections=2 wait for a connection;
    none fails, none trips the breaker (memory:// has no pool)."""
    cache_url = shared_cache_url
    app = make_app(
        PLOY_CACHE_URL=cache_url,
        PLOY_CACHE_KEY_PREFIX=f"pool{time.time_ns()}",
        PLOY_CACHE_OPTIONS={"max_connections": 2},
    )
    reads: list[bool] = []

    def work(i: int) -> None:
        with app.app_context():
            for j in range(150):
                g.env.CACHE.set(f"k{i}:{j % 5}", "v")
                reads.append(g.env.CACHE.get(f"k{i}:{j % 5}") == "v")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with app.app_context():
        b = g.env.CACHE.backend
        assert (sum(reads), len(reads), b.failures) == (1200, 1200, 0)
        assert b.busy == 0 and b.breaker.open_until == 0
        record_property(
            "ploy_figure",
            f"{cache_url.split('://')[0]}, 8 threads over max_connections=2: 2,400 operations,"
            " 1,200 of 1,200 reads hit, 0 failures, 0 waits timed out",
        )
        g.env.CACHE.clear()


def test_a_pool_wait_that_times_out_is_a_miss_not_a_failure(
    make_app: Any, redis_cache_url: str
) -> None:
    """Issue 12 #4: every connection held longer than the pool's timeout:
    the operation serves a miss, counted as busy, and the breaker stays closed.
    (SQLite's counterpart, a write lock held past the wait, is
    test_cache_backends.py::test_sqlite_a_held_write_lock_is_busy_not_an_outage.)"""
    cache_url = redis_cache_url
    app = make_app(
        PLOY_CACHE_URL=cache_url,
        PLOY_CACHE_KEY_PREFIX=f"busy{time.time_ns()}",
        PLOY_CACHE_OPTIONS={"max_connections": 1, "timeout": 0.1, "socket_timeout": 2},
    )
    with app.app_context():
        c = g.env.CACHE
        c.set("k", "v")
        client = c.backend.client
        full = f"{app.config['PLOY_CACHE_KEY_PREFIX']}:default:k"
        held = f"{full}:list"
        if hasattr(client, "get_node_from_key"):  # Cluster: a list on k's node
            node = client.get_node_from_key(full)
            held = next(
                f"{held}{i}" for i in range(10**4) if client.get_node_from_key(f"{held}{i}") == node
            )
        # BLPOP on an empty list holds the only connection (of k's node) for
        # 1 s; 0.3 s for the holder to take it, however loaded the machine.
        holder = threading.Thread(target=client.blpop, args=([held], 1.0))
        holder.start()
        time.sleep(0.3)
        start = time.monotonic()
        assert c.get("k") is None
        assert time.monotonic() - start < 0.3
        holder.join()
        assert c.backend.busy == 1 and c.backend.failures == 0
        assert c.backend.breaker.open_until == 0 and not c.backend.degraded
        assert c.get("k") == "v"
        # get_or_set while the pool is busy: a miss, not an outage, so the
        # single flight holds (one computation in this process, not one per thread).
        computed: list[int] = []

        def compute() -> str:
            computed.append(1)
            return "report"

        holder = threading.Thread(target=client.blpop, args=([held], 1.5))
        holder.start()
        time.sleep(0.3)
        with ThreadPoolExecutor(4) as pool:
            values = list(pool.map(lambda _: c.get_or_set("r", compute, ttl=60), range(4)))
        holder.join()
        assert values == ["report"] * 4 and len(computed) == 1, (values, computed)
        assert c.backend.failures == 0 and c.backend.breaker.open_until == 0
        c.clear()
