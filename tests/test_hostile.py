"""Hostile input: one table of bad inputs across the three surfaces a user
touches (the Python API, ``ploy.yaml`` with the ``PLOY_*`` settings, and the
``flask ploy`` CLI), each with the exception (or exit code) and message it
must give, and a check that the stores are unchanged afterwards.

Then isolation, property-based: no key, however crafted, reaches another
resource's data or another app's (a different ``PLOY_CACHE_KEY_PREFIX``),
on memory://, the SQLite cache, Redis and SQLite State.

The API rows run on the SQLite cache and SQLite State: the argument
checks come before any backend is touched, and the contract suites run
their own BAD_CALLS tables on every backend. The real default
``PLOY_MAX_VALUE_BYTES`` (25 MiB) is tested on memory:// and SQLite; on
MariaDB, whose default ``max_allowed_packet`` is 16 MiB, a value under 25
MiB but over what one packet carries raises StateUnavailable (see
:func:`test_mariadb_packet_limit_below_the_value_limit`).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, g
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_ploy import Cache, FlaskPloy, PloyConfigError, StateUnavailable, UnknownBinding
from flask_ploy.cache import MemoryBackend, RedisBackend, SQLiteBackend

from . import servers
from .conftest import AppFactory, worker_id

MIB = 1024 * 1024
DEFAULT_MAX_VALUE = 25 * MIB

BINDINGS = {
    "cache": {"CACHE": "default", "OTHER_CACHE": "other"},
    "state": {"STATE": "default", "USER_STATE": "users"},
}


@dataclass
class World:
    """An app with data in every resource, and ways to poke at it."""

    app: Flask
    tmp: Path
    state_path: str
    marker: Path  # a file that an unsafe YAML tag would create

    @property
    def cache_file(self) -> str:
        backend = self.app.extensions["ploy"].app_bindings(self.app).caches["CACHE"].backend
        assert isinstance(backend, SQLiteBackend)  # the default cache
        return backend.path

    def snapshot(self) -> tuple[Any, ...]:
        """Every stored byte: the State table and the cache's."""
        found = []
        for path, sql in (
            (self.state_path, "SELECT resource, key, value FROM ploy_state"),
            (self.cache_file, "SELECT key, value, expires_at FROM ploy_cache"),
        ):
            conn = sqlite3.connect(path)
            try:
                found.append(sorted(conn.execute(sql)))
            finally:
                conn.close()
        return tuple(found)

    def yaml_app(self, text: str | bytes | None, **config: Any) -> Flask:
        """A new app reading ploy.yaml with *text* (None: no file), on the same stores."""
        root = self.tmp / f"yaml-{uuid.uuid4().hex[:8]}"
        root.mkdir()
        if text is not None:
            data = text.encode() if isinstance(text, str) else text
            (root / "ploy.yaml").write_bytes(data.replace(b"MARKER", str(self.marker).encode()))
        app = Flask("hostile", root_path=str(root))
        app.config["PLOY_STATE_URL"] = f"sqlite:///{self.state_path}"
        app.config.update(config)
        FlaskPloy(app)
        return app

    def config_app(self, **config: Any) -> Flask:
        app = Flask("hostile", root_path=str(self.tmp))
        app.config.update({"PLOY_BINDINGS": BINDINGS, **config})
        FlaskPloy(app)
        return app

    def cli(self, *args: str, input: str | bytes | None = None) -> Any:
        return self.app.test_cli_runner().invoke(args=["ploy", *args], input=input)

    def dump(self, content: str | bytes, name: str = "dump.jsonl") -> str:
        path = self.tmp / f"{uuid.uuid4().hex[:6]}-{name}"
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)


@dataclass(frozen=True)
class Bad:
    """One bad input: what to run, and what must come out."""

    surface: str  # "cache", "state", "yaml", "settings", "cli"
    what: str
    run: Callable[[World], Any]
    raises: type[BaseException] | int  # an exception, or a CLI exit code
    match: str

    def __str__(self) -> str:
        return f"{self.surface}: {self.what}"


def cache(op: str, *args: Any, **kwargs: Any) -> Callable[[World], Any]:
    return lambda w: getattr(g.env.CACHE, op)(*args, **kwargs)


def state(op: str, *args: Any, **kwargs: Any) -> Callable[[World], Any]:
    return lambda w: getattr(g.env.STATE, op)(*args, **kwargs)


def yaml_file(text: str | bytes | None, **config: Any) -> Callable[[World], Any]:
    return lambda w: w.yaml_app(text, **config)


def settings_(**config: Any) -> Callable[[World], Any]:
    return lambda w: w.config_app(**config)


def cli(*args: str) -> Callable[[World], Any]:
    return lambda w: w.cli(*args)


