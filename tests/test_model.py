"""Model-based tests: each binding, step by step, against a plain dict.

Hypothesis drives random sequences of operations with adversarial keys and
values (unicode, NUL, ``%``, ``_``, ``:``, 512-byte keys, strings that look
like SQL or Redis commands, integers at the 64-bit edges) against a real
backend, and checks every answer against a small model written here from
the documented behaviour: a dict, an expiry time per cache entry, and an
independent implementation of the update operators. The model never calls
flask-ploy code.

One machine per backend: memory:// and the SQLite cache (TTLs on a fake
clock), Redis (a private redis-server; long TTLs in the main machine), a
small machine with real 1-second TTLs and one ~1.05 s wait per example on
Redis and on the SQLite cache, and State on SQLite, PostgreSQL and MariaDB.
``PLOY_MODEL_EXAMPLES`` sets the examples per backend (default 500; the
real-TTL machines run a twentieth of that, at least 20). Runs are
derandomized, so a failure reproduces on every run; each test prints, and
records as a ``ploy_figure`` user property, the number of examples it ran.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask, g
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    precondition,
    rule,
    run_state_machine_as_test,
)

from flask_ploy import Cache
from flask_ploy.cache import MemoryBackend, RedisBackend, SQLiteBackend

from . import servers
from .conftest import AppFactory, _state_url, worker_id

# A 70,000-character value makes long reprs of failing steps; that is fine.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

EXAMPLES = int(os.environ.get("PLOY_MODEL_EXAMPLES", "500"))
TTL_EXAMPLES = max(20, EXAMPLES // 20)
STEPS = int(os.environ.get("PLOY_MODEL_STEPS", "25"))

INT_MIN, INT_MAX = -(2**63), 2**63 - 1

# -- adversarial data ----------------------------------------------------------

KEY_POOL = [
    "a",
    "a%",
    "a_",
    "a%b",
    "a_b",
    "ab",
    "a:b",
    "a:b:c",
    "%",
    "_",
    ":",
    "::",
    "*",
    "[a]",
    "?",
    "\\",
    " ",
    "\x00",
    "a\x00",
    "a\x00b",
    "\n",
    "ü",
    "日本",
    "🎉",
    "'",
    "'; DROP TABLE ploy_state; --",
    "' OR '1'='1",
    '") OR 1=1 --',
    "FLUSHALL",
    "KEYS *",
    "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
    "ploy:default:a",
    "default:a",
    "model:a",
    "k" * 512,
    "k" * 511,
    "é" * 256,
    "🎉" * 128,
    "a" + "%" * 200,
]
assert all(0 < len(k.encode()) <= 512 for k in KEY_POOL)

BAD_KEYS = ["", "k" * 513, "é" * 257, "🎉" * 129, "a" * 511 + "é"]

INT_VALUES = [
    "0",
    "1",
    "-1",
    "42",
    "-0",
    "007",
    "+5",
    " 5",
    "5 ",
    "1e3",
    "1.5",
    "5\x00",
    str(INT_MAX),
    str(INT_MIN),
    str(INT_MAX - 1),
    str(INT_MIN + 1),
    str(INT_MAX + 1),
    str(INT_MIN - 1),
    "٣",  # an Arabic-Indic digit: int() accepts it, counters must not
]
JSON_VALUES = [
    "{}",
    '{"a": 1}',
    '{"a": {"b": [1, 2]}, "n": 2.5}',
    '{"tags": [], "p": {"q": {}}}',
    '{"a": "x", "日本": {"%": 1}}',
    "[1, 2]",
    '"string"',
    "3",
    "not json",
]
VALUE_POOL = [
    "",
    "v",
    "nul\x00inside",
    "ünïcödé ✓ 日本語 🎉",
    "line1\nline2\r\n",
    "%_*?[]{}:\\",
    "'; DROP TABLE ploy_state; --",
    "*3\r\n$3\r\nSET\r\n",
    "x" * 70_000,
    *INT_VALUES,
    *JSON_VALUES,
]

text = st.text(max_size=12)  # the default alphabet excludes surrogates
#: Most steps use a handful of keys, so operations meet on the same key often.
HOT_KEYS = ["a", "a%", "a:b", "\x00", "🎉" * 128, "'; DROP TABLE ploy_state; --"]
keys = st.one_of(
    st.sampled_from(HOT_KEYS),
    st.sampled_from(HOT_KEYS),
    st.sampled_from(KEY_POOL),
    text.filter(bool),
)
values = st.one_of(st.sampled_from(INT_VALUES), st.sampled_from(VALUE_POOL), st.text(max_size=40))
amounts = st.one_of(
    st.sampled_from([1, -1, 0, 2, 100, INT_MAX, INT_MIN, INT_MAX - 1, -INT_MAX]),
    st.integers(-(10**6), 10**6),
)
prefixes = st.one_of(
    st.sampled_from(["", "a", "a%", "a_", "a:", "%", "_", ":", "\x00", "ü", "日", "🎉", "k" * 100]),
    st.text(max_size=3),
)

PATHS = st.sampled_from(["a", "b", "a.b", "a.c", "n", "tags", "p.q.r", "日本", "%", "x_y"])
JSON_OPERANDS = st.one_of(
    st.integers(-1000, 1000),
    st.text(max_size=5),
    st.lists(st.integers(0, 9), max_size=3),
    st.fixed_dictionaries({"z": st.integers(0, 3)}),
    st.booleans(),
)


def _fields(operand: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(PATHS, operand, min_size=1, max_size=2)


UPDATE_OPS = st.fixed_dictionaries(
    {},
    optional={
        "$set": _fields(JSON_OPERANDS),
        "$unset": _fields(st.just(True)),
        "$inc": _fields(st.one_of(st.integers(-5, 5), st.sampled_from([0.5, -2.25]))),
        "$push": _fields(JSON_OPERANDS),
        "$pop": _fields(st.sampled_from([1, -1])),
    },
).filter(bool)

# -- the model's own rules -------------------------------------------------------

_COUNTER = re.compile(r"(0|-?[1-9][0-9]*)", re.ASCII)


class Refused(Exception):
    """The model says the operation must raise ValueError and change nothing."""


def counter_value(value: str) -> int | None:
    """The integer a counter holds, or None if *value* is not a canonical 64-bit int."""
    if not _COUNTER.fullmatch(value):
        return None
    n = int(value)
    return n if INT_MIN <= n <= INT_MAX else None


def model_incr(old: str | None, amount: int) -> int:
    if old is None:
        return amount
    n = counter_value(old)
    if n is None or not INT_MIN <= n + amount <= INT_MAX:
        raise Refused
    return n + amount


def model_update(raw: str | None, ops: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ploy's update operators, from the documentation, on a copy."""
    paths = [p for fields in ops.values() for p in fields]
    for i, p in enumerate(paths):
        for q in paths[i + 1 :]:
            if p == q or p.startswith(q + ".") or q.startswith(p + "."):
                raise Refused
    if raw is None:
        doc: Any = {}
    else:
        try:
            doc = json.loads(raw)
        except ValueError:
            raise Refused from None
        if not isinstance(doc, dict):
            raise Refused
        doc = copy.deepcopy(doc)
    for op, fields in ops.items():
        for path, operand in fields.items():
            *parents, leaf = path.split(".")
            node: Any = doc
            for part in parents:
                if part not in node or not isinstance(node[part], dict):
                    if op in ("$unset", "$pop"):  # no such path: nothing to remove
                        node = None
                        break
                    if part in node:
                        raise Refused
                    node[part] = {}
                node = node[part]
            if node is None:
                continue
            if op == "$set":
                node[leaf] = copy.deepcopy(operand)
            elif op == "$unset":
                node.pop(leaf, None)
            elif op == "$inc":
                current = node.get(leaf)
                current = 0 if current is None else current  # missing or null
                if isinstance(current, bool) or not isinstance(current, (int, float)):
                    raise Refused
                node[leaf] = current + operand
            elif op == "$push":
                if leaf not in node:
                    node[leaf] = [copy.deepcopy(operand)]
                elif isinstance(node[leaf], list):
                    node[leaf].append(copy.deepcopy(operand))
                else:
                    raise Refused
            elif op == "$pop" and node.get(leaf) is not None:
                if not isinstance(node[leaf], list):
                    raise Refused
                if node[leaf]:
                    node[leaf].pop(-1 if operand == 1 else 0)
    return doc  # type: ignore[no-any-return]


