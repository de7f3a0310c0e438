"""The ``flask ploy`` commands, through ``app.test_cli_runner()`` and once as
real ``flask`` processes.

Dump and load run on SQLite, PostgreSQL and MariaDB (``state_app``); the
other verbs on SQLite and memory:// or Redis.
"""

from __future__ import annotations

import io
import json
import os
import pty
import random
import re
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask, g

from flask_ploy._dumpfile import CHUNK, BadInput
from flask_ploy.cli import ploy_cli

from .conftest import AppFactory, _cache_url


def run(app: Flask, *args: str, input: bytes | str | None = None) -> Result:
    result = app.test_cli_runner().invoke(args=["ploy", *args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def contents(app: Flask, binding: str) -> dict[str, str]:
    with app.app_context():
        return dict(getattr(g.env, binding).items())


def records(data: bytes) -> list[tuple[str, str]]:
    """The pairs of a JSON Lines dump, checking each line is one object."""
    out = []
    for line in data.decode("utf-8").split("\n")[:-1]:
        obj = json.loads(line)
        assert list(obj) == ["key", "value"]
        out.append((obj["key"], obj["value"]))
    return out


ALPHABET = [
    "\x00", "\n", "\r", "\t", '"', "\\", "/", "\u2028", "\u2029", "\x7f", "\x1f",
    "é", "ß", "中", "😀", "👩‍👩‍👧", "\U0010ffff", "\ufeff", "\ufffd", " ", "a", "Z", "0", "{", "]",
]  # fmt: skip


def random_text(rng: random.Random, low: int, high: int) -> str:
    return "".join(
        rng.choice(ALPHABET) if rng.random() < 0.7 else chr(rng.randrange(0x20, 0xD800))
        for _ in range(rng.randint(low, high))
    )


def random_store(seed: int, n: int) -> dict[str, str]:
    rng = random.Random(seed)
    data: dict[str, str] = {"\x00": "", "\n": "\n", "😀": "\x00\x00", "a": "a" * 2000}
    while len(data) < n:
        data[random_text(rng, 1, 40)] = "" if rng.random() < 0.1 else random_text(rng, 0, 200)
    return data


# -- config ---------------------------------------------------------------------


def write_yaml(path: Path) -> None:
    path.write_text("cache:\n  CACHE: default\nstate:\n  STATE: default\n  USERS: users\n")


def test_config_lists_bindings_and_masks_passwords(make_app: AppFactory, tmp_path: Path) -> None:
    write_yaml(tmp_path / "ploy.yaml")
    app = make_app(
        PLOY_BINDINGS=None,
        PLOY_CACHE_URL="redis://:s3cret@127.0.0.1:6379/0",
        PLOY_STATE_RESOURCES={"users": "postgresql+psycopg://root:pgs3cret@127.0.0.1:5432/test"},
    )
    result = run(app, "config")
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["Binding", "Kind", "Resource", "Backend", "Source"]
    source = str(tmp_path / "ploy.yaml")
    state_file = f"sqlite:///{tmp_path}/instance/ploy-state.sqlite3"
    assert [line.split() for line in lines[2:]] == [
        ["CACHE", "cache", "default", "redis://:***@127.0.0.1:6379/0", source],
        ["STATE", "state", "default", state_file, source],
        ["USERS", "state", "users", "postgresql+psycopg://root:***@127.0.0.1:5432/test", source],
    ]


def test_config_rereads_the_file(make_app: AppFactory, tmp_path: Path) -> None:
    write_yaml(tmp_path / "ploy.yaml")
    app = make_app(PLOY_BINDINGS=None)
    (tmp_path / "ploy.yaml").write_text("cache:\n  CACHE: default\n  bad-name: x\n")
    result = run(app, "config")
    assert result.exit_code == 1
    assert "ploy.yaml, line 3: cache.bad-name: binding name must match" in result.output
    (tmp_path / "ploy.yaml").write_text("state:\n  NEW: fresh\n")
    result = run(app, "config")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[2].split()[:3] == ["NEW", "state", "fresh"]
    # A setting the file does not use is checked too.
    app.config["PLOY_STATE_RESOURCES"] = {"nope": "sqlite://"}
    result = run(app, "config")
    assert result.exit_code == 1
    assert "names resource 'nope', which no state binding" in result.output


def test_config_says_when_the_app_runs_on_other_bindings(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """A PLOY_* setting changed after init_app has no effect: config shows the
    configuration and says which bindings the app really uses."""
    write_yaml(tmp_path / "ploy.yaml")
    app = make_app(PLOY_BINDINGS=None)
    assert "other bindings" not in run(app, "config").output
    app.config["PLOY_CACHE_URL"] = "redis://:pw@127.0.0.1:6379/0"  # too late
    (tmp_path / "ploy.yaml").write_text("cache:\n  CACHE: default\nstate:\n  STATE: default\n")
    result = run(app, "config")
    assert result.exit_code == 0, result.output
    cache_file = f"sqlite:///{tmp_path}/instance/ploy-cache.sqlite3"
    assert "The app runs with other bindings than these" in result.output
    assert f"- CACHE: the app uses {cache_file}" in result.output
    assert "- USERS: the app has it, the configuration no longer" in result.output
    assert "pw" not in result.output


def test_an_app_without_flask_ploy_gets_a_message(tmp_path: Path) -> None:
    app = Flask("plain", root_path=str(tmp_path))
    app.cli.add_command(ploy_cli)
    for args in (["config"], ["check"], ["types"], ["state", "get", "STATE", "k"]):
        result = run(app, *args)
        assert result.exit_code == 1, args
        assert "The app 'plain' does not use flask-ploy" in result.output
        assert "Traceback" not in result.output


# -- check ----------------------------------------------------------------------


def test_check_reports_latency(make_app: AppFactory) -> None:
    app = make_app()
    result = run(app, "check")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[2:]]
    assert [(r[0], r[1], r[-6]) for r in rows] == [
        ("cache", f"sqlite:///{app.instance_path}/ploy-cache.sqlite3", "ok"),
        ("state", f"sqlite:///{app.instance_path}/ploy-state.sqlite3", "ok"),
    ]
    assert "CACHE, SESSION_CACHE, ALIAS_CACHE" in result.output
    assert "ms (connect" in result.output


def test_check_fails_when_a_backend_is_down(make_app: AppFactory) -> None:
    app = make_app(
        PLOY_CACHE_RESOURCES={"sessions": "redis://:pw@127.0.0.1:1/0"},
        PLOY_STATE_RESOURCES={"users": "postgresql+psycopg://root:pw@127.0.0.1:1/test"},
    )
    result = run(app, "check")
    assert result.exit_code == 1
    out = result.output
    assert re.search(r"redis://:\*\*\*@127\.0\.0\.1:1/0 +SESSION_CACHE +DOWN +ConnectionError", out)
    assert re.search(r"USER_STATE +DOWN +StateUnavailable: ", out)
    assert "ploy-cache.sqlite3" in out
    assert "Error: 2 of 4 backends are down" in out
    assert "pw@" not in out


def test_check_and_config_list_settings_with_no_effect(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.upper().startswith(("PLOY_", "FLASK_")):
            monkeypatch.delenv(key)
    app = make_app(PLOY_CACHE_URI="redis://127.0.0.1:6379/0")
    monkeypatch.setenv("PLOY_STATE_URL", "postgres://app:s3cret@db.example.com/app")
    for command in ("check", "config"):
        result = run(app, command)
        assert result.exit_code == 0, result.output  # a warning, not a failure
        report, _, listed = result.output.partition("\nSettings with no effect:\n")
        assert "ploy-cache.sqlite3" in report
        assert listed.splitlines() == [
            "- app.config['PLOY_CACHE_URI'] is not a flask-ploy setting and has no effect;"
            " did you mean PLOY_CACHE_URL?",
            "- environment variable PLOY_STATE_URL has no effect: flask-ploy reads its"
            " settings from app.config, not from PLOY_* variables. Name it"
            " FLASK_PLOY_STATE_URL and call app.config.from_prefixed_env() before FlaskPloy(app)",
        ]
        assert "s3cret" not in result.output
    monkeypatch.delenv("PLOY_STATE_URL")
    del app.config["PLOY_CACHE_URI"]
    assert "Settings with no effect" not in run(app, "check").output


# -- binding errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["state", "get", "NOPE", "k"],
            "'NOPE' is not a binding in app.config['PLOY_BINDINGS']. The state bindings"
            " are: STATE, USER_STATE, ALIAS_STATE",
        ),
        (["state", "get", "state", "k"], "Did you mean STATE?"),
        (
            ["state", "dump", "CACHE"],
            "'CACHE' is a cache binding, not a state binding. The state bindings are:"
            " STATE, USER_STATE, ALIAS_STATE",
        ),
        (["state", "load", "SESSION_CACHE", "-"], "is a cache binding, not a state binding"),
        (["state", "list", "CACHE"], "is a cache binding"),
        (["state", "set", "CACHE", "k", "v"], "is a cache binding"),
        (["state", "delete", "CACHE", "k"], "is a cache binding"),
        (
            ["cache", "get", "STATE", "k"],
            "'STATE' is a state binding, not a cache binding. The cache bindings are:"
            " CACHE, SESSION_CACHE, ALIAS_CACHE",
        ),
        (["cache", "set", "NOPE", "k", "v"], "'NOPE' is not a binding"),
        (["cache", "delete", "USER_STATE", "k"], "is a state binding"),
    ],
)
def test_unknown_or_wrong_kind_binding_exits_2(
    make_app: AppFactory, args: list[str], message: str
) -> None:
    result = run(make_app(), *args, input=b"")
    assert result.exit_code == 2
    assert "Invalid value for 'BINDING'" in result.output
    assert message in result.output


