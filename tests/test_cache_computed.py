"""Computed values: ``Cache.get_or_set`` and ``@ploy.cached``, on every backend
(``cache_url``: memory://, SQLite, Redis, Cluster, Sentinel). One computation
at a time, across threads and processes; a lock that outlives its holder is
freed at its expiry; waits are bounded; early recomputation serves the old
value meanwhile; a failing backend or compute never leaves a lock or a value.
Timings here are bounds with wide margins; the figures are in the bench
(``python -m bench --groups stampede``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, current_app, g

from flask_ploy import CacheUnavailable, FlaskPloy
from flask_ploy.cache.flight import lock_key, unwrap

from .test_cache_contract import _open_breaker


class Counter:
    """A compute function that counts its calls (thread-safe) and can be slow."""

    def __init__(self, seconds: float = 0.0, value: str = "computed") -> None:
        self.seconds = seconds
        self.value = value
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.calls += 1
            n = self.calls
        time.sleep(self.seconds)
        return f"{self.value} {n}"


def _namespace(cache: Any) -> str:
    """What the binding's full keys start with: ``prefix:resource:``."""
    return f"{current_app.config['PLOY_CACHE_KEY_PREFIX']}:{cache.resource}:"


def test_a_miss_computes_once_then_hits(cache_env: Any) -> None:
    c = cache_env.CACHE
    compute = Counter()
    assert c.get_or_set("report", compute, ttl=100) == "computed 1"
    assert c.get_or_set("report", compute, ttl=100) == "computed 1"
    assert compute.calls == 1
    assert c.get("report") == "computed 1"  # get reads the value, not the envelope
    assert c.get_many(["report"]) == {"report": "computed 1"}
    assert c.ttl("report") == 100 and c.has("report")
    c.set("plain", "set by hand")  # a value set() wrote is a hit too
    assert c.get_or_set("plain", compute) == "set by hand" and compute.calls == 1


def _cold_key_in_threads(app: Flask, compute: Counter, n: int) -> list[str]:
    """``get_or_set("cold", compute)`` from *n* threads at once; their results."""
    results: list[str] = []

    def call() -> None:
        with app.app_context():
            results.append(g.env.CACHE.get_or_set("cold", compute, ttl=60))

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_one_computation_for_many_threads(cache_app: Flask) -> None:
    compute = Counter(seconds=0.3)
    results = _cold_key_in_threads(cache_app, compute, 16)
    assert compute.calls == 1
    assert results == ["computed 1"] * 16


def test_threads_of_one_process_wait_without_polling(cache_app: Flask) -> None:
    """The threads of a process that miss a key while one of them fills it
    wait for that thread, not for the backend: the backend is read once per
    thread (its miss), plus the filler's check under the lock."""
    with cache_app.app_context():
        backend = g.env.CACHE.backend
    reads = Counter()
    original = backend.get

    def counted(key: str) -> Any:
        reads()
        return original(key)

    backend.get = counted
    try:
        compute = Counter(seconds=0.4)
        results = _cold_key_in_threads(cache_app, compute, 8)
    finally:
        del backend.get
    assert compute.calls == 1 and results == ["computed 1"] * 8
    assert reads.calls <= 8 + 1, reads.calls


def test_when_the_filler_fails_the_waiters_try_again(cache_app: Flask) -> None:
    """The first computation raises (in its own caller only); the threads that
    waited for it compute the value once more, and get it."""
    calls = Counter()

    def flaky() -> str:
        n = int(calls().split()[1])
        time.sleep(0.3)
        if n == 1:
            raise RuntimeError("the first try failed")
        return f"try {n}"

    outcomes: list[str] = []

    def call() -> None:
        with cache_app.app_context():
            try:
                outcomes.append(g.env.CACHE.get_or_set("cold", flaky, ttl=60))
            except RuntimeError as exc:
                outcomes.append(str(exc))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
        time.sleep(0.01)  # the first one leads
    for t in threads:
        t.join()
    assert sorted(outcomes) == sorted(["the first try failed"] + ["try 2"] * 5)
    assert calls.calls == 2


