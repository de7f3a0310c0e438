"""ploy.yaml loading and PLOY_* settings: one test per rule."""

from __future__ import annotations

import logging
import os
import re
import sys
import timeit
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, g

from flask_ploy import FlaskPloy, PloyConfigError, PloyError, UnknownBinding
from flask_ploy.config import DEFAULTS, load_bindings


def app_with_file(tmp_path: Path, text: str, **config: Any) -> Flask:
    (tmp_path / "ploy.yaml").write_text(text, encoding="utf-8")
    app = Flask("cfgtest", root_path=str(tmp_path), instance_path=str(tmp_path / "instance"))
    app.config["TESTING"] = True
    app.config.update(config)
    FlaskPloy(app)
    return app


def config_error(tmp_path: Path, text: str, **config: Any) -> str:
    with pytest.raises(PloyConfigError) as info:
        app_with_file(tmp_path, text, **config)
    assert isinstance(info.value, PloyError)
    return str(info.value)


SEED_YAML = """\
kind: dynamic
build: pnpm build
out: dist
cache:
  CACHE: default
  SESSION_CACHE: sessions
state:
  STATE: default
  USER_STATE: users
"""


def test_seed_yaml_loads_from_root_path(tmp_path: Path) -> None:
    app = app_with_file(tmp_path, SEED_YAML)
    bindings = app.extensions["ploy"].bindings(app)
    assert bindings.source == str(tmp_path / "ploy.yaml")
    assert [(b.name, b.kind, b.resource) for b in bindings.bindings] == [
        ("CACHE", "cache", "default"),
        ("SESSION_CACHE", "cache", "sessions"),
        ("STATE", "state", "default"),
        ("USER_STATE", "state", "users"),
    ]
    with app.app_context():
        assert sorted(dir(g.env)) == ["CACHE", "SESSION_CACHE", "STATE", "USER_STATE"]


def test_ploy_config_path_is_relative_to_root_path(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "other.yaml").write_text("cache:\n  C: default\n")
    app = Flask("cfgtest", root_path=str(tmp_path))
    app.config.update(TESTING=True, PLOY_CONFIG="conf/other.yaml")
    FlaskPloy(app)
    assert app.extensions["ploy"].bindings(app).source == str(tmp_path / "conf" / "other.yaml")


def test_ploy_config_absolute_path(tmp_path: Path) -> None:
    path = tmp_path / "abs.yaml"
    path.write_text("state:\n  S: default\n")
    app = Flask("cfgtest", root_path="/nonexistent")
    app.config.update(
        TESTING=True, PLOY_CONFIG=str(path), PLOY_STATE_URL=f"sqlite:///{tmp_path}/s.db"
    )
    FlaskPloy(app)
    assert app.extensions["ploy"].bindings(app).get("S") is not None


def test_inline_bindings(tmp_path: Path) -> None:
    app = Flask("cfgtest", root_path=str(tmp_path), instance_path=str(tmp_path / "i"))
    app.config.update(TESTING=True, PLOY_BINDINGS={"cache": {"CACHE": "default"}})
    FlaskPloy(app)
    assert app.extensions["ploy"].bindings(app).source == "app.config['PLOY_BINDINGS']"


def test_inline_and_file_together_is_an_error(tmp_path: Path) -> None:
    msg = config_error(
        tmp_path, SEED_YAML, PLOY_BINDINGS={"cache": {"C": "default"}}, PLOY_CONFIG="ploy.yaml"
    )
    assert "either PLOY_BINDINGS" in msg


def test_missing_file(tmp_path: Path) -> None:
    app = Flask("cfgtest", root_path=str(tmp_path))
    with pytest.raises(
        PloyConfigError, match=re.escape(str(tmp_path / "ploy.yaml")) + ".*not found"
    ):
        FlaskPloy(app)


def test_empty_file(tmp_path: Path) -> None:
    assert "the file is empty" in config_error(tmp_path, "")
    assert "the file is empty" in config_error(tmp_path, "# only a comment\n")


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    msg = config_error(tmp_path, "cache:\n  CACHE: default\n bad: [\n")
    assert str(tmp_path / "ploy.yaml") in msg
    assert re.search(r"line \d+: invalid YAML", msg)


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system ['echo pwned']",
        "!!python/name:os.system",
        "!!python/object:collections.OrderedDict {}",
    ],
)
def test_unsafe_tags_are_refused(tmp_path: Path, tag: str) -> None:
    msg = config_error(tmp_path, f"cache:\n  CACHE: {tag}\n")
    assert "line 2" in msg
    assert "safe_load" in msg


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "top level must be a mapping, not list" in config_error(tmp_path, "- cache\n")


