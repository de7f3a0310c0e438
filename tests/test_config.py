"""ploy.yaml loading and PLOY_* settings: one test per rule."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, g

from flask_ploy import FlaskPloy, PloyConfigError, PloyError
from flask_ploy.config import load_bindings


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


@pytest.mark.parametrize(
    "resource", ["Default", "my-cache", "1cache", "_x", "", "null", "5", "[a]"]
)
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


def test_no_bindings_is_allowed(tmp_path: Path) -> None:
    app = app_with_file(tmp_path, "kind: static\n")
    with app.app_context():
        assert dir(g.env) == []


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