WORKER = """
import sys, threading, time
from flask import Flask, current_app, g
from flask_ploy import FlaskPloy
url, prefix, out = sys.argv[1], sys.argv[2], sys.argv[3]
app = Flask("flight")
app.config.update(PLOY_BINDINGS={"cache": {"CACHE": "default"}}, PLOY_CACHE_URL=url,
                  PLOY_CACHE_KEY_PREFIX=prefix, TESTING=True)
FlaskPloy(app)
def compute():
    with open(out, "a") as f:
        f.write("computed\\n")
    time.sleep(0.5)
    return "the value"
got = []
def call():
    with app.app_context():
        got.append(g.env.CACHE.get_or_set("cold", compute, ttl=60))
threads = [threading.Thread(target=call) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(",".join(got))
"""


def test_one_computation_for_many_processes(
    make_app: Any, shared_cache_url: str, tmp_path: Any
) -> None:
    """4 processes x 4 threads on one cold key: one computation in all
    (memory:// is per process)."""
    cache_url = shared_cache_url
    prefix = f"procs{time.time_ns()}"
    out = tmp_path / "computations.txt"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, cache_url, prefix, str(out)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4
    assert results == [",".join(["the value"] * 4)] * 4
    assert out.read_text() == "computed\n"
    app = make_app(PLOY_CACHE_URL=cache_url, PLOY_CACHE_KEY_PREFIX=prefix)
    with app.app_context():
        g.env.CACHE.clear()


def test_compute_raises_nothing_stored_lock_released(cache_env: Any) -> None:
    c = cache_env.CACHE

    def broken() -> str:
        raise RuntimeError("the report failed")

    with pytest.raises(RuntimeError, match="the report failed"):
        c.get_or_set("k", broken, lock_timeout=5)
    assert c.get("k") is None
    assert not c.backend.has(lock_key(_namespace(c), "k"))  # released
    start = time.monotonic()
    assert c.get_or_set("k", Counter(), lock_timeout=5) == "computed 1"
    assert time.monotonic() - start < 1  # no wait for a lock


def test_a_dead_holder_frees_the_lock_at_its_expiry(cache_env: Any) -> None:
    """A lock left by a caller that died: the next caller waits until it
    expires (0.6 s here), then computes; not lock_timeout (5 s)."""
    c = cache_env.CACHE
    assert c.backend.lock(lock_key(_namespace(c), "k"), "a dead process", 0.6)
    compute = Counter()
    start = time.monotonic()
    assert c.get_or_set("k", compute, lock_timeout=5) == "computed 1"
    took = time.monotonic() - start
    assert 0.5 <= took < 2.0, took
    assert compute.calls == 1


def test_waiting_is_bounded_by_lock_timeout(cache_env: Any) -> None:
    """Another caller holds the lock and never stores: after lock_timeout a
    waiter computes the value itself (and stores it)."""
    c = cache_env.CACHE
    assert c.backend.lock(lock_key(_namespace(c), "k"), "a slow caller", 30)
    compute = Counter()
    start = time.monotonic()
    assert c.get_or_set("k", compute, lock_timeout=0.4) == "computed 1"
    took = time.monotonic() - start
    assert 0.35 <= took < 1.5, took
    assert c.get("k") == "computed 1"
    assert c.backend.unlock(lock_key(_namespace(c), "k"), "a slow caller")  # not ours to free


def test_a_waiter_gets_the_holders_value(cache_env: Any, cache_app: Flask) -> None:
    c = cache_env.CACHE
    slow = Counter(seconds=0.5, value="first")
    holder = threading.Thread(
        target=lambda: _in_context(cache_app, lambda: g.env.CACHE.get_or_set("k", slow))
    )
    holder.start()
    lock = lock_key(_namespace(c), "k")
    deadline = time.monotonic() + 5
    while c.backend.get(lock) is None:  # the holder has the lock (a cold client takes a while)
        assert time.monotonic() < deadline and holder.is_alive()
        time.sleep(0.01)
    other = Counter(value="second")
    start = time.monotonic()
    assert c.get_or_set("k", other) == "first 1"
    assert time.monotonic() - start < 1.0
    holder.join()
    assert other.calls == 0