@pytest.mark.parametrize("section", ["cache: []", "cache:", "state: default", "state: 3"])
def test_cache_and_state_must_be_mappings(tmp_path: Path, section: str) -> None:
    msg = config_error(tmp_path, section + "\n")
    assert "must be a mapping of BINDING_NAME: resource_name" in msg
    assert "line 1" in msg


@pytest.mark.parametrize(
    "name", ["cache", "My_Cache", "1CACHE", "CACHE-1", "_CACHE", "CÄCHE", "123"]
)
def test_binding_name_rule(tmp_path: Path, name: str) -> None:
    msg = config_error(tmp_path, f"cache:\n  {name}: default\n")
    assert f"cache.{name}: binding name must match ^[A-Z][A-Z0-9_]*$" in msg
    assert "line 2" in msg


def test_binding_name_may_not_start_with_ploy(tmp_path: Path) -> None:
    msg = config_error(tmp_path, "state:\n  PLOY_STATE: default\n")
    assert "state.PLOY_STATE: binding names starting with PLOY_ are reserved" in msg


@pytest.mark.parametrize("resource", ["Default", "my-cache", "1cache", "_x", "5", "[a]", "''"])
def test_resource_name_rule(tmp_path: Path, resource: str) -> None:
    msg = config_error(tmp_path, f"cache:\n  CACHE: {resource}\n")
    assert "cache.CACHE: resource name" in msg
    assert "^[a-z][a-z0-9_]*$" in msg


def test_binding_name_once_across_kinds(tmp_path: Path) -> None:
    msg = config_error(tmp_path, "cache:\n  SHARED: default\nstate:\n  SHARED: default\n")
    assert "line 4: state.SHARED: binding name already used under 'cache'" in msg


def test_binding_name_clash_with_other_ploy_kinds(tmp_path: Path) -> None:
    msg = config_error(tmp_path, "cache:\n  DB: default\ndb:\n  DB: main\n")
    assert "db.DB: binding name already used under 'cache'" in msg


def test_duplicate_key_in_one_section(tmp_path: Path) -> None:
    msg = config_error(tmp_path, "cache:\n  CACHE: default\n  CACHE: other\n")
    assert "line 3" in msg
    assert "duplicate key 'CACHE' (first on line 2)" in msg


def test_other_ploy_keys_are_accepted_and_ignored(tmp_path: Path) -> None:
    text = """\
kind: worker
name: my-worker
build: pnpm build
out: dist
main: src/index.ts
compatibility_date: 2026-01-01
assets: {directory: public}
cron: ["*/5 * * * *"]
db:
  DB: main
queue:
  JOBS: jobs
fs: {FILES: files}
ai: true
cache:
  CACHE: default
"""
    app = app_with_file(tmp_path, text)
    assert [b.name for b in app.extensions["ploy"].bindings(app).bindings] == ["CACHE"]


@pytest.mark.parametrize(
    "text",
    [
        "kind: static\n",
        "kind: worker\ndb:\n  DB: main\nqueue:\n  JOBS: jobs\n",
        "cache: {}\nstate: {}\n",
    ],
)
def test_no_bindings_is_an_error(tmp_path: Path, text: str) -> None:
    """Like Flask-SQLAlchemy without a database URI: FlaskPloy with nothing
    to serve is a mistake, and every g.env.X would fail at request time."""
    msg = config_error(tmp_path, text)
    assert "no cache or state bindings" in msg
    assert "'cache: {CACHE: default}'" in msg


def test_no_inline_bindings_is_an_error(tmp_path: Path) -> None:
    app = Flask("cfgtest", root_path=str(tmp_path), instance_path=str(tmp_path / "i"))
    app.config.update(TESTING=True, PLOY_BINDINGS={})
    with pytest.raises(PloyConfigError, match="PLOY_BINDINGS'\\]: no cache or state bindings"):
        FlaskPloy(app)