@pytest.mark.parametrize(
    ("args", "hint", "message"),
    [
        (["cache", "set", "CACHE", "k", "v", "--ttl", "0"], "'--ttl'", "ttl must be at least 1"),
        (["cache", "set", "CACHE", "", "v"], "'KEY'", "key must not be empty"),
        (["cache", "set", "CACHE", "k", "v" * 17], "'VALUE'", "value is 17 bytes"),
        (["cache", "incr", "CACHE", "n", "--amount", str(2**63)], "'--amount'", "64-bit"),
        (["cache", "get", "CACHE", "k" * 600], "'KEY'", "key is 600 bytes"),
        (["state", "set", "STATE", "", "v"], "'KEY'", "key must not be empty"),
        (["state", "set", "STATE", "k", "v", "--expires-at", "1"], "'--expires-at'", "future"),
        (
            ["state", "set", "STATE", "k", "v", "--ttl", "5", "--expires-at", "9999999999"],
            "'--ttl'",
            "give ttl",
        ),
        # A key named like a parameter does not mislead the hint.
        (
            ["state", "set", "STATE", "ttl", "v", "--metadata", '{"a": "' + "x" * 2000 + '"}'],
            "'--metadata'",
            "over the limit",
        ),
    ],
)
def test_a_bad_argument_is_named_in_the_usage_error(
    make_app: AppFactory, args: list[str], hint: str, message: str
) -> None:
    result = run(make_app(PLOY_MAX_VALUE_BYTES=16), *args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for {hint}: " in result.output, result.output
    assert message in result.output


# -- state get / set / delete / list -------------------------------------------------


def test_state_get_set_delete_list(make_app: AppFactory) -> None:
    app = make_app()
    assert run(app, "state", "set", "STATE", "user:1", "alice ✓").exit_code == 0
    assert run(app, "state", "set", "STATE", "empty", "").exit_code == 0
    result = run(app, "state", "get", "STATE", "user:1")
    assert (result.exit_code, result.stdout) == (0, "alice ✓\n")
    assert run(app, "state", "get", "ALIAS_STATE", "empty").stdout == "\n"
    missing = run(app, "state", "get", "USER_STATE", "user:1")
    assert missing.exit_code == 1
    assert "Error: USER_STATE has no key 'user:1'" in missing.output
    bad = run(app, "state", "set", "STATE", "k" * 513, "v")
    assert bad.exit_code == 2
    assert "over the limit of 512" in bad.output
    assert run(app, "state", "delete", "STATE", "user:1").stdout == "Deleted 'user:1'.\n"
    assert run(app, "state", "delete", "STATE", "user:1").stdout == "STATE had no key 'user:1'.\n"
    assert contents(app, "STATE") == {"empty": ""}

    with app.app_context():
        g.env.STATE.load((f"item:{i:05d}", str(i)) for i in range(1200))
        g.env.STATE.set("other", "x")
    listed = run(app, "state", "list", "STATE").stdout.splitlines()
    assert listed == ["empty", *(f"item:{i:05d}" for i in range(1200)), "other"]
    limited = run(app, "state", "list", "STATE", "--prefix", "item:", "--limit", "1100")
    assert limited.stdout.splitlines() == [f"item:{i:05d}" for i in range(1100)]
    assert run(app, "state", "list", "STATE", "--prefix", "zzz").stdout == ""
    assert run(app, "state", "list", "STATE", "--limit", "0").exit_code == 2


# -- cache ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def cli_cache_url(request: pytest.FixtureRequest) -> str:
    """The caches a command in another process can reach: a file, and Redis."""
    return _cache_url(request.param, request)


def test_cache_get_set_delete(make_app: AppFactory, cli_cache_url: str) -> None:
    app = make_app(PLOY_CACHE_URL=cli_cache_url, PLOY_CACHE_KEY_PREFIX=f"cli{os.getpid()}")
    try:
        assert run(app, "cache", "set", "CACHE", "greeting", "héllo").exit_code == 0
        assert run(app, "cache", "set", "SESSION_CACHE", "s", "v", "--ttl", "60").exit_code == 0
        assert run(app, "cache", "get", "ALIAS_CACHE", "greeting").stdout == "héllo\n"
        assert run(app, "cache", "get", "SESSION_CACHE", "s").stdout == "v\n"
        missing = run(app, "cache", "get", "SESSION_CACHE", "greeting")
        assert missing.exit_code == 1
        assert "SESSION_CACHE has no key 'greeting' (or it expired)" in missing.output
        bad_ttl = run(app, "cache", "set", "CACHE", "k", "v", "--ttl", "0")
        assert bad_ttl.exit_code == 2
        assert "Invalid value for '--ttl': ttl must be at least 1" in bad_ttl.output
        assert run(app, "cache", "delete", "CACHE", "greeting").stdout == "Deleted 'greeting'.\n"
        assert run(app, "cache", "get", "CACHE", "greeting").exit_code == 1
        with app.app_context():
            assert g.env.SESSION_CACHE.get("s") == "v"
    finally:
        with app.app_context():
            g.env.CACHE.clear()
            g.env.SESSION_CACHE.clear()


def test_cache_ttl_incr_count_clear(make_app: AppFactory, cli_cache_url: str) -> None:
    app = make_app(PLOY_CACHE_URL=cli_cache_url, PLOY_CACHE_KEY_PREFIX=f"cli2{os.getpid()}")
    try:
        assert run(app, "cache", "set", "CACHE", "k", "v", "--ttl", "100").exit_code == 0
        assert run(app, "cache", "set", "CACHE", "forever", "v").exit_code == 0
        assert run(app, "cache", "ttl", "CACHE", "k").stdout == "100\n"
        assert run(app, "cache", "ttl", "CACHE", "forever").stdout == "no expiry\n"
        missing = run(app, "cache", "ttl", "CACHE", "missing")
        assert missing.exit_code == 1 and "CACHE has no key 'missing'" in missing.output
        assert run(app, "cache", "incr", "CACHE", "n").stdout == "1\n"
        assert run(app, "cache", "incr", "CACHE", "n", "--amount", "-5").stdout == "-4\n"
        assert run(app, "cache", "incr", "CACHE", "w", "--ttl", "30").stdout == "1\n"
        assert run(app, "cache", "ttl", "ALIAS_CACHE", "w").stdout == "30\n"
        not_int = run(app, "cache", "incr", "CACHE", "k")
        # The stored value's problem, not a usage error.
        assert not_int.exit_code == 1, not_int.output
        assert "Error: value of 'k' is not an integer" in not_int.output
        assert run(app, "cache", "set", "SESSION_CACHE", "s", "v").exit_code == 0
        assert run(app, "cache", "count", "CACHE").stdout == "4\n"
        declined = run(app, "cache", "clear", "CACHE", input="n\n")
        assert declined.exit_code == 1 and "Aborted" in declined.output
        assert run(app, "cache", "count", "CACHE").stdout == "4\n"
        cleared = run(app, "cache", "clear", "CACHE", input="y\n")
        assert cleared.exit_code == 0, cleared.output
        assert "Delete every key of CACHE (resource 'default', on " in cleared.output
        assert cleared.output.endswith("Deleted 4 keys of CACHE (resource 'default').\n")
        assert run(app, "cache", "count", "CACHE").stdout == "0\n"
        assert run(app, "cache", "clear", "SESSION_CACHE", "--yes").stdout == (
            "Deleted 1 key of SESSION_CACHE (resource 'sessions').\n"
        )
    finally:
        with app.app_context():
            g.env.CACHE.clear()
            g.env.SESSION_CACHE.clear()


def test_cache_count_and_clear_report_a_down_server(make_app: AppFactory) -> None:
    app = make_app(PLOY_CACHE_URL="redis://127.0.0.1:1/0")
    for args in (("count", "CACHE"), ("clear", "CACHE", "--yes"), ("incr", "CACHE", "n"),
                 ("ttl", "CACHE", "k")):  # fmt: skip
        result = run(app, "cache", *args)
        assert result.exit_code == 1, (args, result.output)
        assert "Error:" in result.output and "Traceback" not in result.output


def test_cache_verbs_refuse_memory_and_check_flags_it(make_app: AppFactory) -> None:
    """Issue 13: ``flask ploy cache set`` on memory:// wrote into its own
    short-lived process and exited 0; ``get`` then found nothing."""
    app = make_app(PLOY_CACHE_RESOURCES={"sessions": "memory://"})
    for args in (("set", "SESSION_CACHE", "k", "v"), ("get", "SESSION_CACHE", "k"),
                 ("delete", "SESSION_CACHE", "k"), ("ttl", "SESSION_CACHE", "k"),
                 ("incr", "SESSION_CACHE", "k"), ("count", "SESSION_CACHE"),
                 ("clear", "SESSION_CACHE", "--yes")):  # fmt: skip
        result = run(app, "cache", *args)
        assert result.exit_code == 1, result.output
        assert "Error: SESSION_CACHE uses memory://, a cache in each process's own memory" in (
            result.output
        )
    assert run(app, "cache", "set", "CACHE", "k", "v").exit_code == 0  # the default file
    checked = run(app, "check")
    assert checked.exit_code == 0, checked.output  # a warning, not a failure
    _, _, flagged = checked.output.partition("\nPer-process caches:\n")
    assert flagged.startswith(
        "- SESSION_CACHE uses memory://, a cache in each process's own memory: gunicorn"
        " workers, the reloader and 'flask ploy cache' each see a different one."
    ), checked.output
    assert "CACHE" not in flagged.split(" uses ")[0].replace("SESSION_CACHE", "")
    assert "Per-process caches" not in run(make_app(), "check").output


def test_cache_get_reports_a_down_server_not_a_miss(make_app: AppFactory) -> None:
    app = make_app(PLOY_CACHE_URL="redis://127.0.0.1:1/0")  # PLOY_CACHE_ON_ERROR="miss"
    result = run(app, "cache", "get", "CACHE", "k")
    assert result.exit_code == 1
    assert "Error: cache backend redis://127.0.0.1:1/0 failed on CACHE.get" in result.output
    assert "has no key" not in result.output


# -- dump and load ------------------------------------------------------------------


def test_dump_load_round_trip_is_exact(state_app: Flask, tmp_path: Path) -> None:
    data = random_store(seed=5, n=400)
    with state_app.app_context():
        g.env.STATE.set_many(data)
        g.env.USER_STATE.set("stale", "gone after --replace")
    for fmt in ("jsonl", "json"):
        dumped = run(state_app, "state", "dump", "STATE", "--format", fmt)
        assert dumped.exit_code == 0, dumped.output
        raw = dumped.stdout_bytes
        if fmt == "jsonl":
            pairs = records(raw)
        else:
            assert raw.startswith(b"[\n{") and raw.endswith(b"}\n]\n")
            pairs = [(o["key"], o["value"]) for o in json.loads(raw)]
        assert pairs == sorted(data.items())  # sorted by key, every byte intact
        # One record per line: newlines inside keys and values are escaped.
        assert raw.count(b"\n") == len(data) + (2 if fmt == "json" else 0)

        path = tmp_path / f"dump.{fmt}"
        path.write_bytes(raw)
        loaded = run(state_app, "state", "load", "USER_STATE", str(path), "--replace")
        assert loaded.exit_code == 0, loaded.output
        assert f"Loaded {len(data)} keys from {path}" in loaded.stdout
        assert contents(state_app, "USER_STATE") == data
        # Dumping the copy gives the same bytes.
        assert run(state_app, "state", "dump", "USER_STATE", "--format", fmt).stdout_bytes == raw
    assert contents(state_app, "STATE") == data


def test_dump_to_a_file_and_load_from_stdin(state_app: Flask, tmp_path: Path) -> None:
    data = {"a": "1", "b": "line\nbreak", "c": ""}
    with state_app.app_context():
        g.env.STATE.set_many(data)
        g.env.USER_STATE.set("keep", "me")
    out = tmp_path / "out.jsonl"
    result = run(state_app, "state", "dump", "STATE", "-o", str(out))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert f"Dumped 3 keys of STATE to {out}." in result.stderr
    assert records(out.read_bytes()) == sorted(data.items())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ploy-dump-")] == []
    result = run(state_app, "state", "load", "USER_STATE", "-", input=out.read_bytes())
    assert result.exit_code == 0, result.output
    assert "Loaded 3 keys from <stdin> (JSON Lines) into USER_STATE." in result.stdout
    assert contents(state_app, "USER_STATE") == {**data, "keep": "me"}


def test_empty_resource_dumps_and_loads(state_app: Flask) -> None:
    assert run(state_app, "state", "dump", "STATE").stdout_bytes == b""
    assert run(state_app, "state", "dump", "STATE", "--format", "json").stdout_bytes == b"[]\n"
    with state_app.app_context():
        g.env.USER_STATE.set("x", "1")
    # No records at all: what a failed dump leaves in a pipe. Without --replace
    # it loads nothing; with --replace it would delete every key, so it is
    # refused, dry run included.
    for empty in (b"", b"\n\n", b" \r\n\t", b"\xef\xbb\xbf"):
        result = run(state_app, "state", "load", "USER_STATE", "-", input=empty)
        assert result.exit_code == 0, result.output
        assert "Loaded 0 keys from <stdin> (an empty file)" in result.stdout
        for extra in ([], ["--dry-run"]):
            result = run(state_app, "state", "load", "USER_STATE", "-", "--replace", *extra,
                         input=empty)  # fmt: skip
            assert result.exit_code == 1, result.output
            assert (
                "Error: <stdin>: no records (an empty input); --replace would delete every key"
                in result.output
            )
            assert "load an empty JSON array ([])" in result.output
            assert "nothing was written" in result.output
            assert contents(state_app, "USER_STATE") == {"x": "1"}
    # An explicit empty JSON array empties the resource on purpose.
    for empty in (b"[]", b" \n[ ]\n"):
        result = run(state_app, "state", "load", "USER_STATE", "-", "--replace", input=empty)
        assert result.exit_code == 0, result.output
        assert "Loaded 0 keys from <stdin> (a JSON array) into USER_STATE after deleting" in (
            result.stdout
        )
        assert contents(state_app, "USER_STATE") == {}
        with state_app.app_context():
            g.env.USER_STATE.set("x", "1")


BAD_INPUTS = [
    (
        b'{"key": "a", "value": "1"}\n\n{"key": "b", "value": 2}\n',
        "line 3: the value must be a string, found a number",
    ),
    (
        b'{"key": "a", "value": "1"}\n{"key": "b", "value": "2"\n',
        "line 2: invalid JSON: Expecting ',' delimiter",
    ),
    (
        b'{"key": "a", "value": "1"}\n[1]\n',
        'line 2: expected {"key": ..., "value": ...}: found an array',
    ),
    (
        b'{"key": "a", "value": "1", "ttl": 3}\n',
        'line 1: expected {"key": ..., "value": ...}: unexpected \'ttl\'',
    ),
    (b'{"value": "1"}\n', 'line 1: expected {"key": ..., "value": ...}: missing \'key\''),
    (b'\n{"key": "", "value": "1"}\n', "line 2: key must not be empty"),
    (b'{"key": null, "value": "1"}', "line 1: the key must be a string, found null"),
    (
        b'{"key": "' + b"k" * 513 + b'", "value": "1"}',
        "line 1: key is 513 bytes in UTF-8, over the limit of 512",
    ),
    (
        b'{"key": "a", "value": "\\ud800x"}',
        "line 1: the value holds a lone surrogate ('\\ud800' at character 1)",
    ),
    (b'{"key": "\\udfff", "value": "x"}', "line 1: the key holds a lone surrogate"),
    (
        b'{"key": "a", "value": "1"}\n{"key": "b", "value": "\xff"}\n',
        "line 2: not UTF-8 (invalid start byte at byte 24 of the line)",
    ),
    (
        b'[\n  {"key": "a", "value": "1"},\n  {"key": "b"}\n]',
        'line 3: expected {"key": ..., "value": ...}: missing \'value\'',
    ),
    (
        b'[\n  {"key": "a", "value": "1"},\n\n  {"key": "b", "value": true}]',
        "line 4: the value must be a string, found a boolean",
    ),
    (
        b'[{"key": "a", "value": "1"}\n {"key": "b", "value": "2"}]',
        "line 2: expected ',' or ']' after an element, found '{'",
    ),
    (b'[{"key": "a", "value": "1"},\n', "line 2: the array is not closed"),
    (
        b'[{"key": "a", "value": "1"},\n{"key": "b", "value": "2',
        "line 2: invalid JSON: Unterminated string",
    ),
    (b'[{"key": "a", "value": "1"}]\n[]', "line 2: extra data after the closing ']'"),
    (b'[{"key": "a", "value": "1"},]', "line 1: invalid JSON: Expecting value"),
    (b'[{"key": "a", "value": "1"},\n{"key": "b", "value": "\xe2\x82"}]', "line 2: not UTF-8"),
    (b"\n\nkey=value\n", "line 3: expected JSON Lines ({...} per line) or a JSON array"),
    # Nesting deeper than the recursion limit: bad input, not a database failure.
    (
        b'{"key": "a", "value": "1"}\n' + b"[" * 100_000 + b"]" * 100_000,
        "line 2: JSON nested too deeply",
    ),
    (b"[" + b"[" * 100_000 + b"]" * 100_000 + b"]", "line 1: JSON nested too deeply"),
    # A key twice: loading would write one and count two.
    (b'{"key": "a", "value": "1"}\n{"key": "a", "value": "2"}\n', "line 2: key 'a' again"),
    (
        b'{"key": "b", "value": "1"}\n{"key": "a", "value": "2"}\n{"key": "b", "value": "3"}\n',
        "line 3: a key that is on line 1 too",
    ),
    (
        b'[{"key": "b", "value": "1"},\n {"key": "a", "value": "2"},\n {"key": "b", "value": "3"}]',
        "line 3: a key that is on line 1 too",
    ),
    # A field twice in one object: json would keep the last one silently.
    (
        b'{"key": "a", "value": "1"}\n{"key": "b", "value": "2", "key": "c"}\n',
        "line 2: the field 'key' twice in one object",
    ),
    (
        b'[{"key": "a", "value": "1"},\n {"value": "2", "key": "b", "value": "3"}]',
        "line 2: the field 'value' twice in one object",
    ),
    # Integers past Python's int_max_str_digits: bad input, not a ValueError traceback.
    (
        b'{"key": "a", "value": "1"}\n{"key": "b", "value": ' + b"7" * 4301 + b"}\n",
        "line 2: an integer of more than 4300 digits",
    ),
    (
        b'{"key": "a", "value": "1", "extra": ' + b"7" * 5000 + b"}\n",
        "line 1: an integer of more than 4300 digits",
    ),
    (
        b'[{"key": "a", "value": "1"},\n\n' + b"7" * 100_000 + b"]",
        "line 3: an integer of more than 4300 digits",
    ),
]


@pytest.mark.parametrize(("data", "message"), BAD_INPUTS)
def test_a_bad_record_writes_nothing_and_names_its_line(
    make_app: AppFactory, tmp_path: Path, data: bytes, message: str
) -> None:
    app = make_app()
    with app.app_context():
        g.env.STATE.set("existing", "kept")
    path = tmp_path / "bad.dump"
    path.write_bytes(data)
    for extra in ([], ["--replace"], ["--dry-run"]):
        result = run(app, "state", "load", "STATE", str(path), *extra)
        assert result.exit_code == 1, result.output
        assert f"Error: {path}, {message}" in result.output
        assert "nothing was written" in result.output
        assert contents(app, "STATE") == {"existing": "kept"}


def test_a_bad_record_after_many_good_ones_rolls_back(state_app: Flask) -> None:
    with state_app.app_context():
        g.env.STATE.set("existing", "kept")
        g.env.USER_STATE.set("other", "resource")
    lines = [json.dumps({"key": f"k{i}", "value": "v"}) for i in range(2500)]
    lines.insert(2400, '{"key": "bad", "value": ["not", "a", "string"]}')
    result = run(state_app, "state", "load", "STATE", "-", "--replace", input="\n".join(lines))
    assert result.exit_code == 1
    assert "<stdin>, line 2401: the value must be a string, found an array" in result.output
    assert contents(state_app, "STATE") == {"existing": "kept"}
    assert contents(state_app, "USER_STATE") == {"other": "resource"}


def test_replace_and_dry_run(state_app: Flask) -> None:
    with state_app.app_context():
        g.env.STATE.set_many({"old": "1", "same": "before"})
        g.env.USER_STATE.set("untouched", "yes")
    dump = b'{"key": "same", "value": "after"}\n{"key": "new", "value": "2"}\n'
    dry = run(state_app, "state", "load", "STATE", "-", "--replace", "--dry-run", input=dump)
    assert dry.exit_code == 0, dry.output
    assert dry.stdout == (
        "Dry run: read 2 keys from <stdin> (JSON Lines), all valid for STATE;"
        " --replace would first delete its 2 keys.\nNothing was written.\n"
    )
    assert contents(state_app, "STATE") == {"old": "1", "same": "before"}
    merged = run(state_app, "state", "load", "STATE", "-", input=dump)
    assert merged.exit_code == 0
    assert contents(state_app, "STATE") == {"old": "1", "same": "after", "new": "2"}
    replaced = run(state_app, "state", "load", "ALIAS_STATE", "-", "--replace", input=dump)
    assert "into ALIAS_STATE after deleting its previous keys" in replaced.stdout
    assert contents(state_app, "STATE") == {"same": "after", "new": "2"}
    assert contents(state_app, "USER_STATE") == {"untouched": "yes"}


def test_load_reads_big_values_and_pretty_json(make_app: AppFactory, tmp_path: Path) -> None:
    """Records spanning many read chunks, UTF-8 split between chunks, indented JSON."""
    app = make_app()
    data = {
        "big": "é😀" * (CHUNK // 2) + "\n",
        "bigger": "x" * (3 * CHUNK + 7),
        "small": "",
        "n\u2028l": "\u2029",
    }
    pretty = tmp_path / "pretty.json"
    pretty.write_text(
        json.dumps([{"key": k, "value": v} for k, v in data.items()], indent=2, ensure_ascii=False)
    )
    assert run(app, "state", "load", "STATE", str(pretty)).exit_code == 0
    assert contents(app, "STATE") == data
    # BOM and CRLF line ends, as written by some Windows tools.
    crlf = b"\xef\xbb\xbf" + b"\r\n".join(
        json.dumps({"key": k, "value": v}).encode() for k, v in data.items()
    )
    result = run(app, "state", "load", "USER_STATE", "-", input=crlf)
    assert result.exit_code == 0, result.output
    assert contents(app, "USER_STATE") == data


def test_reader_reads_again_only_when_it_can() -> None:
    """State.load runs its transaction again after a lock conflict: a file is
    read again from the start; a pipe cannot be, so the load fails."""
    from flask_ploy._dumpfile import DumpReader

    data = b'{"key": "a", "value": "1"}\n{"key": "b", "value": "2"}\n'
    reader = DumpReader(io.BytesIO(data), "f", 512, 1000, lambda n: None)
    assert list(reader) == list(reader) == [("a", "1"), ("b", "2")]

    class Pipe(io.BytesIO):
        def seekable(self) -> bool:
            return False

    once = DumpReader(Pipe(data), "<stdin>", 512, 1000, lambda n: None)
    assert len(list(once)) == 2
    with pytest.raises(BadInput, match="cannot be read twice"):
        list(once)


# -- real processes --------------------------------------------------------------------


APP_MODULE = """
from flask import Flask
from flask_ploy import FlaskPloy

app = Flask(__name__)
app.config["PLOY_CACHE_URL"] = "redis://:s3cret@127.0.0.1:1/0"
FlaskPloy(app)
"""


def flask(
    tmp_path: Path, *args: str, env_extra: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "cliapp", "ploy", *args],
        cwd=tmp_path,
        env=env,
        capture_output="stderr" not in kwargs,
        stdout=subprocess.PIPE if "stderr" in kwargs else None,
        timeout=60,
        check=False,
        **kwargs,
    )


def test_commands_in_real_processes(tmp_path: Path) -> None:
    (tmp_path / "cliapp.py").write_text(APP_MODULE)
    write_yaml(tmp_path / "ploy.yaml")
    assert flask(tmp_path, "state", "set", "STATE", "k", "ünïcode 😀").returncode == 0
    got = flask(tmp_path, "state", "get", "STATE", "k")
    assert (got.returncode, got.stdout) == (0, "ünïcode 😀\n".encode())

    config = flask(tmp_path, "config")
    assert config.returncode == 0
    assert b"redis://:***@127.0.0.1:1/0" in config.stdout
    assert b"s3cret" not in config.stdout + config.stderr

    check = flask(tmp_path, "check")
    assert check.returncode == 1
    assert b"DOWN" in check.stdout
    assert b"Error: 1 of 2 backends are down" in check.stderr

    wrong = flask(tmp_path, "cache", "get", "STATE", "k")
    assert wrong.returncode == 2
    assert b"'STATE' is a state binding, not a cache binding" in wrong.stderr

    lines = b"".join(
        json.dumps({"key": f"key{i:05d}", "value": f"v{i}"}).encode() + b"\n" for i in range(2500)
    )
    loaded = flask(tmp_path, "state", "load", "USERS", "-", input=lines)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout == b"Loaded 2500 keys from <stdin> (JSON Lines) into USERS.\n"
    assert loaded.stderr == b""  # piped: no progress bar

    # With stderr on a terminal, a progress bar; stdout stays clean JSON Lines.
    dumped, bar = on_a_terminal(tmp_path, "state", "dump", "USERS")
    assert dumped.returncode == 0
    assert dumped.stdout == lines
    assert b"Dumping USERS" in bar
    assert b"2500/2500" in bar
    (tmp_path / "dump.jsonl").write_bytes(lines)
    loaded, bar = on_a_terminal(tmp_path, "state", "load", "STATE", "dump.jsonl")
    assert loaded.returncode == 0
    assert loaded.stdout == b"Loaded 2500 keys from dump.jsonl (JSON Lines) into STATE.\n"
    assert b"Loading STATE" in bar
    assert b"100%" in bar


def on_a_terminal(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[bytes], bytes]:
    """Run ``flask ploy ARGS`` with stderr on a pseudo-terminal; return it and the output there."""
    leader, follower = pty.openpty()
    try:
        proc = flask(tmp_path, *args, stderr=follower)
        os.close(follower)
        follower = -1
        out = b""
        while select.select([leader], [], [], 0)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal is closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    return proc, out


# VmHWM, not getrusage's ru_maxrss: Linux keeps that across execve, so it can
# report the forking test worker's size.
MEASURE = """
import atexit, re, runpy, sys

def peak():
    with open("/proc/self/status") as f:
        kib = re.search(r"VmHWM:\\s+(\\d+) kB", f.read()).group(1)
    print("maxrss", kib, file=sys.stderr)

atexit.register(peak)
sys.argv = ["flask", *sys.argv[1:]]
runpy.run_module("flask", run_name="__main__")
"""


def test_a_huge_line_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """A 200 MiB line used to be read whole (a 1 GiB line took 3.1 GiB); now the
    reader stops at the longest valid record, 6 x (key + value limits)."""
    module = APP_MODULE.replace(
        "FlaskPloy(app)", "app.config['PLOY_MAX_VALUE_BYTES'] = 1024 * 1024\nFlaskPloy(app)"
    )
    assert module != APP_MODULE
    (tmp_path / "cliapp.py").write_text(module)
    write_yaml(tmp_path / "ploy.yaml")
    (tmp_path / "measure.py").write_text(MEASURE)
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"key": "a", "value": "1"}\n{"key": "b", "value": "')
        block = b"x" * (1 << 20)
        for _ in range(200):
            f.write(block)
        f.write(b'"}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    done = subprocess.run(
        [sys.executable, "measure.py", "--app", "cliapp", "ploy", "state", "load", "STATE",
         str(path)],
        cwd=tmp_path, env=env, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    err = done.stderr.decode()
    assert done.returncode == 1, err[-3000:]
    assert "line 2: longer than any valid record" in err and "nothing was written" in err
    peak_mib = int(err.rsplit("maxrss", 1)[1].split()[0]) / 1024
    assert peak_mib < 150, f"peak RSS {peak_mib:.0f} MiB for a 200 MiB line: {err[-2000:]}"


HELLO = """
from flask import Flask
from flask_ploy import FlaskPloy

app = Flask(__name__)
app.config.from_prefixed_env()
FlaskPloy(app)
"""


def test_the_environment_as_a_user_sets_it(tmp_path: Path) -> None:
    """The issue's command, in a real process: ``PLOY_CACHE_URL=redis://...
    flask --app hello ploy config`` showed memory:// and said nothing."""
    (tmp_path / "cliapp.py").write_text(HELLO)
    write_yaml(tmp_path / "ploy.yaml")
    url = "redis://:s3cret@127.0.0.1:1/0"

    wrong = flask(tmp_path, "config", env_extra={"PLOY_CACHE_URL": url})
    assert wrong.returncode == 0
    assert b"ploy-cache.sqlite3" in wrong.stdout  # the default, not the variable
    assert b"Name it FLASK_PLOY_CACHE_URL and call app.config.from_prefixed_env()" in wrong.stdout
    assert b"Name it FLASK_PLOY_CACHE_URL" in wrong.stderr  # init_app's warning, once
    assert wrong.stderr.count(b"PLOY_CACHE_URL has no effect") == 1

    right = flask(tmp_path, "config", env_extra={"FLASK_PLOY_CACHE_URL": url})
    assert right.returncode == 0
    assert b"redis://:***@127.0.0.1:1/0" in right.stdout
    assert b"no effect" not in right.stdout + right.stderr
    assert b"s3cret" not in wrong.stdout + wrong.stderr + right.stdout + right.stderr


# -- Ploy's put options on the command line -----------------------------------------


def test_state_set_with_options_get_metadata_and_purge(state_app: Flask) -> None:
    result = run(state_app, "state", "set", "STATE", "k", "v", "--metadata", '{"a": "é"}')
    assert result.exit_code == 0, result.output
    result = run(state_app, "state", "get", "STATE", "k", "--metadata")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"value": "v", "metadata": {"a": "é"}}
    assert run(state_app, "state", "get", "STATE", "k").output == "v\n"
    assert run(state_app, "state", "set", "STATE", "t", "v", "--ttl", "60").exit_code == 0
    with state_app.app_context():
        (entry,) = g.env.STATE.list_entries("t").entries
        assert entry.expiration is not None
    for bad, match in (
        (["--metadata", "[1]"], "must be a JSON object"),
        (["--metadata", "{"], "not JSON"),
        (["--ttl", "0"], "0"),
        (["--expires-at", "5"], "in the future"),
        (["--ttl", "5", "--expires-at", "9999999999"], "not both"),
    ):
        result = run(state_app, "state", "set", "STATE", "k", "w", *bad)
        assert result.exit_code == 2, (bad, result.output)
        assert match in result.output, (bad, result.output)
    assert run(state_app, "state", "get", "STATE", "k").output == "v\n"
    result = run(state_app, "state", "purge", "STATE")
    assert result.exit_code == 0, result.output
    assert result.output == "Purged 0 keys from STATE.\n"


def test_dump_carries_metadata_and_expiration_and_loads_them(state_app: Flask) -> None:
    import time

    far = time.time() + 3600
    with state_app.app_context():
        g.env.STATE.set("a", "1")
        g.env.STATE.set("b", "2", metadata={"m": [1, 2]})
        g.env.STATE.set("c", "3", expires_at=far)
    result = run(state_app, "state", "dump", "STATE")
    assert result.exit_code == 0, result.output
    assert result.stderr == "Dumped 3 keys of STATE.\n"
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines == [
        {"key": "a", "value": "1"},
        {"key": "b", "value": "2", "metadata": {"m": [1, 2]}},
        {"key": "c", "value": "3", "expiration": far},
    ]
    result = run(state_app, "state", "load", "USER_STATE", "-", input=result.stdout)
    assert result.exit_code == 0, result.output
    with state_app.app_context():
        assert [tuple(e) for e in g.env.USER_STATE.entries()] == [
            ("a", "1", None, None),
            ("b", "2", {"m": [1, 2]}, None),
            ("c", "3", None, far),
        ]