def _in_context(app: Flask, fn: Callable[[], Any]) -> Any:
    with app.app_context():
        return fn()


def test_early_recomputation(cache_env: Any) -> None:
    """Near its expiry (here: beta so high that it is always near), one caller
    recomputes while the others are served the cached value; beta=0 never."""
    c = cache_env.CACHE
    compute = Counter(seconds=0.01)
    assert c.get_or_set("k", compute, ttl=100) == "computed 1"
    raw = c.backend.get(_namespace(c) + "k")
    value, delta, expires = unwrap(raw)
    assert value == "computed 1" and delta >= 0.01 and 99 < expires - time.time() <= 100
    assert c.get_or_set("k", compute, ttl=100, beta=0) == "computed 1"
    assert c.get_or_set("k", compute, ttl=100) == "computed 1"  # 100 s away: no
    assert c.get_or_set("k", compute, ttl=100, beta=1e9) == "computed 2"  # recomputed
    assert c.get("k") == "computed 2" and compute.calls == 2
    # While another caller holds the lock, the cached value is served, at once.
    assert c.backend.lock(lock_key(_namespace(c), "k"), "another", 30)
    start = time.monotonic()
    assert c.get_or_set("k", compute, ttl=100, beta=1e9) == "computed 2"
    assert time.monotonic() - start < 0.3 and compute.calls == 2


def test_the_backend_out_computes_and_never_fails(make_app: Any, cache_url: str) -> None:
    for mode in ("miss", "raise"):
        app = make_app(
            PLOY_CACHE_URL=cache_url,
            PLOY_CACHE_KEY_PREFIX=f"gosout{time.time_ns()}",
            PLOY_CACHE_ON_ERROR=mode,
        )
        with app.app_context():
            c = g.env.CACHE
            _open_breaker(c.backend)
            compute = Counter()
            assert c.get_or_set("k", compute) == "computed 1"
            assert c.get_or_set("k", compute) == "computed 2"  # nothing stored
            with pytest.raises(CacheUnavailable):
                c.incr("n")  # (the breaker is really open)
            c.backend.breaker.open_until = 0
            c.backend.update_degraded()
            assert c.get("k") is None


def test_the_backend_failing_on_a_miss_computes(make_app: Any, tmp_path: Any) -> None:
    """A server that refuses connections: compute directly, in both modes."""
    app = make_app(PLOY_CACHE_URL="redis://127.0.0.1:1/0", PLOY_CACHE_ON_ERROR="raise")
    with app.app_context():
        assert g.env.CACHE.get_or_set("k", Counter()) == "computed 1"
        assert g.env.CACHE.backend.failures == 1


# -- @ploy.cached ---------------------------------------------------------------


ploy = FlaskPloy()
CALLS: list[tuple[Any, ...]] = []


@ploy.cached("CACHE", ttl=60)
def report(report_id: int, fmt: str = "json", *extra: Any, **options: Any) -> str:
    CALLS.append((report_id, fmt, extra, options))
    return f"report {report_id} as {fmt}"


def test_cached_keys_are_stable_and_bound() -> None:
    name = f"{__name__}.report"
    assert report.key(42) == f'{name}:[["report_id",42],["fmt","json"],["extra",[]],["options",[]]]'
    assert report.key(42) == report.key(report_id=42) == report.key(42, "json")
    assert report.key(True) != report.key(1) != report.key(1.0)
    assert report.key(1, "x", (1, None, 2.5), flag=True) == (
        f'{name}:[["report_id",1],["fmt","x"],["extra",[[1,null,2.5]]],'
        '["options",[["flag",true]]]]'
    )
    long = report.key("x" * 1000)
    assert long.startswith(f"{name}:#sha256:") and len(long) < 200
    for bad in ([1], {"a": 1}, b"bytes", object()):
        with pytest.raises(TypeError, match="must be str, int, float, bool, None, or tuples"):
            report.key(bad)
    with pytest.raises(TypeError, match="missing a required argument"):
        report.key()