@pytest.mark.parametrize(
    ("text", "line", "section"),
    [
        ("caches:\n  CACHE: default\n", 1, "cache"),
        ("Cache:\n  CACHE: default\n", 1, "cache"),
        ("CACHE:\n  CACHE: default\n", 1, "cache"),
        ("cahce:\n  CACHE: default\n", 1, "cache"),
        ("caches:\n", 1, "cache"),
        ("kind: dynamic\nState:\n  STATE: default\n", 2, "state"),
        ("stat:\n  STATE: default\n", 1, "state"),
        # The worst case: the file has bindings, so the app starts, and STATE
        # is missing at the first request that uses it.
        ("cache:\n  CACHE: default\nstates:\n  STATE: default\n", 3, "state"),
    ],
)
def test_misspelt_section_stops_the_app(tmp_path: Path, text: str, line: int, section: str) -> None:
    msg = config_error(tmp_path, text)
    assert f"ploy.yaml, line {line}: unknown top-level key" in msg
    assert f"did you mean '{section}'?" in msg


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("CACHE: default\n", "did you mean 'cache: {CACHE: default}'?"),
        ("kind: dynamic\nUSER_STATE: users\n", "did you mean 'state: {USER_STATE: users}'?"),
        (
            "cache:\n  CACHE: default\nDATA: default\n",
            "did you mean 'cache: {DATA: default}' or 'state: {DATA: default}'?",
        ),
    ],
)
def test_binding_at_the_top_level_stops_the_app(tmp_path: Path, text: str, hint: str) -> None:
    msg = config_error(tmp_path, text)
    assert "looks like a binding at the top level" in msg
    assert hint in msg


def test_a_real_ploy_project_still_loads(tmp_path: Path) -> None:
    """Every top-level key of a Ploy project, with values of every shape, and
    keys of tools Ploy does not know: none is taken for a misspelt section."""
    text = """\
kind: dynamic
name: cache-service
build: pnpm build
out: dist
base: /app
main: src/index.ts
dev: {port: 8787}
log_level: debug
compatibility_date: 2026-01-01
compatibility_flags: [nodejs_compat]
assets: {directory: public, cache: true}
auth: {provider: github}
ai: true
workflow: {steps: [build, test]}
cron: ["*/5 * * * *"]
db: {DB: main}
queue: {JOBS: jobs}
fs: {FILES: files}
sandbox: {BOX: box}
timer: {TICK: tick}
x-notes: anything at all
date: 2026-01-31
storage: s3
static: public
cache:
  CACHE: default
state:
  STATE: default
"""
    app = app_with_file(tmp_path, text)
    assert [b.name for b in app.extensions["ploy"].bindings(app).bindings] == ["CACHE", "STATE"]


def test_separate_resources_and_shared_resources(tmp_path: Path) -> None:
    bindings = load_bindings(
        {"PLOY_BINDINGS": {"cache": {"A": "one", "B": "two", "C": "one"}}}, str(tmp_path)
    )
    assert {b.name: b.resource for b in bindings.bindings} == {"A": "one", "B": "two", "C": "one"}


# -- PLOY_* settings -----------------------------------------------------------


