"""The ``PLOY_*`` settings of an app: their defaults, their checks, and
warnings for what looks meant for flask-ploy but has no effect.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._validate import check_ttl
from ..errors import PloyConfigError
from .bindings import Bindings, did_you_mean
from .yamlfile import short

#: Every ``PLOY_*`` setting and its default, set on ``app.config`` by
#: :meth:`~flask_ploy.FlaskPloy.init_app`. Documented in docs/config.rst.
DEFAULTS: dict[str, Any] = {
    "PLOY_CONFIG": None,
    "PLOY_BINDINGS": None,
    "PLOY_CACHE_URL": None,
    "PLOY_CACHE_RESOURCES": {},
    "PLOY_CACHE_OPTIONS": {},
    "PLOY_CACHE_KEY_PREFIX": "ploy",
    "PLOY_CACHE_ON_ERROR": "miss",
    "PLOY_CACHE_MAX_ENTRIES": 10_000,
    "PLOY_CACHE_MAX_BYTES": 64 * 1024 * 1024,
    "PLOY_CACHE_COOLDOWN": 1.0,
    "PLOY_CACHE_DEFAULT_TTL": None,
    "PLOY_STATE_URL": None,
    "PLOY_STATE_RESOURCES": {},
    "PLOY_STATE_ENGINE_OPTIONS": {},
    "PLOY_STATE_BIND": None,
    "PLOY_STATE_TABLE": "ploy_state",
    "PLOY_STATE_SQLITE_SYNCHRONOUS": "NORMAL",
    "PLOY_STATE_SQLITE_WAL_LIMIT": 64 * 1024 * 1024,
    "PLOY_STATE_BUSY_TIMEOUT": 10.0,
    "PLOY_STATE_POOL_TIMEOUT": 10.0,
    "PLOY_MAX_KEY_BYTES": 512,
    "PLOY_MAX_VALUE_BYTES": 25 * 1024 * 1024,
    "PLOY_METRICS": False,
    "PLOY_TRACING": False,
    "PLOY_TRACING_KEYS": False,
    "PLOY_RECORD_OPS": None,
}

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

_MISSING = object()


def _from_env(raw: str) -> Any:
    """A variable's value as ``app.config.from_prefixed_env()`` reads it."""
    try:
        return json.loads(raw)
    except Exception:  # as Flask does: anything that is not JSON stays a str
        return raw


def _holds(config: Mapping[str, Any], key: str, nested: str, raw: str) -> bool:
    """Whether ``config[key]`` (or its ``a__b`` item) holds the variable's value."""
    current: Any = config.get(key, _MISSING)
    for part in nested.split("__") if nested else ():
        current = current.get(part, _MISSING) if isinstance(current, Mapping) else _MISSING
    if current is _MISSING:
        return False
    try:
        return bool(current == raw or current == _from_env(raw))
    except Exception:  # an object with a strange __eq__ in the config
        return False