def load(content: str | bytes, *extra: str) -> Callable[[World], Any]:
    return lambda w: w.cli("state", "load", "STATE", w.dump(content), *extra)


OVER_DEFAULT = "x" * (DEFAULT_MAX_VALUE + 1)
OVER_DEFAULT_UTF8 = "é" * (DEFAULT_MAX_VALUE // 2 + 1)  # fewer chars than bytes

#: 8**3 references to one list: cheap for a SafeLoader, which never copies aliases.
CATALOGUE: list[Bad] = [
    # -- the Cache API --------------------------------------------------------------
    Bad("cache", "int key", cache("get", 42), TypeError, "key must be str, not int"),
    Bad("cache", "bytes key", cache("set", b"k", "v"), TypeError, "key must be str, not bytes"),
    Bad("cache", "empty key", cache("set", "", "v"), ValueError, "key must not be empty"),
    Bad("cache", "513-byte key", cache("set", "k" * 513, "v"), ValueError, "513 bytes.*512"),
    Bad("cache", "258 two-byte chars", cache("add", "é" * 258, "v"), ValueError, "516 bytes"),
    Bad("cache", "lone surrogate key", cache("set", "\udc80", "v"), ValueError, "surrogate"),
    Bad("cache", "dict value", cache("set", "k", {"a": 1}), TypeError, "not dict.*json.dumps"),
    Bad("cache", "bytes value", cache("set", "k", b"v"), TypeError, "not bytes.*decode"),
    Bad(
        "cache", "None value", cache("set", "k", None), TypeError, "value must be str, not NoneType"
    ),
    Bad(
        "cache",
        "value over 25 MiB",
        cache("set", "k", OVER_DEFAULT),
        ValueError,
        f"{DEFAULT_MAX_VALUE + 1} bytes.*limit of {DEFAULT_MAX_VALUE} \\(PLOY_MAX_VALUE_BYTES\\)",
    ),
    Bad(
        "cache",
        "value over 25 MiB in UTF-8 bytes",
        cache("set_many", {"k2": "v", "k": OVER_DEFAULT_UTF8}),
        ValueError,
        "PLOY_MAX_VALUE_BYTES",
    ),
    Bad("cache", "ttl=0", cache("set", "k", "v", ttl=0), ValueError, "at least 1 second"),
    Bad(
        "cache",
        "negative ttl",
        cache("add", "new", "v", ttl=-1),
        ValueError,
        "at least 1 second, got -1",
    ),
    Bad(
        "cache",
        "float ttl",
        cache("set", "k", "v", ttl=0.5),
        TypeError,
        "ttl must be an int.*not float",
    ),
    Bad("cache", "bool ttl", cache("incr", "k", ttl=True), TypeError, "not bool"),
    Bad("cache", "str ttl", cache("set", "k", "v", ttl="60"), TypeError, "not str"),
    Bad(
        "cache",
        "fractional timedelta",
        cache("set", "k", "v", ttl=timedelta(milliseconds=1500)),
        ValueError,
        "whole seconds",
    ),
    Bad(
        "cache",
        "float incr amount",
        cache("incr", "n", 1.0),
        TypeError,
        "amount must be int, not float",
    ),
    Bad("cache", "incr amount over 64 bits", cache("incr", "n", 2**63), ValueError, "64-bit"),
    Bad(
        "cache",
        "incr of a non-integer",
        cache("incr", "k"),
        ValueError,
        "value of 'k' is not an integer: 'before'",
    ),
    Bad("cache", "get_many of a str", cache("get_many", "abc"), TypeError, "iterable of str"),
    Bad(
        "cache",
        "set_many of pairs",
        cache("set_many", [("k", "v")]),
        TypeError,
        "dict of str to str",
    ),
    Bad(
        "cache",
        "set_many with one bad value",
        cache("set_many", {"new": "v", "k": 5}),
        TypeError,
        "value must be str, not int",
    ),
    # -- the State API ---------------------------------------------------------------
    Bad("state", "None key", state("get", None), TypeError, "key must be str, not NoneType"),
    Bad("state", "empty key", state("set", "", "v"), ValueError, "key must not be empty"),
    Bad("state", "513-byte key", state("delete", "k" * 513), ValueError, "513 bytes"),
    Bad("state", "129 four-byte chars", state("incr", "🎉" * 129), ValueError, "516 bytes"),
    Bad("state", "list value", state("set", "k", ["a"]), TypeError, "value must be str, not list"),
    Bad("state", "int value", state("add", "new", 5), TypeError, "not int.*json.dumps"),
    Bad("state", "lone surrogate value", state("set", "k", "a\ud800"), ValueError, "surrogate"),
    Bad(
        "state",
        "value over 25 MiB",
        state("set", "k", OVER_DEFAULT),
        ValueError,
        f"{DEFAULT_MAX_VALUE + 1} bytes.*PLOY_MAX_VALUE_BYTES",
    ),
    Bad(
        "state",
        "set_many over 25 MiB, all or nothing",
        state("set_many", {"new": "v", "k": OVER_DEFAULT_UTF8}),
        ValueError,
        "PLOY_MAX_VALUE_BYTES",
    ),
    Bad(
        "state",
        "incr of a non-integer",
        state("incr", "k", 1),
        ValueError,
        "not an integer: 'before'",
    ),
    Bad("state", "incr over INT_MAX", state("incr", "max", 1), ValueError, "overflow"),
    Bad(
        "state",
        "bool incr amount",
        state("incr", "n", True),
        TypeError,
        "amount must be int, not bool",
    ),
    Bad(
        "state",
        "unknown update operator",
        state("update", "doc", {"$rename": {"a": "b"}}),
        ValueError,
        "unknown update operator '\\$rename'",
    ),
    Bad(
        "state",
        "update ops not a dict",
        state("update", "doc", [("$set", {"a": 1})]),
        TypeError,
        "must be a dict",
    ),
    Bad("state", "empty update", state("update", "doc", {}), ValueError, "at least one operator"),
    Bad(
        "state",
        "$inc of a string",
        state("update", "doc", {"$inc": {"a": "1"}}),
        ValueError,
        "finite number",
    ),
    Bad(
        "state",
        "$inc of NaN",
        state("update", "doc", {"$inc": {"a": float("nan")}}),
        ValueError,
        "finite number",
    ),
    Bad(
        "state",
        "$pop 2",
        state("update", "doc", {"$pop": {"a": 2}}),
        ValueError,
        "1 \\(last\\) or -1",
    ),
    Bad(
        "state",
        "conflicting paths",
        state("update", "doc", {"$set": {"a": 1}, "$unset": {"a.b": 1}}),
        ValueError,
        "conflicts",
    ),
    Bad(
        "state",
        "empty path segment",
        state("update", "doc", {"$set": {"a..b": 1}}),
        ValueError,
        "empty segment",
    ),
    Bad(
        "state",
        "unserialisable $set",
        state("update", "doc", {"$set": {"a": object()}}),
        TypeError,
        "not JSON-serializable",
    ),
    Bad(
        "state",
        "update of a non-object",
        state("update", "k", {"$set": {"a": 1}}),
        ValueError,
        "'k' is not a JSON object",
    ),
    Bad("state", "list limit 0", state("list", limit=0), ValueError, "between 1 and 1000"),
    Bad("state", "list bytes prefix", state("list", b"a"), TypeError, "prefix must be str"),
    Bad(
        "state",
        "unknown binding",
        lambda w: g.env.NOPE,
        UnknownBinding,
        "no binding 'NOPE'.*CACHE, OTHER_CACHE, STATE, USER_STATE",
    ),
    # -- ploy.yaml and PLOY_* settings -----------------------------------------------------
    Bad(
        "yaml",
        "!!python/object/apply runs code",
        yaml_file("cache: !!python/object/apply:os.system ['touch MARKER']\n"),
        PloyConfigError,
        "could not determine a constructor.*python/object/apply.*safe_load",
    ),
    Bad(
        "yaml",
        "!!python/name",
        yaml_file("state:\n  STATE: !!python/name:os.system\n"),
        PloyConfigError,
        "python/name",
    ),
    Bad(
        "yaml",
        "tab indentation",
        yaml_file("cache:\n\tCACHE: default\n"),
        PloyConfigError,
        "invalid YAML",
    ),
    Bad(
        "yaml",
        "not UTF-8",
        yaml_file(b"cache:\n  CACHE: d\xe9faut\n"),
        PloyConfigError,
        "cannot read ploy.yaml",
    ),
    Bad(
        "yaml",
        "a number as resource",
        yaml_file("cache:\n  CACHE: 5\n"),
        PloyConfigError,
        "resource name 5 must match",
    ),
    Bad(
        "settings",
        "unknown cache scheme",
        settings_(PLOY_CACHE_URL="memcached://127.0.0.1"),
        PloyConfigError,
        "unknown scheme 'memcached'",
    ),
    Bad(
        "settings",
        "unsupported database",
        settings_(PLOY_STATE_URL="oracle://u@h/db"),
        PloyConfigError,
        "not supported|oracle",
    ),
    Bad(
        "settings",
        "table name with SQL in it",
        settings_(PLOY_STATE_TABLE="t; DROP TABLE x"),
        PloyConfigError,
        "SQL identifier",
    ),
    # -- the CLI: state load with malformed dumps, and bad arguments ------------------------
    Bad(
        "cli",
        "load: not JSON at all",
        load("key,value\nk,after\n"),
        1,
        "line 1: expected JSON Lines.*nothing was written",
    ),
    Bad(
        "cli",
        "load: a bad second line",
        load('{"key": "k", "value": "after"}\n{"key": "x", "value": \n'),
        1,
        "line 2: invalid JSON.*nothing was written",
    ),
    Bad(
        "cli",
        "load: a number as value",
        load('{"key": "k", "value": 5}\n'),
        1,
        "line 1: the value must be a string, found a number",
    ),
    Bad("cli", "load: missing value", load('{"key": "k"}\n'), 1, "line 1:.*missing 'value'"),
    Bad(
        "cli",
        "load: an extra field",
        load('{"key": "k", "value": "v", "ttl": 5}\n'),
        1,
        "unexpected 'ttl'",
    ),
    Bad("cli", "load: empty key", load('{"key": "", "value": "v"}\n'), 1, "key must not be empty"),
    Bad(
        "cli",
        "load: metadata not an object",
        load('{"key": "k", "value": "v", "metadata": [1]}\n'),
        1,
        "line 1: metadata of 'k' must be a dict",
    ),
    Bad(
        "cli",
        "load: metadata over 1024 bytes",
        load(json.dumps({"key": "k", "value": "v", "metadata": {"a": "x" * 2000}}) + "\n"),
        1,
        "line 1: metadata of 'k' is .* bytes as JSON, over the limit of 1024",
    ),
    Bad(
        "cli",
        "load: expiration a string",
        load('{"key": "k", "value": "v", "expiration": "soon"}\n'),
        1,
        "line 1: expiration of 'k' must be epoch seconds",
    ),
    Bad(
        "cli",
        "load: expiration negative",
        load('{"key": "k", "value": "v", "expiration": -1}\n'),
        1,
        "must be positive epoch seconds",
    ),
    Bad(
        "cli",
        "load: metadata nested too deeply",
        load('{"key": "k", "value": "v", "metadata": ' + '{"a":' * 5000 + "1" + "}" * 5001 + "\n"),
        1,
        "line 1: JSON nested too deeply",
    ),
    Bad(
        "cli",
        "load: 513-byte key",
        load(json.dumps({"key": "k" * 513, "value": "v"}) + "\n"),
        1,
        "513 bytes",
    ),
    Bad(
        "cli",
        "load: escaped lone surrogate",
        load('{"key": "k", "value": "\\ud800"}\n'),
        1,
        "lone surrogate",
    ),
    Bad("cli", "load: not UTF-8", load(b'{"key": "k", "value": "\xff"}\n'), 1, "line 1: not UTF-8"),
    Bad(
        "cli",
        "load: truncated JSON array",
        load('[{"key": "k", "value": "after"},'),
        1,
        "nothing was written",
    ),
    Bad(
        "cli",
        "load: data after the array",
        load('[{"key": "k", "value": "after"}] []'),
        1,
        "extra data after the closing",
    ),
    Bad("cli", "load: an array of arrays", load('[["k", "after"]]'), 1, "found an array"),
    Bad(
        "cli",
        "load --replace: empty input (a failed dump upstream)",
        load("", "--replace"),
        1,
        "no records.*would delete every key.*nothing was written",
    ),
    Bad(
        "cli",
        "load --replace: blank input",
        load(" \n\r\n\t", "--replace"),
        1,
        "no records.*would delete every key.*nothing was written",
    ),
    Bad(
        "cli",
        "load: a 5000-digit integer as value",
        load('{"key": "k", "value": ' + "9" * 5000 + "}\n"),
        1,
        "line 1: an integer of more than 4300 digits.*nothing was written",
    ),
    Bad(
        "cli",
        "load: a 5000-digit integer in metadata, in a JSON array",
        load('[\n{"key": "k", "value": "v", "metadata": {"n": ' + "1" * 5000 + "}}]"),
        1,
        "line 2: an integer of more than 4300 digits.*nothing was written",
    ),
    Bad(
        "cli",
        "load: a 4000-digit expiration",
        load('{"key": "k", "value": "v", "expiration": ' + "1" * 4000 + "}\n"),
        1,
        "line 1: expiration of 'k' .*nothing was written",
    ),
    Bad(
        "cli",
        "load: a field twice in a record",
        load('{"key": "k", "value": "after", "key": "b"}\n'),
        1,
        "line 1: the field 'key' twice in one object.*nothing was written",
    ),
    Bad(
        "cli",
        "load into a cache binding",
        lambda w: w.cli("state", "load", "CACHE", w.dump('{"key": "k", "value": "v"}\n')),
        2,
        "'CACHE' is a cache binding, not a state binding",
    ),
    Bad(
        "cli",
        "state get: unknown binding",
        cli("state", "get", "STAET", "k"),
        2,
        "'STAET' is not a binding.*Did you mean STATE",
    ),
    Bad(
        "cli",
        "state set: empty key",
        cli("state", "set", "STATE", "", "v"),
        2,
        "key must not be empty",
    ),
    Bad(
        "cli",
        "cache set: ttl 0",
        cli("cache", "set", "CACHE", "k", "v", "--ttl", "0"),
        2,
        "at least 1 second",
    ),
    Bad(
        "cli",
        "state list: limit 0",
        cli("state", "list", "STATE", "--limit", "0"),
        2,
        "'--limit': 0 is not in the range",
    ),
]


def test_catalogue_size(request: pytest.FixtureRequest) -> None:
    counts: dict[str, int] = {}
    for bad in CATALOGUE:
        counts[bad.surface] = counts.get(bad.surface, 0) + 1
    _figure(request, f"hostile catalogue: {len(CATALOGUE)} bad inputs: {counts}")
    assert len(CATALOGUE) >= 40
    assert len({str(b) for b in CATALOGUE}) == len(CATALOGUE), "two rows share a name"
    assert {"cache", "state", "yaml", "settings", "cli"} <= counts.keys()


@pytest.fixture
def world(make_app: AppFactory, tmp_path: Path) -> World:
    state_path = str(tmp_path / "state.sqlite3")
    app = make_app(BINDINGS, PLOY_STATE_URL=f"sqlite:///{state_path}")
    with app.app_context():
        g.env.STATE.set_many({"k": "before", "max": str(2**63 - 1), "doc": '{"a": {"b": 1}}'})
        g.env.USER_STATE.set("k", "users' own")
        g.env.CACHE.set_many({"k": "before", "n": "1"})
        g.env.OTHER_CACHE.set("k", "other's own")
    return World(app, tmp_path, state_path, tmp_path / "pwned")


@pytest.mark.parametrize("bad", CATALOGUE, ids=str)
def test_bad_input(world: World, bad: Bad) -> None:
    before = world.snapshot()
    if isinstance(bad.raises, int):
        result = bad.run(world)
        assert result.exit_code == bad.raises, result.output
        out = result.output.replace("\n", " ")
        assert "Traceback" not in result.output
        assert re.search(bad.match, out), out
    else:
        with world.app.app_context(), pytest.raises(bad.raises, match=bad.match):
            bad.run(world)
    assert world.snapshot() == before, "the bad input changed the stores"
    assert not world.marker.exists(), "an unsafe YAML tag ran code"


# -- the real default value limit, and MariaDB's packet limit -------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite cache", "sqlite"])
def test_the_default_25_mib_limit_is_exact(make_app: AppFactory, tmp_path: Path, kind: str) -> None:
    if kind == "memory":
        app = make_app({"cache": {"B": "default"}}, PLOY_CACHE_URL="memory://")
    elif kind == "sqlite cache":
        app = make_app({"cache": {"B": "default"}})
    else:
        app = make_app({"state": {"B": "default"}}, PLOY_STATE_URL=f"sqlite:///{tmp_path}/big.db")
    assert app.config["PLOY_MAX_VALUE_BYTES"] == DEFAULT_MAX_VALUE
    with app.app_context():
        b = g.env.B
        exact = "x" * (DEFAULT_MAX_VALUE - 2) + "é"  # 25 MiB exactly, in bytes
        b.set("big", exact)
        assert b.get("big") == exact
        with pytest.raises(ValueError, match=f"{DEFAULT_MAX_VALUE + 1} bytes"):
            b.set("big", exact + "x")
        assert b.get("big") == exact


@pytest.mark.slow
def test_mariadb_packet_limit_below_the_value_limit(make_app: AppFactory) -> None:
    """MariaDB's default max_allowed_packet (16 MiB) is below the 25 MiB value
    limit; PyMySQL sends bytes escaped, so values from about 8 MiB are refused
    by the server. The caller gets StateUnavailable, nothing is written, and
    the binding works again in the next app context."""
    servers.need(servers.sql_ok(servers.MARIADB_URL), f"MariaDB at {servers.MARIADB_URL}")
    app = make_app(
        {"state": {"STATE": "default"}},
        PLOY_STATE_URL=servers.MARIADB_URL,
        PLOY_STATE_TABLE=f"ploy_hostile_{worker_id()}",
    )
    with app.app_context():
        g.env.STATE.clear()
        g.env.STATE.set("k", "before")
    with app.app_context(), pytest.raises(StateUnavailable, match="max_allowed_packet|gone away"):
        g.env.STATE.set("k", "x" * 20 * MIB)  # under PLOY_MAX_VALUE_BYTES
    with app.app_context():
        assert g.env.STATE.get("k") == "before"
        g.env.STATE.set("k", "x" * MIB)
        assert len(g.env.STATE.get("k") or "") == MIB
        g.env.STATE.clear()


# -- isolation, property-based --------------------------------------------------------

CRAFTED = st.one_of(
    st.text(min_size=1, max_size=30),
    st.sampled_from(
        [
            "default:x",
            "sessions:x",
            "ploy:sessions:x",
            "other:k",
            ":",
            "*",
            "x*",
            "[a-z]*",
            "\\",
            "%",
            "_",
            "' OR resource = 'sessions",
            "k\x00sessions",
        ]
    ),
    st.builds(
        lambda a, b: f"{a}:{b}",
        st.sampled_from(["ploy", "appb", "default", "sessions"]),
        st.text(max_size=5),
    ),
)
PREFIXES = st.one_of(
    # glob characters: Redis clears a resource with SCAN MATCH <prefix>:<resource>:*
    st.sampled_from(["a", "ab", "a*", "*", "a?", "?", "[a]", "[ab]", "\\", "a\\*", "%", "_"]),
    st.text(
        alphabet=st.characters(blacklist_characters=":", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=8,
    ),
)

ISO_SETTINGS = settings(
    max_examples=int(os.environ.get("PLOY_ISOLATION_EXAMPLES", "500")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _cache_backend(kind: str, tmp_path: Path) -> Any:
    if kind == "memory":
        return MemoryBackend()
    if kind == "sqlite":
        return SQLiteBackend(f"sqlite:///{tmp_path}/iso-cache.sqlite3")
    servers.need(servers.redis_ok(), f"Redis at {servers.REDIS_URL}")
    return RedisBackend(servers.REDIS_URL)


def _figure(request: pytest.FixtureRequest, text: str) -> None:
    print(text)
    request.node.user_properties.append(("ploy_figure", text))


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_no_cache_key_reaches_another_resource_or_app(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Bindings as FlaskPloy builds them (prefix, resource) on one shared
    backend: crafted keys and prefixes (glob characters included) never read,
    overwrite or clear another resource's or another app's keys."""
    backend = _cache_backend(kind, tmp_path)
    run = f"i{uuid.uuid4().hex[:8]}"
    examples = 0

    def binding(prefix: str, resource: str) -> Cache:
        return Cache("CACHE", resource, backend, prefix=run + prefix, on_error="raise")

    @ISO_SETTINGS
    @given(key=CRAFTED, probe=CRAFTED, pa=PREFIXES, pb=PREFIXES)
    def check(key: str, probe: str, pa: str, pb: str) -> None:
        nonlocal examples
        examples += 1
        mine, sessions = binding(pa, "default"), binding(pa, "sessions")
        theirs, their_sessions = binding(pb, "default"), binding(pb, "sessions")
        value = f"secret of {pa}/{key}"
        try:
            mine.set(key, value)
            assert mine.get(key) == value
            assert sessions.get(key) is None
            assert sessions.get_many([key, probe]) == {key: None, probe: None}
            assert sessions.add(key, "mine?") is True  # not taken by the other resource
            assert mine.get(key) == value
            sessions.clear()
            assert mine.get(key) == value
            if pa != pb:
                assert theirs.get(key) is None and theirs.get(probe) is None
                assert theirs.incr(key) == 1  # a new counter, not the secret
                assert their_sessions.get(key) is None
                theirs.clear()
                their_sessions.clear()
            assert mine.get(key) == value
            assert not mine.delete(probe) or probe == key
        finally:
            for b in (mine, sessions, theirs, their_sessions):
                b.clear()

    started = time.monotonic()
    try:
        check()
    finally:
        backend.close()
    _figure(request, f"isolation {kind}: {examples} examples in {time.monotonic() - started:.1f} s")


def test_no_state_key_reaches_another_resource(
    make_app: AppFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    app = make_app(
        {"state": {"STATE": "default", "USER_STATE": "users"}},
        PLOY_STATE_URL=f"sqlite:///{tmp_path}/iso.sqlite3",
    )
    examples = 0

    @ISO_SETTINGS
    @given(key=CRAFTED, probe=CRAFTED)
    def check(key: str, probe: str) -> None:
        nonlocal examples
        examples += 1
        with app.app_context():
            mine, users = g.env.STATE, g.env.USER_STATE
            try:
                mine.set(key, "secret")
                assert users.get(key) is None
                assert users.get_many([key, probe]) == {key: None, probe: None}
                assert users.list(probe).keys == [] and users.list(key).keys == []
                assert users.list().keys == [] and users.count() == 0
                assert users.delete(key) is False and users.delete_many([key, probe]) == 0
                assert users.add(key, "theirs") is True
                assert users.incr(probe + "#n") == 1
                users.set(probe + "#doc", "{}")
                assert users.update(probe + "#doc", {"$set": {"a": 1}}) == '{"a":1}'
                users.clear()
                assert mine.get(key) == "secret"
                assert mine.list().keys == [key] and mine.count() == 1
            finally:
                mine.clear()
                users.clear()

    started = time.monotonic()
    check()
    _figure(request, f"isolation sqlite: {examples} examples in {time.monotonic() - started:.1f} s")


# -- hostile ploy.yaml files: bounded time and memory -------------------------------------

#: Runs FlaskPloy on one ploy.yaml in a fresh process, under a 1 GiB address-space
#: limit (so an unbounded parse fails fast instead of swapping), and prints what
#: happened with the time and the growth of the peak RSS.
_ONE_FILE = """
import json, resource, sys, time, tracemalloc
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from flask import Flask
from flask_ploy import FlaskPloy

def load():
    app = Flask("hostile", root_path=sys.argv[1], instance_path=sys.argv[1] + "/instance")
    app.config["TESTING"] = True
    try:
        FlaskPloy(app)
        return "ok", ""
    except BaseException as exc:
        return type(exc).__name__, str(exc)[:5000]

before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
kind, message = load()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()  # again, to count every allocation the load makes
load()
traced = tracemalloc.get_traced_memory()[1]
print(json.dumps({"kind": kind, "message": message, "seconds": seconds,
                  "rss_mib": (peak - before) / 1024, "traced_mib": traced / 2**20}))
"""


def _laughs(levels: int) -> str:
    """The classic: each level a list of nine aliases of the one before (9**levels)."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        p = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{','.join([p] * 9)}]")
    return "\n".join(lines) + f"\ncache:\n  CACHE: *a{levels - 1}\n"


#: Each: (name, how to make ploy.yaml in a folder, what the PloyConfigError says).
HOSTILE_FILES: list[tuple[str, Callable[[Path], None], str]] = [
    (
        "billion laughs in an error message",
        lambda d: (d / "ploy.yaml").write_text(_laughs(9)),
        r"line 5: invalid YAML: .*more than 10000 values",
    ),
    (
        "billion laughs as a binding name",
        lambda d: (d / "ploy.yaml").write_text(
            _laughs(9).replace("cache:\n  CACHE: *a8", "cache:\n  ? *a8\n  : default")
        ),
        r"more than 10000 values",
    ),
    (
        "aliases of a long string",
        lambda d: (d / "ploy.yaml").write_text(
            "s: &s " + "x" * 200_000 + "\ncache:\n  CACHE: [" + ", ".join(["*s"] * 50) + "]\n"
        ),
        r"line 3: invalid YAML: .*more than 1048576 characters",
    ),
    (
        "a 100,000-character binding at the top level",
        lambda d: (d / "ploy.yaml").write_text("? " + "A" * 100_000 + "\n: default\n"),
        r"line 1: ''AAAA.*AAA': default' looks like a binding at the top level",
    ),
    (
        "a 100,000-character binding name",
        lambda d: (d / "ploy.yaml").write_text("cache:\n  ? " + "a" * 100_000 + "\n  : x\n"),
        r"line 2: cache.'aaa.*aaa': binding name must match",
    ),
    (
        "a recursive alias",
        lambda d: (d / "ploy.yaml").write_text("a: &a [*a]\ncache:\n  CACHE: *a\n"),
        r"line 1: invalid YAML: alias \*a is inside its own anchor",
    ),
    (
        "100,000 nested flow sequences",
        lambda d: (d / "ploy.yaml").write_text("cache: " + "[" * 100_000 + "]" * 100_000),
        r"line 1: invalid YAML: nested more than 32 levels deep",
    ),
    (
        "40,000 nested flow mappings",
        lambda d: (d / "ploy.yaml").write_text("cache: " + "{a: " * 40_000 + "1" + "}" * 40_000),
        r"nested more than 32 levels deep",
    ),
    (
        "shallow anchors nested deep through aliases",
        lambda d: (d / "ploy.yaml").write_text(
            "a0: &a0 "
            + "[" * 20
            + "]" * 20
            + "\n"
            + "".join(
                f"a{i}: &a{i} " + "[" * 20 + f"*a{i - 1}" + "]" * 20 + "\n" for i in range(1, 60)
            )
            + "cache: {CACHE: *a59}\n"
        ),
        r"nested more than 32 levels deep \(aliases expanded\)",
    ),
    (
        "an integer of 5000 digits",
        lambda d: (d / "ploy.yaml").write_text("compatibility_date: " + "9" * 5000 + "\n"),
        r"line 1: invalid YAML: cannot read the value '999.*Exceeds the limit",
    ),
    (
        "a date that does not exist",
        lambda d: (d / "ploy.yaml").write_text(
            "compatibility_date: 2026-13-01\ncache:\n  CACHE: default\n"
        ),
        r"line 1: invalid YAML: cannot read the value '2026-13-01': month must be in 1\.\.12",
    ),
    (
        "a 200 KiB tag",
        lambda d: (d / "ploy.yaml").write_text("cache: !" + "t" * 200_000 + " x\n"),
        r"could not determine a constructor for the tag '!ttt",
    ),
    (
        "a 2 GiB file (sparse)",
        lambda d: os.truncate(_touch(d / "ploy.yaml"), 2 << 30),
        r"it is 2147483648 bytes; the limit is 262144 \(256 KiB\)",
    ),
    (
        "a file just over the limit",
        lambda d: (d / "ploy.yaml").write_text("cache: {CACHE: default}\n" + "#" * 262_144),
        r"it is 262168 bytes; the limit is 262144",
    ),
    (
        "a FIFO nobody writes to",
        lambda d: os.mkfifo(d / "ploy.yaml"),
        r"cannot read ploy.yaml: it is a FIFO, not a regular file",
    ),
    (
        "a link to /dev/zero",
        lambda d: os.symlink("/dev/zero", d / "ploy.yaml"),
        r"cannot read ploy.yaml: it is a device, not a regular file",
    ),
    (
        "a directory",
        lambda d: (d / "ploy.yaml").mkdir(),
        r"cannot read ploy.yaml: it is a directory, not a regular file",
    ),
    (
        "Latin-1, not UTF-8",
        lambda d: (d / "ploy.yaml").write_bytes(b"# caf\xe9 cache\ncache:\n  CACHE: d\xe9faut\n"),
        r"ploy.yaml, line 1: cannot read ploy.yaml: it is not UTF-8 \(byte b'\\xe9' at offset 5\)",
    ),
]


def _touch(path: Path) -> Path:
    path.touch()
    return path


@pytest.mark.parametrize(
    ("make", "match"), [(m, r) for _, m, r in HOSTILE_FILES], ids=[n for n, _, _ in HOSTILE_FILES]
)
def test_hostile_ploy_yaml_fails_fast_and_small(
    tmp_path: Path, make: Callable[[Path], None], match: str, request: pytest.FixtureRequest
) -> None:
    """Every hostile file is a PloyConfigError with a short message, within
    1 s (about 0.1 s at worst, for 256 KiB that the scanner must read to the
    end), 32 MiB of peak RSS and 8 MiB allocated (tracemalloc). Before: the
    9-level billion laughs took 45.8 s and 5.4 GiB (a 2.8 GB message); deep
    nesting raised RecursionError; a FIFO blocked init_app for ever; /dev/zero
    and a 2 GiB file were read whole; the bad date and the long integer raised
    ValueError."""
    make(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", _ONE_FILE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    _figure(
        request,
        f"ploy.yaml {request.node.callspec.id}: {out['kind']} in {out['seconds'] * 1000:.1f} ms,"
        f" peak RSS +{out['rss_mib']:.1f} MiB, {out['traced_mib']:.2f} MiB allocated at most",
    )
    assert out["kind"] == "PloyConfigError", out["message"][:500]
    assert re.search(match, out["message"]), out["message"][:500]
    assert str(tmp_path / "ploy.yaml") in out["message"]
    assert len(out["message"]) < 500, out["message"][:500]
    assert out["seconds"] < 1.0
    assert out["rss_mib"] < 32
    assert out["traced_mib"] < 8


def test_utf16_and_bom_are_read(tmp_path: Path) -> None:
    """Windows editors save UTF-8 with a BOM; PowerShell's ``>`` writes UTF-16."""
    text = "cache:\n  CACHE: default\n"
    for data in (text.encode("utf-8-sig"), text.encode("utf-16")):
        (tmp_path / "ploy.yaml").write_bytes(data)
        app = Flask("bom", root_path=str(tmp_path), instance_path=str(tmp_path / "i"))
        app.config["TESTING"] = True
        ext = FlaskPloy(app)
        assert [b.name for b in ext.bindings(app).bindings] == ["CACHE"]
        ext.app_bindings(app).close()


def test_limits_leave_room_for_real_files(tmp_path: Path) -> None:
    """A big but honest file passes: anchors and merge keys as YAML users
    write them, 30 levels of nesting, 2,000 cron lines."""
    text = (
        "defaults: &defaults {memory: 128, timeout: 30}\n"
        "workflow:\n  build: {<<: *defaults, timeout: 60}\n  test: {<<: *defaults}\n"
        "assets: " + "{a: " * 29 + "1" + "}" * 29 + "\n"
        "cron:\n"
        + "".join(f"  - '*/{i % 59 + 1} * * * *'\n" for i in range(2000))
        + "cache:\n  CACHE: default\n"
    )
    (tmp_path / "ploy.yaml").write_text(text)
    app = Flask("big", root_path=str(tmp_path), instance_path=str(tmp_path / "i"))
    app.config["TESTING"] = True
    ext = FlaskPloy(app)
    assert [b.name for b in ext.bindings(app).bindings] == ["CACHE"]
    ext.app_bindings(app).close()