def make(tmp_path: Path, **config: Any) -> Flask:
    app = Flask("cfgtest", root_path=str(tmp_path), instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True, PLOY_BINDINGS={"cache": {"CACHE": "default"}, "state": {"STATE": "default"}}
    )
    app.config.update(config)
    FlaskPloy(app)
    return app


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"PLOY_CACHE_ON_ERROR": "ignore"}, "PLOY_CACHE_ON_ERROR'] must be 'miss' or 'raise'"),
        ({"PLOY_CACHE_KEY_PREFIX": ""}, "PLOY_CACHE_KEY_PREFIX'] must be a non-empty str"),
        ({"PLOY_CACHE_KEY_PREFIX": "app:"}, "without ':'"),
        ({"PLOY_CACHE_KEY_PREFIX": 5}, "PLOY_CACHE_KEY_PREFIX"),
        ({"PLOY_MAX_KEY_BYTES": 1024}, "at most 512"),
        ({"PLOY_MAX_KEY_BYTES": 0}, "at least 1"),
        ({"PLOY_MAX_KEY_BYTES": "512"}, "must be an int, not str"),
        ({"PLOY_MAX_VALUE_BYTES": True}, "must be an int, not bool"),
        ({"PLOY_CACHE_MAX_ENTRIES": 0}, "PLOY_CACHE_MAX_ENTRIES'] must be at least 1"),
        ({"PLOY_CACHE_COOLDOWN": -1}, "PLOY_CACHE_COOLDOWN'] must be at least 0"),
        ({"PLOY_STATE_BUSY_TIMEOUT": 0}, "PLOY_STATE_BUSY_TIMEOUT'] must be at least"),
        ({"PLOY_STATE_SQLITE_SYNCHRONOUS": "SOMETIMES"}, "one of OFF, NORMAL, FULL, EXTRA"),
        ({"PLOY_STATE_TABLE": "ploy state"}, "must be a SQL identifier"),
        (
            {"PLOY_CACHE_RESOURCES": {"sesions": "memory://"}},
            "names resource 'sesions', which no cache binding",
        ),
        ({"PLOY_STATE_RESOURCES": {"users": "sqlite://"}}, "state resources are default"),
        ({"PLOY_CACHE_RESOURCES": ["memory://"]}, "must be a dict, not list"),
        ({"PLOY_CACHE_OPTIONS": "socket_timeout=1"}, "PLOY_CACHE_OPTIONS'] must be a dict"),
        ({"PLOY_CACHE_URL": "http://localhost"}, "unknown scheme 'http'; use one of memory://"),
        ({"PLOY_CACHE_URL": "localhost:6379"}, "unknown scheme ''"),
        ({"PLOY_CACHE_URL": "sqlite:/abs/c.db"}, "a SQLite file is sqlite:///relative/path or"),
        (
            {
                "PLOY_CACHE_URL": "redis://127.0.0.1:6379/0",
                "PLOY_CACHE_OPTIONS": {"socket_timout": 1},
            },
            "from PLOY_CACHE_OPTIONS or the URL's query\\); did you mean 'socket_timeout'",
        ),
        ({"PLOY_STATE_ENGINE_OPTIONS": {"pool_sise": 3}}, "check PLOY_STATE_ENGINE_OPTIONS"),
        ({"PLOY_CACHE_URL": 6379}, "must be a URL str, not int"),
        ({"PLOY_STATE_URL": "mssql+pyodbc://u:p@h/db"}, "'mssql' database is not supported"),
        ({"PLOY_STATE_URL": "not a url"}, "state URL not a url"),
        ({"PLOY_STATE_URL": "mysql://root@127.0.0.1/test"}, "flask-ploy\\[mysql\\]"),
        ({"PLOY_STATE_BIND": "users"}, "PLOY_STATE_BIND'] is set, but FlaskPloy was not given db="),
    ],
)
def test_bad_settings(tmp_path: Path, config: dict[str, Any], match: str) -> None:
    with pytest.raises(PloyConfigError, match=match):
        make(tmp_path, **config)


def test_password_never_in_config_errors(tmp_path: Path) -> None:
    with pytest.raises(PloyConfigError) as info:
        make(tmp_path, PLOY_STATE_URL="mysql://root:hunter2@127.0.0.1/test")
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)


def test_defaults_are_set_on_app_config(tmp_path: Path) -> None:
    app = make(tmp_path)
    assert app.config["PLOY_CACHE_KEY_PREFIX"] == "ploy"
    assert app.config["PLOY_CACHE_ON_ERROR"] == "miss"
    assert app.config["PLOY_MAX_KEY_BYTES"] == 512
    assert app.config["PLOY_MAX_VALUE_BYTES"] == 25 * 1024 * 1024
    assert app.config["PLOY_STATE_TABLE"] == "ploy_state"


def test_default_state_file_in_instance_folder(tmp_path: Path) -> None:
    app = make(tmp_path)
    assert not (tmp_path / "instance" / "ploy-state.sqlite3").exists()  # nothing connects at init
    with app.app_context():
        g.env.STATE.set("k", "v")
    assert (tmp_path / "instance" / "ploy-state.sqlite3").exists()


def test_relative_sqlite_url_goes_in_instance_folder(tmp_path: Path) -> None:
    app = make(tmp_path, PLOY_STATE_URL="sqlite:///rel.db")
    with app.app_context():
        g.env.STATE.set("k", "v")
    assert (tmp_path / "instance" / "rel.db").exists()