def settings_warnings(config: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    """What in *config* and *environ* looks meant for flask-ploy but has no effect.

    flask-ploy reads its settings only from ``app.config``; the environment
    reaches it through ``app.config.from_prefixed_env()`` as ``FLASK_PLOY_*``.
    Warned about, never with a value (it may be a password):

    - a ``PLOY_*`` key in *config* that is no setting (a typo);
    - a ``PLOY_<SETTING>`` variable whose value the app did not take;
    - a ``PLOY_*`` variable that misspells a setting (other ``PLOY_*``
      variables are left alone: they may be the platform's);
    - a ``FLASK_PLOY_*`` variable whose value is not in *config* (the app
      did not call ``from_prefixed_env()``, or set the key after it), or
      that names no setting.
    """
    warnings: list[str] = []
    suffixes = [k[len("PLOY_") :] for k in DEFAULTS]

    def close(name: str, cutoff: float) -> str | None:
        found = did_you_mean(name[len("PLOY_") :], suffixes, cutoff)
        return f"PLOY_{found}" if found else None

    for key in sorted(k for k in config if isinstance(k, str)):
        if key.startswith("PLOY_") and key not in DEFAULTS:
            guess = close(key, 0.75)
            origin = f" (from the variable FLASK_{key})" if f"FLASK_{key}" in environ else ""
            warnings.append(
                f"app.config[{key!r}]{origin} is not a flask-ploy setting and has"
                f" no effect{f'; did you mean {guess}?' if guess else ''}"
            )
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith("FLASK_PLOY_"):
            head, sep, nested = name[len("FLASK_") :].partition("__")
            key = head.upper()
            exact = name.startswith("FLASK_") and head == key
            if key not in DEFAULTS:
                if exact and key in config:
                    continue  # reported above, as a key of app.config
                guess = close(key, 0.75)
                warnings.append(
                    f"environment variable {name} has no effect: it names no"
                    f" flask-ploy setting{f'; did you mean FLASK_{guess}?' if guess else ''}"
                )
            elif not exact:
                warnings.append(
                    f"environment variable {name} has no effect: variable names"
                    f" are case-sensitive; did you mean FLASK_{key}{sep}{nested}?"
                )
            elif not _holds(config, key, nested, environ[name]):
                warnings.append(
                    f"environment variable {name} has no effect: app.config[{key!r}]"
                    " does not hold its value. Call app.config.from_prefixed_env()"
                    f" before FlaskPloy(app), and do not set {key} after it"
                )
        elif upper.startswith("PLOY_"):
            head, sep, nested = name.partition("__")
            key = head.upper()
            if key in DEFAULTS:
                if head == key and _holds(config, key, nested, environ[name]):
                    continue  # the app read it itself
                warnings.append(
                    f"environment variable {name} has no effect: flask-ploy reads"
                    " its settings from app.config, not from PLOY_* variables. Name"
                    f" it FLASK_{key}{sep}{nested} and call"
                    " app.config.from_prefixed_env() before FlaskPloy(app)"
                )
                continue
            guess = close(key, 0.8)
            if guess is not None:
                warnings.append(
                    f"environment variable {name} has no effect: it names no"
                    f" flask-ploy setting; did you mean FLASK_{guess}?"
                )
    return warnings


@dataclass(frozen=True)
class Settings:
    """The checked ``PLOY_*`` settings of one app (URLs still unresolved).

    The URLs, per-resource URLs and client options may hold passwords, so
    they are left out of the repr.
    """

    cache_url: Any = field(repr=False)
    cache_resources: dict[str, Any] = field(repr=False)
    cache_options: dict[str, Any] = field(repr=False)
    cache_key_prefix: str
    cache_on_error: str
    cache_max_entries: int
    cache_max_bytes: int
    cache_cooldown: float
    cache_default_ttl: int | None
    state_url: str | None = field(repr=False)
    state_resources: dict[str, str] = field(repr=False)
    state_engine_options: dict[str, Any] = field(repr=False)
    state_bind: str | None
    state_table: str
    state_sqlite_synchronous: str
    state_sqlite_wal_limit: int
    state_busy_timeout: float
    state_pool_timeout: float
    max_key_bytes: int
    max_value_bytes: int
    metrics: bool = False
    tracing: bool = False
    tracing_keys: bool = False
    record_ops: bool | None = None


def _flag(config: Mapping[str, Any], key: str, allow_none: bool = False) -> Any:
    """A ``True``/``False`` setting (``None`` too when *allow_none*)."""
    value = config.get(key, DEFAULTS[key])
    if isinstance(value, bool) or (allow_none and value is None):
        return value
    also = " or None" if allow_none else ""
    raise PloyConfigError(
        f"app.config[{key!r}] must be True or False{also}, not {short(value)}"
        + (
            f" (FLASK_{key} in the environment must be JSON: true or false)"
            if f"FLASK_{key}" in os.environ
            else ""
        )
    )


def _number(config: Mapping[str, Any], key: str, minimum: float, integer: bool) -> Any:
    value = config[key]
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise PloyConfigError(
            f"app.config[{key!r}] must be {'an int' if integer else 'a number'},"
            f" not {type(value).__name__}"
        )
    if value < minimum:
        raise PloyConfigError(f"app.config[{key!r}] must be at least {minimum:g}, got {value}")
    return value


def _mapping(config: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key) or {}
    if not isinstance(value, Mapping):
        raise PloyConfigError(f"app.config[{key!r}] must be a dict, not {type(value).__name__}")
    return dict(value)


def _json_note(key: str, value: Any) -> str:
    """Why a str setting may have arrived as a number: ``from_prefixed_env()``."""
    name = f"FLASK_{key}"
    if isinstance(value, str) or name not in os.environ:
        return ""
    return (
        f" ({name} in the environment was read as JSON by"
        f" app.config.from_prefixed_env(); write a string in double quotes inside"
        f" single ones, {name}='\"...\"')"
    )


def read_settings(config: Mapping[str, Any], bindings: Bindings) -> Settings:
    """Check the ``PLOY_*`` settings against each other and the bindings.

    :raises PloyConfigError: A setting has the wrong type or value, or a
        per-resource URL names a resource no binding uses.
    """
    on_error = config["PLOY_CACHE_ON_ERROR"]
    if on_error not in ("miss", "raise"):
        raise PloyConfigError(
            f"app.config['PLOY_CACHE_ON_ERROR'] must be 'miss' or 'raise', got {on_error!r}"
        )
    prefix = config["PLOY_CACHE_KEY_PREFIX"]
    if not isinstance(prefix, str) or not prefix or ":" in prefix:
        raise PloyConfigError(
            "app.config['PLOY_CACHE_KEY_PREFIX'] must be a non-empty str without"
            f" ':' (flask-ploy adds the separator), got {short(prefix)}"
            + _json_note("PLOY_CACHE_KEY_PREFIX", prefix)
        )
    max_key = _number(config, "PLOY_MAX_KEY_BYTES", 1, True)
    if max_key > 512:
        raise PloyConfigError(
            "app.config['PLOY_MAX_KEY_BYTES'] must be at most 512 (the state"
            f" table's key column holds 512 bytes), got {max_key}"
        )
    sync = str(config["PLOY_STATE_SQLITE_SYNCHRONOUS"]).upper()
    if sync not in _SYNCHRONOUS:
        raise PloyConfigError(
            "app.config['PLOY_STATE_SQLITE_SYNCHRONOUS'] must be one of"
            f" {', '.join(_SYNCHRONOUS)}, got {config['PLOY_STATE_SQLITE_SYNCHRONOUS']!r}"
        )
    table = config["PLOY_STATE_TABLE"]
    if not isinstance(table, str) or not re.match(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z", table):
        raise PloyConfigError(
            "app.config['PLOY_STATE_TABLE'] must be a SQL identifier such as"
            f" ploy_state, got {short(table)}" + _json_note("PLOY_STATE_TABLE", table)
        )
    resources: dict[str, dict[str, Any]] = {}
    for kind, key in (("cache", "PLOY_CACHE_RESOURCES"), ("state", "PLOY_STATE_RESOURCES")):
        resources[kind] = _mapping(config, key)
        used = sorted({b.resource for b in bindings.of_kind(kind)})
        for name in resources[kind]:
            if name not in used:
                raise PloyConfigError(
                    f"app.config[{key!r}] names resource {name!r}, which no {kind}"
                    f" binding in {bindings.source} uses; its {kind} resources are"
                    f" {', '.join(used) or '(none)'}"
                )
    for key in ("PLOY_CACHE_URL", "PLOY_STATE_URL"):
        url = config.get(key)
        if url is not None and not isinstance(url, str):
            raise PloyConfigError(
                f"app.config[{key!r}] must be a URL str, not {type(url).__name__}"
                + _json_note(key, url)
            )
    bind = config.get("PLOY_STATE_BIND")
    default_ttl = config.get("PLOY_CACHE_DEFAULT_TTL")
    try:
        default_ttl = check_ttl(default_ttl)
    except (TypeError, ValueError) as exc:
        raise PloyConfigError(
            f"app.config['PLOY_CACHE_DEFAULT_TTL']: {exc}"
            + _json_note("PLOY_CACHE_DEFAULT_TTL", default_ttl)
        ) from None
    return Settings(
        cache_url=config.get("PLOY_CACHE_URL"),
        cache_resources=resources["cache"],
        cache_options=_mapping(config, "PLOY_CACHE_OPTIONS"),
        cache_key_prefix=prefix,
        cache_on_error=on_error,
        cache_max_entries=_number(config, "PLOY_CACHE_MAX_ENTRIES", 1, True),
        cache_max_bytes=_number(config, "PLOY_CACHE_MAX_BYTES", 1, True),
        cache_cooldown=float(_number(config, "PLOY_CACHE_COOLDOWN", 0, False)),
        cache_default_ttl=default_ttl,
        state_url=config.get("PLOY_STATE_URL"),
        state_resources=resources["state"],
        state_engine_options=_mapping(config, "PLOY_STATE_ENGINE_OPTIONS"),
        state_bind=bind,
        state_table=table,
        state_sqlite_synchronous=sync,
        state_sqlite_wal_limit=_number(config, "PLOY_STATE_SQLITE_WAL_LIMIT", 1024 * 1024, True),
        state_busy_timeout=float(_number(config, "PLOY_STATE_BUSY_TIMEOUT", 0.001, False)),
        state_pool_timeout=float(_number(config, "PLOY_STATE_POOL_TIMEOUT", 0, False)),
        max_key_bytes=max_key,
        max_value_bytes=_number(config, "PLOY_MAX_VALUE_BYTES", 1, True),
        metrics=_flag(config, "PLOY_METRICS"),
        tracing=_flag(config, "PLOY_TRACING"),
        tracing_keys=_flag(config, "PLOY_TRACING_KEYS"),
        record_ops=_flag(config, "PLOY_RECORD_OPS", allow_none=True),
    )