def utf8_order(keys: Any) -> list[str]:
    return sorted(keys, key=lambda k: k.encode("utf-8"))


# -- counting and reporting --------------------------------------------------------

RUNS: dict[str, int] = {}


def report(request: pytest.FixtureRequest, name: str, wanted: int, started: float) -> None:
    """Print and record the examples one machine ran; fail if fewer than wanted."""
    ran = RUNS.get(name, 0)
    took = time.monotonic() - started
    figure = f"model {name}: {ran} examples (up to {STEPS} steps each) in {took:.1f} s"
    print(figure)
    request.node.user_properties.append(("ploy_figure", figure))
    assert ran >= wanted, f"hypothesis ran {ran} examples of {name}, fewer than {wanted}"


def machine_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=STEPS,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
        print_blob=True,
    )


# -- Cache -----------------------------------------------------------------------

Expiry = tuple[float, float] | None  # (earliest, latest) expiry time, or None for none


class CacheModel(RuleBasedStateMachine):
    """A Cache binding against ``{key: (value, expiry)}``.

    The clock is either fake (memory://: calls take no time, an entry is
    gone once ``now >= set time + ttl``) or real (Redis: each call is
    bracketed by ``time.monotonic()``, so an expiry is known to within the
    call's duration; before touching a key whose expiry is less than
    :attr:`guard` seconds away the model waits until it has surely passed, so
    every answer it checks is certain).
    """

    name = "cache"
    #: The TTLs the rules pick from (an index into this tuple is generated).
    ttl_options: tuple[Any, ...] = (None,)
    #: Real clock: seconds of doubt either side of an expiry.
    margin = 0.05
    guard = 0.25
    fake = True

    def __init__(self) -> None:
        super().__init__()
        RUNS[self.name] = RUNS.get(self.name, 0) + 1
        self.now = 0.0
        self.data: dict[str, tuple[str, Expiry]] = {}
        self.touched: set[str] = set()
        self.slept = False
        self.cache = self.make()

    def make(self) -> Cache:
        raise NotImplementedError

    # the clock ---------------------------------------------------------------

    def clock(self) -> float:
        return self.now

    def ttl(self, i: int) -> Any:
        return self.ttl_options[i % len(self.ttl_options)]

    def settle(self, *ks: str) -> None:
        """Real clock: wait out any expiry that a call starting now might straddle."""
        if self.fake:
            return
        for k in ks:
            item = self.data.get(k)
            if item is None or item[1] is None:
                continue
            lo, hi = item[1]
            now = time.monotonic()
            if lo - self.margin - self.guard <= now <= hi + self.margin:
                time.sleep(hi + 2 * self.margin - now)

    def status(self, key: str, t0: float, t1: float) -> str | None:
        """The model's value of *key* for a call that ran during [t0, t1]."""
        item = self.data.get(key)
        if item is None:
            return None
        value, exp = item
        if exp is None:
            return value
        if self.fake:
            t1 = t0 = self.now
            if t0 < exp[0]:
                return value
        elif t1 < exp[0] - self.margin:
            return value
        if t0 >= exp[1] + (0 if self.fake else self.margin):
            del self.data[key]
            return None
        raise AssertionError(f"{key!r}: a call of {t1 - t0:.3f} s straddled its expiry")

    def expiry(self, ttl: Any, t0: float, t1: float) -> Expiry:
        if ttl is None:
            return None
        seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
        return (t0 + seconds, t1 + seconds)

    def call(self, fn: Callable[[], Any]) -> tuple[Any, float, float]:
        if self.fake:
            return fn(), self.now, self.now
        t0 = time.monotonic()
        result = fn()
        return result, t0, time.monotonic()

    # rules -------------------------------------------------------------------

    @rule(key=keys)
    def get(self, key: str) -> None:
        self.settle(key)
        got, t0, t1 = self.call(lambda: self.cache.get(key))
        want = self.status(key, t0, t1)
        assert got == want, f"get({key!r}): backend {got!r:.80}, model {want!r:.80}"

    @rule(key=keys, value=values, i=st.integers(0, 5))
    def set(self, key: str, value: str, i: int) -> None:
        ttl = self.ttl(i)
        _, t0, t1 = self.call(lambda: self.cache.set(key, value, ttl=ttl))
        self.touched.add(key)
        self.data[key] = (value, self.expiry(ttl, t0, t1))

    @rule(key=keys)
    def delete(self, key: str) -> None:
        self.settle(key)
        present, t0, t1 = self.call(lambda: self.cache.delete(key))
        assert present is (self.status(key, t0, t1) is not None)
        self.data.pop(key, None)

    @rule(key=keys, amount=amounts, i=st.integers(0, 5))
    def incr(self, key: str, amount: int, i: int) -> None:
        ttl = self.ttl(i)
        self.settle(key)
        try:
            got, t0, t1 = self.call(lambda: self.cache.incr(key, amount, ttl=ttl))
        except ValueError:
            old = self.status(key, *self.call(lambda: None)[1:])
            with pytest.raises(Refused):
                model_incr(old, amount)
            assert self.cache.get(key) == old
            return
        self.touched.add(key)
        old = self.status(key, t0, t1)
        want = model_incr(old, amount)  # Refused: the backend accepted a bad incr
        assert got == want, f"incr({key!r}, {amount}) on {old!r:.40}: {got} != {want}"
        exp = self.expiry(ttl, t0, t1) if old is None else self.data[key][1]
        self.data[key] = (str(got), exp)

    @rule(key=keys, value=values, i=st.integers(0, 5))
    def add(self, key: str, value: str, i: int) -> None:
        ttl = self.ttl(i)
        self.settle(key)
        stored, t0, t1 = self.call(lambda: self.cache.add(key, value, ttl=ttl))
        old = self.status(key, t0, t1)
        assert stored is (old is None), f"add({key!r}) stored={stored}, model had {old!r:.40}"
        if stored:
            self.touched.add(key)
            self.data[key] = (value, self.expiry(ttl, t0, t1))

    @rule(ks=st.lists(keys, max_size=5))
    def get_many(self, ks: list[str]) -> None:
        self.settle(*ks)
        got, t0, t1 = self.call(lambda: self.cache.get_many(ks))
        assert list(got) == list(dict.fromkeys(ks))
        for k in ks:
            assert got[k] == self.status(k, t0, t1), f"get_many: {k!r}"

    @rule(mapping=st.dictionaries(keys, values, max_size=4), i=st.integers(0, 5))
    def set_many(self, mapping: dict[str, str], i: int) -> None:
        ttl = self.ttl(i)
        _, t0, t1 = self.call(lambda: self.cache.set_many(mapping, ttl=ttl))
        for k, v in mapping.items():
            self.touched.add(k)
            self.data[k] = (v, self.expiry(ttl, t0, t1))

    @rule(
        op=st.sampled_from(["get", "set", "delete", "incr", "add", "get_many", "set_many"]),
        bad=st.sampled_from(BAD_KEYS),
        key=keys,
    )
    def refused(self, op: str, bad: str, key: str) -> None:
        """A bad key, alone or among good ones, raises and writes nothing."""
        calls: dict[str, Callable[[], Any]] = {
            "get": lambda: self.cache.get(bad),
            "set": lambda: self.cache.set(bad, "v"),
            "delete": lambda: self.cache.delete(bad),
            "incr": lambda: self.cache.incr(bad),
            "add": lambda: self.cache.add(bad, "v"),
            "get_many": lambda: self.cache.get_many([key, bad]),
            "set_many": lambda: self.cache.set_many({key: "written?", bad: "v"}),
        }
        with pytest.raises(ValueError):
            calls[op]()

    @precondition(lambda self: self.fake)
    @rule(seconds=st.sampled_from([0.4, 1.0, 1.1, 2.3, 7.0, 3600.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    def teardown(self) -> None:
        ks = sorted(self.touched | set(self.data))
        if ks:
            self.settle(*ks)
            got, t0, t1 = self.call(lambda: self.cache.get_many(ks))
            for k in ks:
                assert got[k] == self.status(k, t0, t1), f"at the end: {k!r}"


class RedisTTLModel(CacheModel):
    """Real 1-second TTLs on Redis, with one ~1.05 s wait per example at most."""

    @precondition(lambda self: not self.slept)
    @rule()
    def sleep(self) -> None:
        self.slept = True
        time.sleep(1.05)


@pytest.fixture(scope="module")
def private_redis() -> Iterator[servers.RedisProc]:
    """A redis-server of this module's own, flushed before every example."""
    servers.need(bool(servers.REDIS_SERVER), "redis-server")
    proc = servers.start_redis()
    yield proc
    proc.kill()


def _run(
    machine: type[RuleBasedStateMachine], examples: int, request: pytest.FixtureRequest
) -> None:
    name = str(machine.name)  # type: ignore[attr-defined]
    started = time.monotonic()
    RUNS[name] = 0
    run_state_machine_as_test(machine, settings=machine_settings(examples))
    report(request, name, examples, started)


class MemoryModel(CacheModel):
    name = "memory"
    ttl_options = (None, None, 1, 2, 5, timedelta(seconds=3))

    def make(self) -> Cache:
        backend = MemoryBackend(clock=self.clock, max_entries=10_000)
        return Cache("CACHE", "model", backend, prefix="ploy")


def test_model_memory(request: pytest.FixtureRequest) -> None:
    _run(MemoryModel, EXAMPLES, request)


class SQLiteModel(CacheModel):
    """The SQLite cache on a fake clock: one file, emptied before every example."""

    name = "sqlite"
    ttl_options = MemoryModel.ttl_options
    backend: SQLiteBackend | None = None

    def make(self) -> Cache:
        backend = type(self).backend
        assert backend is not None
        backend.clock = self.clock
        backend.clear("")
        return Cache("CACHE", "model", backend, prefix="ploy")


def test_model_sqlite(request: pytest.FixtureRequest, tmp_path: Any) -> None:
    backend = SQLiteBackend(f"sqlite:///{tmp_path}/model.sqlite3")
    try:
        machine = type("SQLite_sqlite", (SQLiteModel,), {"backend": backend})
        _run(machine, EXAMPLES, request)
    finally:
        backend.close()


def test_model_sqlite_real_ttls(request: pytest.FixtureRequest, tmp_path: Any) -> None:
    """Real 1-second TTLs on the SQLite cache (its expiry runs on Unix time)."""
    backend = SQLiteBackend(f"sqlite:///{tmp_path}/model.sqlite3")

    def make(self: CacheModel) -> Cache:
        backend.clear("")
        return Cache("CACHE", "model", backend, prefix="ploy")

    attrs = {"name": "sqlite-ttl", "make": make, "ttl_options": (None, 1, 1), "fake": False}
    try:
        _run(type("SQLite_ttl", (RedisTTLModel,), attrs), TTL_EXAMPLES, request)
    finally:
        backend.close()


def _redis_machine(
    base: type[CacheModel], proc: servers.RedisProc, name: str, ttls: tuple[Any, ...]
) -> type[CacheModel]:
    backend = RedisBackend(proc.url, options={"socket_timeout": 5})

    def make(self: CacheModel) -> Cache:
        backend.client.flushdb()
        return Cache("CACHE", "model", backend, prefix=f"m{uuid.uuid4().hex[:6]}")

    attrs = {"name": name, "make": make, "ttl_options": ttls, "fake": False}
    return type(f"Redis_{name}", (base,), attrs)


def test_model_redis(request: pytest.FixtureRequest, private_redis: servers.RedisProc) -> None:
    ttls = (None, None, 3600, timedelta(hours=1))
    _run(_redis_machine(CacheModel, private_redis, "redis", ttls), EXAMPLES, request)


def test_model_redis_real_ttls(
    request: pytest.FixtureRequest, private_redis: servers.RedisProc
) -> None:
    ttls = (None, 1, 1)
    _run(_redis_machine(RedisTTLModel, private_redis, "redis-ttl", ttls), TTL_EXAMPLES, request)


# -- State -------------------------------------------------------------------------


class Aborted(Exception):
    """Raised at the end of a model transaction that must write nothing."""


#: Keys of transaction steps: mostly the hot ones, so that a step meets what
#: an earlier step (or transaction) wrote or deleted.
tx_keys = st.one_of(st.sampled_from(HOT_KEYS), st.sampled_from(HOT_KEYS), keys)
#: One step of a model transaction: (operation, arguments...).
TX_STEPS = st.one_of(
    st.tuples(st.just("get"), tx_keys),
    st.tuples(st.just("set"), tx_keys, values),
    st.tuples(st.just("delete"), tx_keys),
    st.tuples(st.just("incr"), tx_keys, amounts),
    st.tuples(st.just("update"), st.one_of(tx_keys, st.sampled_from(["doc", "doc2"])), UPDATE_OPS),
    st.tuples(st.just("get_many"), st.lists(tx_keys, max_size=4)),
    st.tuples(
        st.just("list"),
        st.one_of(st.sampled_from(["", "", "a", "a:", "\x00", "🎉"]), prefixes),
        st.one_of(st.integers(1, 4), st.just(1000)),
        st.one_of(st.none(), tx_keys),
    ),
)


def check_tx_step(tx: Any, view: dict[str, str], step: tuple[Any, ...]) -> None:
    """Run *step* on *tx* and check it against *view*, which it updates."""
    op, *args = step
    if op == "get":
        assert tx.get(args[0]) == view.get(args[0]), step
    elif op == "set":
        tx.set(args[0], args[1])
        view[args[0]] = args[1]
    elif op == "delete":
        assert tx.delete(args[0]) is (args[0] in view), step
        view.pop(args[0], None)
    elif op == "incr":
        key, amount = args
        try:
            want = model_incr(view.get(key), amount)
        except Refused:
            with pytest.raises(ValueError):
                tx.incr(key, amount)
            return
        assert tx.incr(key, amount) == want, step
        view[key] = str(want)
    elif op == "update":
        key, ops = args
        old = view.get(key)
        try:
            doc = model_update(old, ops)
        except Refused:
            with pytest.raises(ValueError):
                tx.update(key, ops)
            return
        got = tx.update(key, ops)
        if old is None:
            assert got is None, step
            return
        assert json.loads(got) == doc, step
        view[key] = got
    elif op == "get_many":
        assert tx.get_many(args[0]) == {k: view.get(k) for k in args[0]}, step
    else:
        prefix, limit, cursor = args
        matching = utf8_order(k for k in view if k.startswith(prefix))
        if cursor:
            matching = [k for k in matching if k.encode() > cursor.encode()]
        page = tx.list(prefix, limit=limit, cursor=cursor)
        assert page.keys == matching[:limit], step
        assert page.cursor == (matching[limit - 1] if len(matching) > limit else None), step


class StateModel(RuleBasedStateMachine):
    """A State binding against a dict, inside one app context per example."""

    name = "state"
    app: Flask

    def __init__(self) -> None:
        super().__init__()
        RUNS[self.name] = RUNS.get(self.name, 0) + 1
        self.data: dict[str, str] = {}
        self.ctx = self.app.app_context()
        self.ctx.push()
        self.state = g.env.STATE
        self.state.clear()

    @rule(key=keys)
    def get(self, key: str) -> None:
        assert self.state.get(key) == self.data.get(key)

    @rule(key=keys, value=values)
    def set(self, key: str, value: str) -> None:
        self.state.set(key, value)
        self.data[key] = value

    @rule(key=keys)
    def delete(self, key: str) -> None:
        assert self.state.delete(key) is (key in self.data)
        self.data.pop(key, None)

    @rule(key=keys, amount=amounts)
    def incr(self, key: str, amount: int) -> None:
        old = self.data.get(key)
        try:
            want = model_incr(old, amount)
        except Refused:
            with pytest.raises(ValueError):
                self.state.incr(key, amount)
            assert self.state.get(key) == old
            return
        assert self.state.incr(key, amount) == want
        self.data[key] = str(want)

    @rule(key=keys, value=values)
    def add(self, key: str, value: str) -> None:
        assert self.state.add(key, value) is (key not in self.data)
        self.data.setdefault(key, value)

    @rule(key=st.one_of(keys, st.sampled_from(["doc", "doc2"])), ops=UPDATE_OPS)
    def update(self, key: str, ops: dict[str, dict[str, Any]]) -> None:
        old = self.data.get(key)
        try:
            want = model_update(old, ops)
        except Refused:
            with pytest.raises(ValueError):
                self.state.update(key, ops)
            assert self.state.get(key) == old
            return
        got = self.state.update(key, ops)
        if old is None:  # as on Ploy: a missing key stays missing
            assert got is None and self.state.get(key) is None
            return
        assert json.loads(got) == want, f"update({key!r}, {ops}) on {old!r:.60}"
        assert all(math.isfinite(x) for x in _numbers(want))
        self.data[key] = got

    @rule(ks=st.lists(keys, max_size=6))
    def get_many(self, ks: list[str]) -> None:
        assert self.state.get_many(ks) == {k: self.data.get(k) for k in ks}

    @rule(mapping=st.dictionaries(keys, values, max_size=5))
    def set_many(self, mapping: dict[str, str]) -> None:
        self.state.set_many(mapping)
        self.data.update(mapping)

    @rule(ks=st.lists(keys, max_size=5))
    def delete_many(self, ks: list[str]) -> None:
        present = {k for k in ks if k in self.data}
        assert self.state.delete_many(ks) == len(present)
        for k in present:
            del self.data[k]

    @rule(
        prefix=prefixes,
        limit=st.one_of(st.integers(1, 6), st.just(1000)),
        cursor=st.one_of(st.none(), keys, st.just("")),
    )
    def list(self, prefix: str, limit: int, cursor: str | None) -> None:
        matching = utf8_order(k for k in self.data if k.startswith(prefix))
        if cursor:
            matching = [k for k in matching if k.encode() > cursor.encode()]
        page = matching[:limit]
        got = self.state.list(prefix, limit=limit, cursor=cursor)
        assert got.keys == page, f"list({prefix!r}, limit={limit}, cursor={cursor!r:.30})"
        assert got.cursor == (page[-1] if len(matching) > limit else None)

    @rule()
    def count(self) -> None:
        assert self.state.count() == len(self.data)

    @rule(
        key=keys,
        which=st.sampled_from(["current", "absent", "other"]),
        other=values,
        new=values,
    )
    def replace(self, key: str, which: str, other: str, new: str) -> None:
        current = self.data.get(key)
        expected = {"current": current, "absent": None, "other": other}[which]
        swapped = current == expected  # None == None: absent as expected
        assert self.state.replace(key, expected, new) is swapped, (key, expected, current)
        if swapped:
            self.data[key] = new

    @rule(steps=st.lists(TX_STEPS, max_size=12), abort=st.booleans())
    def transact(self, steps: list[tuple[Any, ...]], abort: bool) -> None:
        """A transaction of random steps, each checked against a copy of the
        model (its own writes included); committed, or rolled back by an
        exception at the end."""

        def fn(tx: Any) -> dict[str, str]:
            view = dict(self.data)  # afresh on every run
            for step in steps:
                check_tx_step(tx, view, step)
            if abort:
                raise Aborted(view)
            return view

        try:
            view = self.state.transact(fn)
        except Aborted:
            return
        self.data = view

    @rule(
        op=st.sampled_from(
            ["get", "set", "delete", "incr", "add", "update", "get_many", "set_many", "delete_many"]
        ),
        bad=st.sampled_from(BAD_KEYS),
        key=keys,
    )
    def refused(self, op: str, bad: str, key: str) -> None:
        s = self.state
        calls: dict[str, Callable[[], Any]] = {
            "get": lambda: s.get(bad),
            "set": lambda: s.set(bad, "v"),
            "delete": lambda: s.delete(bad),
            "incr": lambda: s.incr(bad),
            "add": lambda: s.add(bad, "v"),
            "update": lambda: s.update(bad, {"$set": {"a": 1}}),
            "get_many": lambda: s.get_many([key, bad]),
            "set_many": lambda: s.set_many({key: "written?", bad: "v"}),
            "delete_many": lambda: s.delete_many([key, bad]),
        }
        with pytest.raises(ValueError):
            calls[op]()

    def teardown(self) -> None:
        try:
            assert dict(self.state.items(page_size=7)) == self.data
        finally:
            self.ctx.pop()


def _numbers(doc: Any) -> Iterator[float]:
    if isinstance(doc, dict):
        for v in doc.values():
            yield from _numbers(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _numbers(v)
    elif isinstance(doc, (int, float)) and not isinstance(doc, bool):
        yield float(doc)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_model_state(
    kind: str, make_app: AppFactory, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    app = make_app(
        {"state": {"STATE": "model"}},
        PLOY_STATE_URL=_state_url(kind, tmp_path),
        PLOY_STATE_TABLE=f"ploy_model_{worker_id()}",
    )
    _run(type(f"State_{kind}", (StateModel,), {"name": kind, "app": app}), EXAMPLES, request)