def test_per_resource_urls(tmp_path: Path) -> None:
    app = Flask("cfgtest", root_path=str(tmp_path), instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        PLOY_BINDINGS={"state": {"STATE": "default", "USER_STATE": "users"}},
        PLOY_STATE_RESOURCES={"users": f"sqlite:///{tmp_path}/users.db"},
    )
    ext = FlaskPloy(app)
    with app.app_context():
        g.env.USER_STATE.set("u", "1")
        g.env.STATE.set("s", "1")
    assert (tmp_path / "users.db").exists()
    assert ext.state_store("USER_STATE", app) is not ext.state_store("STATE", app)


# -- settings that are never silently ignored ------------------------------------------

REDIS_NOWHERE = "redis://:env-secret@127.0.0.1:6399/3"  # never connected: nothing connects at init


def warnings_of(caplog: pytest.LogCaptureFixture, app: Flask) -> list[str]:
    """The flask_ploy warnings FlaskPloy(app) logs."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flask_ploy"):
        FlaskPloy(app)
    found = [r.getMessage() for r in caplog.records if r.name == "flask_ploy"]
    assert all("env-secret" not in m for m in found), "a warning showed a value"
    return found


def bare_app(tmp_path: Path) -> Flask:
    app = Flask("cfgtest", root_path=str(tmp_path), instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, PLOY_BINDINGS={"cache": {"CACHE": "default"}})
    return app


def cache_url_of(app: Flask) -> str:
    return app.extensions["ploy"].app_bindings(app).caches["CACHE"].backend.display_url


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No PLOY_* or FLASK_* variable of the developer's shell."""
    for key in list(os.environ):
        if key.upper().startswith(("PLOY_", "FLASK_")):
            monkeypatch.delenv(key)
    return monkeypatch