def test_cached_keys_are_the_same_in_another_process() -> None:
    code = "import tests.test_cache_computed as m; print(m.report.key(7, 'csv', (1, 'é')))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    root = os.path.dirname(os.path.dirname(__file__))
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=root
    )
    assert other.stdout.strip() == report.key(7, "csv", (1, "é"))


def test_cached_on_every_backend(make_app: Any, cache_url: str) -> None:
    app = make_app(PLOY_CACHE_URL=cache_url, PLOY_CACHE_KEY_PREFIX=f"cached{time.time_ns()}")
    CALLS.clear()
    with app.app_context():
        assert report(1) == "report 1 as json"
        assert report(report_id=1) == "report 1 as json"
        assert report(2, "csv") == "report 2 as csv"
        assert len(CALLS) == 2
        assert g.env.CACHE.get(report.key(1)) == "report 1 as json"
        assert g.env.CACHE.ttl(report.key(1)) == 60
        assert report.uncached(1) == "report 1 as json" and len(CALLS) == 3
        assert report.invalidate(1) is True and report.invalidate(1) is False
        assert report(1) == "report 1 as json" and len(CALLS) == 4
        g.env.CACHE.clear()


def test_cached_refuses_what_it_cannot_store(make_app: Any) -> None:
    app = make_app()

    @ploy.cached("CACHE", name="not_a_str")
    def not_a_str(n: int) -> str:
        return n  # type: ignore[return-value]

    @ploy.cached("STATE", name="on_state")
    def on_state(n: int) -> str:
        return str(n)

    with app.app_context():
        with pytest.raises(TypeError, match="compute must return a str, not int"):
            not_a_str(1)
        assert g.env.CACHE.get(not_a_str.key(1)) is None
        with pytest.raises(TypeError, match="STATE is not a cache binding"):
            on_state(1)
    with pytest.raises(RuntimeError, match="application context"):
        report(1)
    with pytest.raises(TypeError, match="takes a binding name first"):
        ploy.cached(report)  # type: ignore[arg-type]


def test_cached_closures_and_lambdas_need_a_name(make_app: Any) -> None:
    """Two closures of one factory have one qualified name: without a name
    of their own they would share keys, and one would serve the other's values."""

    def factory(n: int, name: str | None) -> Any:
        def mul(x: int) -> str:
            return str(x * n)

        return ploy.cached("CACHE", ttl=60, name=name)(mul)

    with pytest.raises(TypeError, match="has no name of its own"):
        factory(2, None)
    with pytest.raises(TypeError, match="has no name of its own"):
        ploy.cached("CACHE")(lambda x: str(x))
    double, triple = factory(2, "double"), factory(3, "triple")
    with make_app().app_context():
        assert (double(5), triple(5)) == ("10", "15")
        assert double.key(5).startswith("double:") and triple.key(5).startswith("triple:")
        g.env.CACHE.clear()


def test_cached_refuses_async_functions_and_subclassed_arguments() -> None:
    import enum

    async def fetch(n: int) -> str:
        return str(n)

    with pytest.raises(TypeError, match="async def"):
        ploy.cached("CACHE", name="fetch")(fetch)  # type: ignore[arg-type]

    class Level(enum.IntEnum):
        ONE = 1

    with pytest.raises(TypeError, match="must be str, int, float, bool, None"):
        report.key(Level.ONE)


def test_a_coroutine_from_compute_is_refused_and_never_awaited(cache_env: Any) -> None:
    async def fetch() -> str:
        return "x"

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine was never awaited" would be one
        with pytest.raises(TypeError, match="synchronous"):
            cache_env.CACHE.get_or_set("k", fetch)
    assert cache_env.CACHE.get("k") is None


def test_get_or_set_inside_its_own_compute_does_not_wait_for_itself(cache_env: Any) -> None:
    """A compute that asks for its own key (directly or deeper) gets a
    computed value at once, not after lock_timeout at each level."""
    c = cache_env.CACHE
    start = time.monotonic()
    value = c.get_or_set(
        "k", lambda: "outer " + c.get_or_set("k", lambda: "inner", lock_timeout=5), lock_timeout=5
    )
    assert value == "outer inner" and time.monotonic() - start < 1.0
    assert c.get("k") == "outer inner"