def test_a_ploy_variable_is_not_read_and_says_so(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's case: ``PLOY_CACHE_URL=redis://... flask ploy config``
    showed memory:// without a word."""
    clean_env.setenv("PLOY_CACHE_URL", REDIS_NOWHERE)
    app = bare_app(tmp_path)
    found = warnings_of(caplog, app)
    assert cache_url_of(app).endswith("/ploy-cache.sqlite3")  # the default, not the variable
    assert found == [
        "flask-ploy: environment variable PLOY_CACHE_URL has no effect: flask-ploy"
        " reads its settings from app.config, not from PLOY_* variables. Name it"
        " FLASK_PLOY_CACHE_URL and call app.config.from_prefixed_env() before FlaskPloy(app)"
    ]


def test_the_flask_form_is_read_without_a_warning(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("FLASK_PLOY_CACHE_URL", REDIS_NOWHERE)
    clean_env.setenv("FLASK_PLOY_CACHE_COOLDOWN", "2.5")  # JSON: a float
    clean_env.setenv("FLASK_PLOY_CACHE_OPTIONS__socket_timeout", "0.25")  # one nested item
    clean_env.setenv("PLOY_TEST_TAG", "x")  # not a setting: the platform's or the user's own
    clean_env.setenv("PLOY_PROJECT_ID", "x")
    app = bare_app(tmp_path)
    app.config.from_prefixed_env()
    assert warnings_of(caplog, app) == []
    assert cache_url_of(app) == "redis://:***@127.0.0.1:6399/3"
    settings = app.extensions["ploy"].app_bindings(app).settings
    assert settings.cache_cooldown == 2.5
    assert settings.cache_options == {"socket_timeout": 0.25}


def test_an_app_that_reads_ploy_variables_itself_gets_no_warning(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("PLOY_CACHE_URL", REDIS_NOWHERE)
    clean_env.setenv("PLOY_CACHE_MAX_ENTRIES", "500")
    app = bare_app(tmp_path)
    app.config["PLOY_CACHE_URL"] = os.environ["PLOY_CACHE_URL"]
    app.config["PLOY_CACHE_MAX_ENTRIES"] = int(os.environ["PLOY_CACHE_MAX_ENTRIES"])
    assert warnings_of(caplog, app) == []


@pytest.mark.parametrize(
    ("env", "config", "expected"),
    [
        # FLASK_PLOY_* set, but the app never called from_prefixed_env().
        (
            {"FLASK_PLOY_STATE_URL": "sqlite:///x.db"},
            {},
            "environment variable FLASK_PLOY_STATE_URL has no effect: app.config['PLOY_STATE_URL']"
            " does not hold its value. Call app.config.from_prefixed_env() before FlaskPloy(app),"
            " and do not set PLOY_STATE_URL after it",
        ),
        # The app set the key itself after reading the environment.
        (
            {"FLASK_PLOY_CACHE_URL": REDIS_NOWHERE},
            {"from_env": True, "PLOY_CACHE_URL": "memory://"},
            "environment variable FLASK_PLOY_CACHE_URL has no effect",
        ),
        (
            {"FLASK_PLOY_CACHE_OPTIONS__socket_timeout": "1"},
            {},
            "FLASK_PLOY_CACHE_OPTIONS__socket_timeout has no effect:"
            " app.config['PLOY_CACHE_OPTIONS']",
        ),
        # Typos.
        (
            {"PLOY_CACHE_URI": REDIS_NOWHERE},
            {},
            "environment variable PLOY_CACHE_URI has no effect: it names no flask-ploy setting;"
            " did you mean FLASK_PLOY_CACHE_URL?",
        ),
        (
            {"FLASK_PLOY_STATEURL": "sqlite://"},
            {},
            "FLASK_PLOY_STATEURL has no effect: it names no flask-ploy setting;"
            " did you mean FLASK_PLOY_STATE_URL?",
        ),
        (
            {"FLASK_PLOY_CACHE_URI": REDIS_NOWHERE},
            {"from_env": True},
            "app.config['PLOY_CACHE_URI'] (from the variable FLASK_PLOY_CACHE_URI) is not a"
            " flask-ploy setting and has no effect; did you mean PLOY_CACHE_URL?",
        ),
        (
            {"flask_ploy_cache_url": REDIS_NOWHERE},
            {"from_env": True},
            "environment variable flask_ploy_cache_url has no effect: variable names are"
            " case-sensitive; did you mean FLASK_PLOY_CACHE_URL?",
        ),
        (
            {"Ploy_Cache_Url": REDIS_NOWHERE},
            {},
            "environment variable Ploy_Cache_Url has no effect: flask-ploy reads its settings"
            " from app.config",
        ),
        (
            {},
            {"PLOY_CACHE_KEYPREFIX": "app"},
            "app.config['PLOY_CACHE_KEYPREFIX'] is not a flask-ploy setting and has no effect;"
            " did you mean PLOY_CACHE_KEY_PREFIX?",
        ),
        (
            {},
            {"PLOY_REDIS": "redis://"},
            "app.config['PLOY_REDIS'] is not a flask-ploy setting and has no effect",
        ),
    ],
)
def test_settings_that_have_no_effect_are_named(
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    env: dict[str, str],
    config: dict[str, Any],
    expected: str,
) -> None:
    for key, value in env.items():
        clean_env.setenv(key, value)
    app = bare_app(tmp_path)
    config = dict(config)
    if config.pop("from_env", False):
        app.config.from_prefixed_env()
    app.config.update(config)
    found = warnings_of(caplog, app)
    assert len(found) == 1, found
    assert expected in found[0]


def test_each_warning_once_per_app(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("PLOY_STATE_URL", "sqlite://")
    app = bare_app(tmp_path)
    assert len(warnings_of(caplog, app)) == 1
    with caplog.at_level(logging.WARNING, logger="flask_ploy"):
        caplog.clear()
        client = app.test_client()
        for _ in range(3):
            client.get("/")
        with app.app_context():
            g.env.CACHE.set("k", "v")
    assert [r for r in caplog.records if r.name == "flask_ploy"] == []


@pytest.mark.parametrize(
    ("url", "key", "hint"),
    [
        (
            "postgres://app:s3cret@db.example.com:5432/app",
            "PLOY_STATE_URL",
            "SQLAlchemy does not accept the postgres:// spelling (Heroku's and other hosts'"
            " DATABASE_URL); write postgresql+psycopg://app:***@db.example.com:5432/app",
        ),
        (
            "postgresql://app:s3cret@db.example.com/app",
            "PLOY_STATE_URL",
            "postgresql:// uses the psycopg2 driver, which is not installed;"
            " write postgresql+psycopg://",
        ),
        (
            "mysql://root:s3cret@127.0.0.1/test",
            "PLOY_STATE_URL",
            "mysql:// uses the mysqlclient driver (MySQLdb), which is not installed;"
            " write mysql+pymysql:// (PyMySQL: pip install 'flask-ploy[mysql]')",
        ),
        (
            "mariadb://root:s3cret@127.0.0.1/test",
            "PLOY_STATE_RESOURCES['users']",
            "write mariadb+pymysql://",
        ),
    ],
)
def test_database_urls_from_hosts_get_the_url_to_write(
    tmp_path: Path, url: str, key: str, hint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for driver in ("psycopg2", "MySQLdb"):
        if driver in hint:  # the hint is for when the driver is not installed
            monkeypatch.setitem(sys.modules, driver, None)  # as if it were not
    app = Flask("cfgtest", root_path=str(tmp_path), instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True, PLOY_BINDINGS={"state": {"STATE": "default", "USER_STATE": "users"}}
    )
    if key == "PLOY_STATE_URL":
        app.config["PLOY_STATE_URL"] = url
    else:
        app.config["PLOY_STATE_RESOURCES"] = {"users": url}
    with pytest.raises(PloyConfigError) as info:
        FlaskPloy(app)
    msg = str(info.value)
    assert msg.startswith(f"app.config[{key!r}] = ")
    assert hint in msg
    assert "s3cret" not in msg


def test_ploy_yaml_in_the_working_directory_gets_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``flask --app hello.app run`` from the project folder: ploy.yaml is in
    the working directory, the app's root path is the package folder."""
    (tmp_path / "ploy.yaml").write_text(SEED_YAML)
    package = tmp_path / "hello"
    package.mkdir()
    monkeypatch.chdir(tmp_path)
    app = Flask("hello", root_path=str(package))
    with pytest.raises(PloyConfigError) as info:
        FlaskPloy(app)
    msg = str(info.value)
    assert msg.startswith(f"{package / 'ploy.yaml'}: ploy.yaml not found.")
    assert f"There is one in the working directory, {tmp_path / 'ploy.yaml'}" in msg
    assert f"app.root_path ({package})" in msg
    assert f"app.config['PLOY_CONFIG'] = '{tmp_path / 'ploy.yaml'}'" in msg

    app = Flask("hello", root_path=str(package))
    app.config["PLOY_CONFIG"] = "ploy.yaml"
    with pytest.raises(PloyConfigError, match="A relative PLOY_CONFIG is resolved against"):
        FlaskPloy(app)

    # Nothing in the working directory either: no hint.
    monkeypatch.chdir(package)
    app = Flask("hello", root_path=str(package))
    with pytest.raises(PloyConfigError) as info:
        FlaskPloy(app)
    assert str(info.value).endswith("app.config['PLOY_BINDINGS']")


def test_unknown_binding_says_did_you_mean(tmp_path: Path) -> None:
    app = make(tmp_path)
    with app.app_context():
        with pytest.raises(UnknownBinding) as info:
            g.env.STAET  # noqa: B018
        assert str(info.value) == (
            "g.env has no binding 'STAET'; did you mean STATE? The bindings in"
            " app.config['PLOY_BINDINGS'] are: CACHE, STATE"
        )
        with pytest.raises(UnknownBinding, match="'cache'; did you mean CACHE\\\\?"):
            g.env.cache  # noqa: B018
        with pytest.raises(UnknownBinding, match="^g.env has no binding 'QUEUE'; the bindings"):
            g.env.QUEUE  # noqa: B018
        assert isinstance(info.value, AttributeError)
        assert hasattr(g.env, "STATE") and not hasattr(g.env, "STAET")
        assert getattr(g.env, "STAET", None) is None


def test_hasattr_on_g_env_stays_cheap(tmp_path: Path) -> None:
    """A miss costs the same with 300 bindings as with 1: the "did you mean"
    search runs only when the message is shown."""

    def miss_cost(n: int) -> float:
        app = Flask("cfgtest", root_path=str(tmp_path), instance_path=str(tmp_path / "i"))
        names = {f"CACHE_{i}": "default" for i in range(n)}
        app.config.update(TESTING=True, PLOY_BINDINGS={"cache": names})
        FlaskPloy(app)
        with app.app_context():
            env = g.env
            return min(timeit.repeat(lambda: hasattr(env, "CACHE_X"), number=2000, repeat=7))

    one, many = miss_cost(1), miss_cost(300)
    assert many < 2 * one, (one, many)


def test_every_page_tells_the_same_settings_story() -> None:
    """No page, example or help text teaches a ``PLOY_*`` environment
    variable (flask-ploy does not read them); the pages that explain
    settings say how they are read."""
    from .test_docs import DOCS, PAGES, ROOT, SHELL, markdown_blocks, rst_blocks

    assignment = re.compile(r"(?<![A-Za-z0-9_])(PLOY_[A-Z0-9_]+)=")

    def wrong(line: str) -> bool:  # PLOY_TEST_TAG=... and the like are not settings
        return any(name in DEFAULTS for name in assignment.findall(line))

    found = []
    pages = [(ROOT / "README.md", markdown_blocks), *((p, rst_blocks) for p in PAGES)]
    for path, blocks in pages:
        for block in blocks(path.read_text(encoding="utf-8")):
            if block.lang in SHELL:
                found += [(path.name, line) for line in block.code.splitlines() if wrong(line)]
    for path in (ROOT / "Makefile", ROOT / "example_app" / "__init__.py"):
        text = path.read_text(encoding="utf-8")
        found += [(path.name, line) for line in text.splitlines() if wrong(line)]
    assert found == []
    for path in (
        ROOT / "README.md",
        *(DOCS / p for p in ("quickstart.rst", "config.rst", "deployment.rst")),
    ):
        text = path.read_text(encoding="utf-8")
        assert "from_prefixed_env()" in text and "FLASK_PLOY_" in text, path.name


def test_a_number_from_the_environment_where_a_str_belongs(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """``FLASK_PLOY_CACHE_KEY_PREFIX=2024`` arrives as the int 2024 (JSON)."""
    clean_env.setenv("FLASK_PLOY_CACHE_KEY_PREFIX", "2024")
    app = bare_app(tmp_path)
    app.config.from_prefixed_env()
    with pytest.raises(PloyConfigError) as info:
        FlaskPloy(app)
    assert str(info.value) == (
        "app.config['PLOY_CACHE_KEY_PREFIX'] must be a non-empty str without ':'"
        " (flask-ploy adds the separator), got 2024 (FLASK_PLOY_CACHE_KEY_PREFIX in the"
        " environment was read as JSON by app.config.from_prefixed_env(); write a string"
        " in double quotes inside single ones, FLASK_PLOY_CACHE_KEY_PREFIX='\"...\"')"
    )
    clean_env.setenv("FLASK_PLOY_CACHE_KEY_PREFIX", '"2024"')
    app = bare_app(tmp_path)
    app.config.from_prefixed_env()
    FlaskPloy(app)
    assert app.config["PLOY_CACHE_KEY_PREFIX"] == "2024"


def test_merge_keys_follow_yaml() -> None:
    """``<<: *defaults`` then an override is how YAML users share settings;
    it was refused as a duplicate key. A key given twice by hand still is."""
    from flask_ploy.config import parse_yaml

    doc = parse_yaml(
        "a: &a {x: 1, y: 1}\nb: &b {x: 2, z: 2}\none: {<<: *a, x: 9}\nboth: {<<: [*a, *b]}\n",
        "ploy.yaml",
    )
    assert doc["one"] == {"x": 9, "y": 1}  # the mapping's own key wins
    assert doc["both"] == {"x": 1, "y": 1, "z": 2}  # the first merged mapping wins
    with pytest.raises(PloyConfigError, match="line 1: invalid YAML: duplicate key 'x'"):
        parse_yaml("one: {<<: {x: 1}, x: 2, x: 3}\n", "ploy.yaml")


@pytest.mark.parametrize(
    "config",
    [
        {"PLOY_CACHE_URL": "redis://127.0.0.1:6379/0?socket_timout=1"},
        {"PLOY_CACHE_URL": "redis://127.0.0.1:6379/0", "PLOY_CACHE_OPTIONS": {"socket_timout": 1}},
    ],
)
def test_a_misspelt_redis_option_stops_the_app(tmp_path: Path, config: dict[str, Any]) -> None:
    """It passed init_app, then every cache operation raised TypeError (a 500)."""
    with pytest.raises(PloyConfigError, match="socket_timout"):
        make(tmp_path, **config)


def test_a_binding_without_a_resource_says_so(tmp_path: Path) -> None:
    (tmp_path / "ploy.yaml").write_text("cache:\n  CACHE:\n")
    with pytest.raises(PloyConfigError, match="line 2: cache.CACHE has no resource name"):
        make(tmp_path, PLOY_BINDINGS=None)
